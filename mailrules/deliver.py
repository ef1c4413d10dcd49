"""``mailrules deliver``: the MDA. One message on stdin, through the rules, into a Maildir.

The whole config is loaded before anything is written. Any failure before the message
is safely on disk (a config error, a rule that cannot be evaluated, a full disk) exits
75 (EX_TEMPFAIL): the MTA keeps its copy and tries again later. ``run`` actions start
only after delivery; their failures are logged but do not fail the delivery, since a
retry would deliver the message twice. Notifications are queued with the state record
and sent right after it, within a short time budget; what is not sent by then waits in
the outbox for the next ``mailrules run --once`` or ``mailrules notify``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from mailrules import failpoints
from mailrules.config.load import Config
from mailrules.errors import ConfigError, ConfigProblem, MailrulesError
from mailrules.executor import Item, execute
from mailrules.message import MessageView
from mailrules.rules.conditions import EvalContext
from mailrules.rules.engine import decide
from mailrules.sources.base import MessageRef
from mailrules.sources.incoming import Incoming
from mailrules.state import AuditRow, Seen, State

log = logging.getLogger(__name__)
EX_OK, EX_CANTCREAT, EX_TEMPFAIL = 0, 73, 75
NOTIFY_BUDGET = 10.0  # seconds the MTA waits for notifications after delivery
RUN_BUDGET = 60.0  # seconds for all `run` commands after delivery, each within its timeout


def deliver(
    config: Config, data: bytes, account_name: str | None, open_state: Callable[[], State | None]
) -> int:
    if account_name is None:
        if len(config.accounts) != 1:
            raise ConfigError(
                [
                    ConfigProblem(
                        config.path,
                        1,
                        1,
                        "several accounts: say which one to deliver into with --account NAME",
                    )
                ]
            )
        account_name = next(iter(config.accounts))
    account = config.accounts.get(account_name)
    if account is None:
        raise ConfigError([ConfigProblem(config.path, 1, 1, f"no account named {account_name!r}")])
    now = datetime.now(UTC)
    view = MessageView.from_bytes(data, name="stdin", arrived=now)
    box = account.mailbox()
    box = getattr(box, "local", box)  # a POP3 account delivers into its deliver_to Maildir
    incoming = Incoming(box, data)
    ctx = EvalContext(now=now, account=account.name, folder="INBOX")
    try:
        decision = decide(view, config.rules, ctx, box.clean_component)
    except MailrulesError as exc:
        log.error("deliver: cannot evaluate the rules: %s; the MTA will retry", exc)
        return EX_TEMPFAIL
    ref = MessageRef("INBOX", "incoming")
    mailbox_steps = [s for s in decision.steps if s.action.needs_location]
    later_steps = [s for s in decision.steps if not s.action.needs_location]
    item = Item(ref, view, mailbox_steps)
    try:
        execute(incoming, [item])
        if item.failed:
            errors = "; ".join(r for _, r in item.results if r)
            if item.permanent:  # a retry would fail the same way: say so to the MTA
                log.error("deliver: %s; the MTA will return the message", errors)
                return EX_CANTCREAT
            log.error("deliver: %s; the MTA will retry", errors)
            return EX_TEMPFAIL
        incoming.finish()
    except (OSError, MailrulesError) as exc:
        log.error("deliver: cannot write the message: %s; the MTA will retry", exc)
        return EX_TEMPFAIL
    # The MTA kills an MDA that takes too long and delivers again later: every command
    # after delivery shares one budget, well below any MTA's limit (Postfix: 1000 s).
    after = Item(ref, view, later_steps, deadline=time.monotonic() + RUN_BUDGET)
    execute(incoming, [after])
    for step, result in after.results:
        if result:
            log.error(
                "deliver: rule %r: %s failed after delivery: %s", step.rule, step.describe(), result
            )
    _record(account.name, view, incoming, item.results + after.results, open_state, after, config)
    where = ", ".join(folder for folder, _ in incoming.delivered) or "nowhere (expunged)"
    log.info("deliver: %s -> %s", view.message_id or "(no Message-ID)", where)
    return EX_OK


def _record(
    account: str,
    view: MessageView,
    incoming: Incoming,
    results: list,
    open_state: Callable[[], State | None],
    after: Item | None = None,
    config: Config | None = None,
) -> None:
    """Best effort: the message is delivered; a state problem must not make the MTA retry."""
    sender = ", ".join(a.address for a in view.addresses("from"))
    audit = [
        AuditRow(
            account,
            "INBOX",
            "incoming",
            view.message_id,
            sender,
            view.subject,
            step.rule,
            step.describe(),
            "ok" if r is None else "failed",
            r,
        )
        for step, r in results
    ]
    seen: dict[str, list[Seen]] = {}
    for folder, unique in incoming.delivered:
        seen.setdefault(folder, []).append(Seen(unique, view.message_id))
    folder, unique = incoming.delivered[0] if incoming.delivered else ("INBOX", "")
    notes = after.outbox if after else []
    # Expunged messages have no file name: the Message-ID (or the content) names them.
    uid = unique or f"expunged:{view.message_id or _digest(view.raw())}"
    outbox = [n.row(account, folder, "maildir", uid) for n in notes]
    try:
        state = open_state()
        if state is None:
            return
        try:
            state.commit(account, "maildir", seen, {}, audit, outbox=outbox)
            if outbox and config is not None:
                failpoints.reached()  # queued, not sent
                _send(config, state)
        finally:
            state.close()
    except MailrulesError as exc:
        log.warning("deliver: delivered, but the state database was not updated: %s", exc)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _send(config: Config, state: State) -> None:
    """Send what is due now, briefly; a failure waits in the outbox, never fails delivery."""
    from mailrules.notify.outbox import dispatch

    try:
        dispatch(state, config.notifiers, NOTIFY_BUDGET)
    except Exception:  # the message is delivered; notifications must not change that
        log.exception("deliver: delivered; notifications stay queued")

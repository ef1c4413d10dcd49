"""One pass over an account's folders: list, find new mail, decide, act, record.

For each watched folder: the listing is compared with the uids in the state store
(no message is read for that), new messages are read header-only (bodies only if a
rule needs them), the engine decides, the executor acts in batches, and one state
transaction per batch records what was done. A message is marked seen only when all
its actions succeeded, so a failure is retried on the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailrules import failpoints
from mailrules.config.load import Account, Config
from mailrules.errors import RuleError, SourceError, StateError
from mailrules.executor import Item, execute
from mailrules.message import MessageView
from mailrules.rules.conditions import EvalContext
from mailrules.rules.engine import Decision, Rule, decide
from mailrules.sources.base import Mailbox, MessageRef
from mailrules.state import AuditRow, Seen, State

log = logging.getLogger(__name__)
action_log = logging.getLogger("mailrules.actions")
BATCH = 500


@dataclass(frozen=True)
class Event:
    """One line of a run's report: what happened (or would) to one message."""

    account: str
    folder: str
    uid: str
    sender: str
    subject: str
    rule: str
    action: str
    result: str  # "ok", "planned", or the error


@dataclass
class Report:
    events: list[Event] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    new: int = 0
    failed_actions: int = 0
    failed_accounts: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.failed_accounts:
            return 3
        return 1 if self.failed_actions else 0


@dataclass
class RunOptions:
    dry_run: bool = False
    process_all: bool = False
    now: datetime | None = None
    on_event: Callable[[Event], None] | None = None


def run_once(
    config: Config, state: State | None, options: RunOptions, accounts: list[str] | None = None
) -> Report:
    """Process every (selected) account once. ``state`` may be None only for dry runs."""
    report = Report()
    for name, account in config.accounts.items():
        if accounts and name not in accounts:
            continue
        box = account.mailbox()
        try:
            for folder in account.settings.folders:
                FolderRun(account, folder, box, state, config.rules, options, report).run()
        except (SourceError, StateError) as exc:
            log.error("account %s: %s", name, exc)
            report.failed_accounts.append(name)
            report.notes.append(f"account {name}: {exc}")
        finally:
            box.close()
    return report


def sort_key(uid: str) -> tuple[int, str]:
    """Maildir names start with the delivery time; IMAP uids are numbers."""
    head = uid.split(".", 1)[0]
    return (int(head) if head.isdigit() else 0, uid)


@dataclass
class FolderRun:
    account: Account
    folder: str
    box: Mailbox
    state: State | None
    rules: list[Rule]
    options: RunOptions
    report: Report

    def run(self) -> None:
        listing = self.box.list_folder(self.folder)
        name, folder = self.account.name, self.folder
        known = self.state.folder_validity(name, folder) if self.state else None
        first = known != listing.validity
        if first and not (self.options.process_all or self.account.settings.existing == "process"):
            self.report.notes.append(
                f"{name}/{folder}: first run, {len(listing.refs)} messages already there "
                "recorded as seen, none acted on (use --all or existing: process to apply rules)"
            )
            if not self.options.dry_run and self.state:
                self.state.baseline(name, folder, listing.validity, listing.refs)
            return
        if first or self.options.process_all or self.state is None:
            new = list(listing.refs)
            if first and not self.options.dry_run and self.state:
                self.state.baseline(name, folder, listing.validity, ())
        else:
            seen = self.state.seen_uids(name, folder, listing.validity)
            new = [uid for uid in listing.refs if uid not in seen]
            self._forget_vanished(seen, set(listing.refs), listing.validity)
        new.sort(key=sort_key)
        self.report.new += len(new)
        if new:
            log.info("%s/%s: %d new of %d", name, folder, len(new), len(listing.refs))
        rules = [r for r in self.rules if r.applies_to(name, folder)]
        needs = frozenset().union(*(r.needs for r in rules)) if rules else frozenset()
        for start in range(0, len(new), BATCH):
            refs = [listing.refs[uid] for uid in new[start : start + BATCH]]
            self._batch(refs, rules, needs, listing.validity)

    def _forget_vanished(self, seen: set[str], present: set[str], validity: str) -> None:
        gone = seen - present
        if not gone or self.options.dry_run or self.state is None:
            return
        # A listing can miss a file that another program renames at that moment: forget
        # only what a second listing confirms is gone.
        gone -= set(self.box.list_folder(self.folder).refs)
        if gone:
            self.state.commit(self.account.name, validity, {}, {self.folder: sorted(gone)}, [])

    def _batch(
        self, refs: list[MessageRef], rules: list[Rule], needs: frozenset[str], validity: str
    ) -> None:
        now = self.options.now or datetime.now(UTC)
        items: list[Item] = []
        unplanned: list[tuple[MessageRef, MessageView]] = []
        for ref, view in self.box.views(refs, needs):
            ctx = EvalContext(now=now, account=self.account.name, folder=self.folder)
            try:
                decision = decide(view, rules, ctx, self.box.clean_component)
            except RuleError as exc:
                self._event(ref, view, "", "evaluate rules", str(exc))
                self.report.failed_actions += 1
                continue
            except Exception as exc:  # one bad message must not stop the rest
                log.exception(
                    "%s/%s: %s: cannot evaluate rules", self.account.name, self.folder, view.name
                )
                self._event(ref, view, "", "evaluate rules", f"internal error: {exc}")
                self.report.failed_actions += 1
                continue
            if view.defects:
                log.warning(
                    "%s/%s: %s is malformed (%s); rules saw what could be decoded",
                    self.account.name,
                    self.folder,
                    view.name,
                    "; ".join(view.defects[:3]),
                )
            if decision.steps:
                items.append(Item(ref, view, decision.steps))
            else:
                unplanned.append((ref, view))
        if self.options.dry_run:
            for item in items:
                for step in item.steps:
                    self._event(item.ref, item.view, step.rule, step.describe(), "planned")
            return
        execute(self.box, items)
        self._record(items, unplanned, validity)

    def _record(
        self, items: list[Item], unplanned: list[tuple[MessageRef, MessageView]], validity: str
    ) -> None:
        name = self.account.name
        watched = set(self.account.settings.folders)
        seen: dict[str, list[Seen]] = {self.folder: []}
        forget: dict[str, list[str]] = {self.folder: []}
        audit: list[AuditRow] = []
        outbox = [
            n.row(name, self.folder, validity, item.ref.uid) for item in items for n in item.outbox
        ]
        for ref, view in unplanned:
            seen[self.folder].append(Seen(ref.uid, view.message_id))
        for item in items:
            view, ref = item.view, item.ref
            sender = ", ".join(a.address for a in view.addresses("from"))
            for step, result in item.results:
                outcome = "ok" if result is None else "failed"
                audit.append(
                    AuditRow(
                        name,
                        self.folder,
                        ref.uid,
                        view.message_id,
                        sender,
                        view.subject,
                        step.rule,
                        step.describe(),
                        outcome,
                        result,
                    )
                )
                self._event(ref, view, step.rule, step.describe(), result or "ok")
                if result is not None:
                    self.report.failed_actions += 1
            for step in item.steps[len(item.results) :]:
                self._event(
                    ref, view, step.rule, step.describe(), "skipped: an earlier step failed"
                )
            if not item.ok:
                continue
            relocated = any(s.action.relocates for s in item.steps)
            (forget if relocated else seen)[self.folder].append(
                ref.uid if relocated else Seen(ref.uid, view.message_id)  # type: ignore[arg-type]
            )
            for folder, uid in ref.arrived_in.items():
                if folder in watched and folder != self.folder:
                    seen.setdefault(folder, []).append(Seen(uid, view.message_id))
        self.state.commit(name, validity, seen, forget, audit, outbox=outbox)  # type: ignore[union-attr]
        if outbox:
            failpoints.reached()  # queued, not sent: the crash tests stop here too

    def _event(
        self, ref: MessageRef, view: MessageView, rule: str, action: str, result: str
    ) -> None:
        sender = ", ".join(a.address for a in view.addresses("from")) or "(no sender)"
        event = Event(
            self.account.name, self.folder, ref.uid, sender, view.subject, rule, action, result
        )
        self.report.events.append(event)
        level = logging.INFO if result in ("ok", "planned") else logging.ERROR
        action_log.log(
            level,
            "account=%s folder=%s rule=%r action=%r result=%r message_id=%s from=%s subject=%r",
            event.account,
            event.folder,
            rule,
            action,
            result,
            view.message_id or "-",
            sender,
            view.subject,
        )
        if self.options.on_event:
            self.options.on_event(event)


def explain_decision(
    view: MessageView, rules: list[Rule], account: str, folder: str, now: datetime | None = None
) -> Decision:
    ctx = EvalContext(now=now or datetime.now(UTC), account=account, folder=folder)
    return decide(view, rules, ctx)

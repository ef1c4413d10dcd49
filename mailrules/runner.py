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
from mailrules.rules.search import any_of, to_search
from mailrules.sources.base import Known, Mailbox, MessageRef
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
    acted: int = 0  # actions done (or, in a dry run, planned)
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
    should_stop: Callable[[], bool] | None = None
    """Checked between folders and between batches: the service's shutdown. Messages not
    yet reached stay unhandled and are processed by the next run."""

    def stopping(self) -> bool:
        return self.should_stop is not None and self.should_stop()


def run_once(
    config: Config, state: State | None, options: RunOptions, accounts: list[str] | None = None
) -> Report:
    """Process every (selected) account once. ``state`` may be None only for dry runs."""
    report = Report()
    for name, account in config.accounts.items():
        if accounts and name not in accounts:
            continue
        box = account.mailbox()
        bind_state = getattr(box, "bind_state", None)  # POP3 remembers what it fetched
        if bind_state is not None:
            bind_state(state, options.dry_run, config)
        try:
            run_account(account, box, state, config.rules, options, report)
            remember_poll = getattr(box, "remember_poll", None)  # IMAP: for the quick poll
            if remember_poll is not None and state is not None and not options.dry_run:
                remember_poll(state, config.path, list(config.accounts), account.settings.folders)
        except (SourceError, StateError) as exc:
            log.error("account %s: %s", name, exc)
            report.failed_accounts.append(name)
            report.notes.append(f"account {name}: {exc}")
        finally:
            box.close()
    return report


def run_account(
    account: Account,
    box: Mailbox,
    state: State | None,
    rules: list[Rule],
    options: RunOptions,
    report: Report,
    folders: list[str] | None = None,
) -> None:
    """Process the account's watched folders (or just ``folders``) on an open mailbox.

    Raise SourceError or StateError if the account cannot be read; the folders done
    before that keep what they recorded.
    """
    for folder in account.settings.folders if folders is None else folders:
        if options.stopping():
            return
        FolderRun(account, folder, box, state, rules, options, report).run()


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
        name, folder = self.account.name, self.folder
        info = self.state.folder_info(name, folder) if self.state else None
        known = Known()
        if info is not None and self.state is not None:
            state = self.state
            known = Known(
                validity=info.validity,
                last_uid=info.last_uid,
                polled_at=info.polled_at,
                seen=lambda validity: state.seen_uids(name, folder, validity),
                seen_message_ids=lambda: state.seen_message_ids(name, folder),
            )
        process_existing = self.account.settings.existing == "process"
        rules = [r for r in self.rules if r.applies_to(name, folder)]
        full_pass = self.options.process_all or (process_existing and info is None)
        scan = self.box.scan(
            folder,
            known,
            process_all=self.options.process_all,
            process_existing=process_existing,
            narrow=self._narrow(rules) if full_pass else None,
        )
        if scan.note:
            self.report.notes.append(f"{name}/{scan.note}")
        writing = not self.options.dry_run and self.state is not None
        if writing and scan.first:
            first_cursor = scan.cursor if not scan.refs else None
            self.state.baseline(name, folder, scan.validity, scan.baseline, first_cursor)
        if writing and scan.forget:
            self.state.commit(name, scan.validity, {}, {folder: scan.forget}, [])
        self.report.new += len(scan.refs)
        if scan.refs:
            log.info("%s/%s: %d to process", name, folder, len(scan.refs))
        needs = frozenset().union(*(r.needs for r in rules)) if rules else frozenset()
        lowest_failed: int | None = None
        batch = getattr(self.box, "batch_size", BATCH)
        for start in range(0, len(scan.refs), batch):
            refs = scan.refs[start : start + batch]
            if self.options.stopping():
                # Not reached: the cursor stays below them, so the next run does them.
                left = [int(r.uid) for r in scan.refs[start:] if r.uid.isdigit()]
                if lowest_failed is not None:
                    left.append(lowest_failed)
                lowest_failed = min(left, default=None)
                log.info("%s/%s: stopping; %d left for later", name, folder, len(scan.refs) - start)
                break
            for uid in self._batch(refs, rules, needs, scan.validity):
                if uid.isdigit():
                    lowest_failed = min(int(uid), lowest_failed or int(uid))
        if writing and scan.cursor is not None:
            done_to = scan.cursor if lowest_failed is None else lowest_failed - 1
            if known.last_uid is not None and not scan.first:
                done_to = max(done_to, known.last_uid)
            self.state.set_cursor(name, folder, scan.validity, done_to)

    def _narrow(self, rules: list[Rule]) -> list[object] | None:
        """SEARCH criteria that every message some rule could act on matches, if any."""
        now = self.options.now or datetime.now(UTC)
        parts = []
        for rule in rules:
            found = to_search(rule.condition, now) if rule.condition else None
            if found is None:
                return None
            parts.append(found)
        return any_of(parts).criteria if parts else None

    def _batch(
        self, refs: list[MessageRef], rules: list[Rule], needs: frozenset[str], validity: str
    ) -> list[str]:
        """Decide and act on one batch; return the uids that failed (to be retried)."""
        now = self.options.now or datetime.now(UTC)
        failed: list[str] = []
        items: list[Item] = []
        unplanned: list[tuple[MessageRef, MessageView]] = []
        for ref, view in self.box.views(refs, needs):
            ctx = EvalContext(now=now, account=self.account.name, folder=self.folder)
            try:
                decision = decide(view, rules, ctx, self.box.clean_component)
            except RuleError as exc:
                self._event(ref, view, "", "evaluate rules", str(exc))
                self.report.failed_actions += 1
                failed.append(ref.uid)
                continue
            except Exception as exc:  # one bad message must not stop the rest
                log.exception(
                    "%s/%s: %s: cannot evaluate rules", self.account.name, self.folder, view.name
                )
                self._event(ref, view, "", "evaluate rules", f"internal error: {exc}")
                self.report.failed_actions += 1
                failed.append(ref.uid)
                continue
            if view.fields is not None and view.defects:  # parsing headers may find some
                log.warning(
                    "%s/%s: %s is malformed (%s); rules saw what could be decoded",
                    self.account.name,
                    self.folder,
                    view.name,
                    "; ".join(view.defects[:3]),
                )
            view.compact()
            if decision.steps:
                items.append(Item(ref, view, decision.steps))
            else:
                unplanned.append((ref, view))
        if self.options.dry_run:
            for item in items:
                for step in item.steps:
                    self._event(item.ref, item.view, step.rule, step.describe(), "planned")
            return failed
        execute(self.box, items)
        settle = getattr(self.box, "settle", None)  # POP3: deliver what no rule placed
        if settle is not None:
            settle(items, unplanned)
        self._record(items, unplanned, validity)
        return failed + [item.ref.uid for item in items if not item.ok]

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
            for folder, (uid, dest_validity) in ref.arrived_in.items():
                if folder in watched and folder != self.folder:
                    seen.setdefault(folder, []).append(Seen(uid, view.message_id, dest_validity))
        self.state.commit(name, validity, seen, forget, audit, outbox=outbox)  # type: ignore[union-attr]
        for item in items:  # recorded: where copies went is needed no longer
            item.ref.arrived_in.clear()
        if outbox:
            failpoints.reached()  # queued, not sent: the crash tests stop here too

    def _event(
        self, ref: MessageRef, view: MessageView, rule: str, action: str, result: str
    ) -> None:
        sender = ", ".join(a.address for a in view.addresses("from")) or "(no sender)"
        event = Event(
            self.account.name, self.folder, ref.uid, sender, view.subject, rule, action, result
        )
        if result in ("ok", "planned"):
            self.report.acted += 1
        level = logging.INFO if result in ("ok", "planned") else logging.ERROR
        action_log.log(
            level,
            "account=%s folder=%s uid=%s rule=%r action=%r result=%r message_id=%s from=%s "
            "subject=%r",
            event.account,
            event.folder,
            ref.uid,
            rule,
            action,
            result,
            view.message_id or "-",
            sender,
            view.subject,
            extra={"context": {"account": event.account, "folder": event.folder, "uid": ref.uid}},
        )
        if self.options.on_event:
            self.options.on_event(event)


def explain_decision(
    view: MessageView, rules: list[Rule], account: str, folder: str, now: datetime | None = None
) -> Decision:
    ctx = EvalContext(now=now or datetime.now(UTC), account=account, folder=folder, explain=True)
    return decide(view, rules, ctx)

"""One pass over an account's folders: list, find new mail, decide, act, record.

For each watched folder: the listing is compared with the uids in the state store
(no message is read for that), new messages are read header-only (bodies only if a
rule needs them), the engine decides, the executor acts in batches, and one state
transaction per batch records what was done. A message is marked seen only when all
its actions succeeded, so a failure is retried on the next run.

A pass of several batches on IMAP acts on one batch over a second connection while the
next is read and decided (``_Acting``): the rules' time hides behind the server's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailrules import failpoints
from mailrules.config.load import Account, Config
from mailrules.errors import RuleError, SourceError, StateError
from mailrules.executor import Item, execute
from mailrules.message import MessageView, Summary
from mailrules.rules.conditions import EvalContext
from mailrules.rules.engine import Decision, Rule, Step, decide
from mailrules.rules.search import any_of, to_search
from mailrules.sources.base import Known, Mailbox, MessageRef, Scan
from mailrules.state import AuditRow, Seen, State, audit_key, message_key

log = logging.getLogger(__name__)
action_log = logging.getLogger("mailrules.actions")
BATCH = 500
READ_ACTION = "read message"  # the audit's name for a message the server could not send
READ_ATTEMPTS = 3  # runs that try such a message before it is left alone


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
    baselines: list[tuple[str, int | None]] = field(default_factory=list)
    """Folders seen for the first time, whose mail was recorded as seen without acting:
    ("account/folder", how many messages, when the source knows)."""

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


@dataclass
class Decided:
    """One batch after the rules decided: what to act on, what no rule wanted, what failed."""

    items: list[Item] = field(default_factory=list)
    unplanned: list[tuple[MessageRef, Summary]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class _Acting:
    """Runs decided batches' actions, then ``finish`` (settle and record) on each.

    Once ``start_worker`` ran (a full pass, or many new messages) a mailbox that offers
    ``actor()`` (IMAP: a second connection to the account) acts in a worker thread while
    the next batches are read and decided here, so a full pass costs about the server's
    time for the actions instead of that plus the rules' time. Whatever was decided
    while the worker was busy goes in its next round at once (up to ``action_batch``
    messages; deciding waits beyond that): each destination's share is one UID set, and
    on Dovecot every MOVE or EXPUNGE command costs in proportion to the folder's size, so
    few large rounds beat many small ones.

    A round is recorded only after its actions returned, as without the worker; so a
    crash or a dropped connection leaves each message where the last finished action
    put it, as ever. Without a worker each batch is acted on and recorded at once.
    """

    def __init__(self, box: Mailbox, finish: Callable[[Decided], list[str]]) -> None:
        self.box = box
        self.finish = finish
        self.limit = getattr(box, "action_batch", BATCH)
        self.actor: Mailbox | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._unavailable: Exception | None = None  # why the second connection failed
        self._pending: tuple[Future[Exception | None], Decided] | None = None
        self._waiting = Decided()
        self._failed: list[str] = []

    def start_worker(self, folder: str) -> None:
        """Open the second connection (if the mailbox offers one) and select ``folder``
        on it, in the worker; what is added from now on is acted on there. The box's own
        connection is made first, so a server that allows one refuses the second."""
        make = getattr(self.box, "actor", None)
        if make is None or self.actor is not None:
            return
        self.box.open()  # type: ignore[attr-defined]
        self.actor = make()
        self._pool = ThreadPoolExecutor(1, "mailrules-act")
        self._pool.submit(self._connect, folder)

    def _connect(self, folder: str) -> None:
        try:
            self.actor.open(folder)  # type: ignore[union-attr]
        except Exception as exc:  # whatever it was, the first connection can still act
            self._unavailable = exc

    def add(self, decided: Decided) -> None:
        """Act on ``decided`` now, or as soon as the worker is free."""
        self._waiting.items += decided.items
        self._waiting.unplanned += decided.unplanned
        waiting = len(self._waiting.items) + len(self._waiting.unplanned)
        if self._pending is not None:
            if not self._pending[0].done() and waiting < self.limit:
                return
            self._collect()
        self._submit()

    def _submit(self) -> None:
        decided, self._waiting = self._waiting, Decided()
        if self._pool is None or self.actor is None:  # no worker, or it gave up: act here
            self._act_here(decided)
            return
        self.actor.adopt([(item.ref, item.view) for item in decided.items])  # type: ignore[attr-defined]
        self._pending = (self._pool.submit(self._act, decided.items), decided)

    def _act(self, items: list[Item]) -> Exception | None:
        """In the worker: act through the actor, if it could connect."""
        if self._unavailable is not None:
            return self._unavailable
        assert self.actor is not None
        execute(self.actor, items)  # failures go into the items; it does not raise
        return None

    def _collect(self) -> None:
        if self._pending is None:
            return
        future, decided = self._pending
        self._pending = None
        unavailable = future.result()
        if unavailable is not None:
            # A server may allow one connection per account: act on this one instead.
            log.warning("a second connection for actions failed (%s); acting on the first "
                        "connection, one batch after another", unavailable)  # fmt: skip
            self._stop_worker()
            self.box.adopt([(item.ref, item.view) for item in decided.items])  # type: ignore[attr-defined]
            self._act_here(decided)
        else:
            self._failed.extend(self.finish(decided))

    def _act_here(self, decided: Decided) -> None:
        execute(self.box, decided.items)
        self._failed.extend(self.finish(decided))

    def wait(self) -> list[str]:
        """Act on everything decided so far and record it; every failed uid so far."""
        self._collect()
        if self._waiting.items or self._waiting.unplanned:
            self._submit()
            self._collect()
        return self._failed

    def drop_waiting(self) -> list[str]:
        """Decided, not yet acted on: left for the next run (the service is stopping)."""
        waiting, self._waiting = self._waiting, Decided()
        return [i.ref.uid for i in waiting.items] + [ref.uid for ref, _ in waiting.unplanned]

    def close(self) -> None:
        """Finish the round under way (after an error too: what was done is recorded)."""
        try:
            self._collect()
        finally:
            self._stop_worker()

    def _stop_worker(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self.actor is not None:
            self.actor.close()
            self.actor = None


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
    validity: str = ""  # the folder's, once scanned
    # uid -> message_key of a decided message without a Message-ID, until it is recorded
    _keys: dict[str, str] = field(default_factory=dict)
    _first_contact: bool = False  # the state knew nothing of the folder
    # (uid, Message-ID, "copy -> F") of every copy the audit log says succeeded, once needed
    _copied: set[tuple[str, str, str]] | None = None

    def run(self) -> None:
        name, folder = self.account.name, self.folder
        info = self.state.folder_info(name, folder) if self.state else None
        self._first_contact = info is None
        known = Known()
        if info is not None and self.state is not None:
            state = self.state
            known = Known(
                validity=info.validity,
                last_uid=info.last_uid,
                polled_at=info.polled_at,
                baseline_at=info.baseline_at,
                seen=lambda validity: state.seen_uids(name, folder, validity),
                seen_message_ids=lambda: state.seen_message_ids(name, folder),
                ignored_existing=lambda: state.ignored_existing(name, folder),
            )
        process_existing = self.account.settings.existing == "process"
        rules = [r for r in self.rules if r.applies_to(name, folder)]
        # A first pass over existing mail, or one that was stopped before it finished.
        unfinished = info is None or (info.last_uid is None and bool(info.validity))
        full_pass = self.options.process_all or (process_existing and unfinished)
        writing = not self.options.dry_run and self.state is not None
        acting = _Acting(self.box, self._finish)
        try:
            if full_pass and writing:
                acting.start_worker(folder)  # it connects while this box's connection searches
            scan = self.box.scan(
                folder,
                known,
                process_all=self.options.process_all,
                process_existing=process_existing,
                narrow=self._narrow(rules),  # a full pass, or a UIDVALIDITY reset, uses it
            )
            self.validity = scan.validity
            failed = self._process(scan, rules, writing, acting)
        finally:
            acting.close()  # after an error too: the round under way is finished and recorded
        if writing and scan.cursor is not None:
            done_to = scan.cursor if not failed else min(failed) - 1
            if known.last_uid is not None and not scan.first:
                done_to = max(done_to, known.last_uid)
            self.state.set_cursor(name, folder, scan.validity, done_to)  # type: ignore[union-attr]

    def _process(self, scan: Scan, rules: list[Rule], writing: bool, acting: _Acting) -> list[int]:
        """Record the scan's baseline, decide and act on its messages; the failed uids."""
        name, folder = self.account.name, self.folder
        if scan.note:
            self.report.notes.append(f"{name}/{scan.note}")
        if writing and scan.first:
            if scan.note:  # a baseline that acts on nothing (existing: skip)
                count = len(scan.baseline) if scan.baseline or scan.cursor is None else None
                self.report.baselines.append((f"{name}/{folder}", count))
            first_cursor = scan.cursor if not scan.refs else None
            # IMAP keeps no rows for the mail it leaves alone (its cursor says it): a reset
            # must still know that it was left alone.
            left_alone = (
                getattr(self.box, "marks_mail_left_alone", False)
                and self._first_contact
                and bool(scan.note)
                and not scan.refs
            )
            self.state.baseline(  # type: ignore[union-attr]
                name, folder, scan.validity, scan.baseline, first_cursor, left_alone=left_alone
            )
        if writing and scan.forget:
            self.state.commit(name, scan.validity, {}, {folder: scan.forget}, [])  # type: ignore[union-attr]
        self.report.new += len(scan.refs)
        if scan.refs:
            log.info("%s/%s: %d to process", name, folder, len(scan.refs))
        needs = frozenset().union(*(r.needs for r in rules)) if rules else frozenset()
        failed: list[int] = []
        batch = failpoints.batch_size(getattr(self.box, "batch_size", BATCH))
        batches = [scan.refs[i : i + batch] for i in range(0, len(scan.refs), batch)]
        if len(batches) > 1 and writing:
            acting.start_worker(folder)
        for n, refs in enumerate(batches):
            if self.options.stopping():
                # Not reached: the cursor stays below them, so the next run does them.
                left = [r.uid for b in batches[n:] for r in b] + acting.drop_waiting()
                failed.extend(int(u) for u in left if u.isdigit())
                log.info("%s/%s: stopping; %d left for later", name, folder, len(left))
                break
            decided = self._decide(refs, rules, needs)
            failed.extend(int(u) for u in decided.failed if u.isdigit())
            if self.options.dry_run:
                self._plan(decided)
                continue
            acting.add(decided)
        failed.extend(int(u) for u in acting.wait() if u.isdigit())
        return failed

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

    def _not_copied_before(
        self, ref: MessageRef, view: MessageView, steps: list[Step]
    ) -> list[Step]:
        """The steps without the copies this message already got (a second ``--all``, or a
        pass resumed after a crash): a copy is a new message on most servers, so repeating
        it would add a duplicate on every run. Known by UID and Message-ID together, so a
        UID that a UIDVALIDITY reset gave to another message is not mistaken for it."""
        if self.state is None or not view.message_id or self.box.repeated_copy_is_harmless:
            return steps
        if not any(step.action.name == "copy" for step in steps):
            return steps
        if self._copied is None:
            self._copied = self.state.copies_done(self.account.name, self.folder)
        return [
            step
            for step in steps
            if step.action.name != "copy"
            or audit_key(ref.uid, view.message_id, step.describe()) not in self._copied
        ]

    def _decide(self, refs: list[MessageRef], rules: list[Rule], needs: frozenset[str]) -> Decided:
        """Read a batch's views and let the rules decide on each."""
        now = self.options.now or datetime.now(UTC)
        decided = Decided()
        for ref, view in self.box.views(refs, needs):
            ctx = EvalContext(now=now, account=self.account.name, folder=self.folder)
            try:
                decision = decide(view, rules, ctx, self.box.clean_component)
            except RuleError as exc:
                self._event(ref, view, "", "evaluate rules", str(exc))
                self.report.failed_actions += 1
                decided.failed.append(ref.uid)
                continue
            except Exception as exc:  # one bad message must not stop the rest
                log.exception(
                    "%s/%s: %s: cannot evaluate rules", self.account.name, self.folder, view.name
                )
                self._event(ref, view, "", "evaluate rules", f"internal error: {exc}")
                self.report.failed_actions += 1
                decided.failed.append(ref.uid)
                continue
            if view.fields is not None and view.defects:  # parsing headers may find some
                log.warning(
                    "%s/%s: %s is malformed (%s); rules saw what could be decoded",
                    self.account.name,
                    self.folder,
                    view.name,
                    "; ".join(view.defects[:3]),
                )
            steps = self._not_copied_before(ref, view, decision.steps)
            if steps and not view.message_id:
                self._keys[ref.uid] = message_key(view)  # what a UIDVALIDITY reset knows it by
            if any(step.action.reads_message for step in steps):
                view.compact()
                decided.items.append(Item(ref, view, steps))
            elif steps:
                decided.items.append(Item(ref, view.summary(), steps))
            else:
                decided.unplanned.append((ref, view.summary()))
        unreadable: list[tuple[str, str, str]] = getattr(self.box, "unreadable", [])
        while unreadable:
            _folder, uid, reason = unreadable.pop(0)
            self._unreadable(uid, reason, decided)
        return decided

    def _unreadable(self, uid: str, reason: str, decided: Decided) -> None:
        """A message the server could not send (the mailbox skipped it, saying why).

        It counts as failed and stays for later runs (the cursor stays below it), up to
        READ_ATTEMPTS runs in all, counted in the audit log; then it is recorded as
        handled and left alone where it is, so that it cannot hold the folder back."""
        name, folder = self.account.name, self.folder
        self.report.failed_actions += 1
        attempts = 1
        if not self.options.dry_run and self.state is not None:
            attempts += self.state.failures(name, folder, uid, READ_ACTION)
            row = AuditRow(name, folder, uid, "", "", "", "", READ_ACTION, "failed", reason)
            seen = {folder: [Seen(uid)]} if attempts >= READ_ATTEMPTS else {}
            self.state.commit(name, self.validity, seen, {}, [row])
        if attempts >= READ_ATTEMPTS:
            log.error(
                "%s/%s: UID %s could not be read in %d runs; left alone where it is from now "
                "on (%s)", name, folder, uid, attempts, reason,
            )  # fmt: skip
        else:
            decided.failed.append(uid)

    def _plan(self, decided: Decided) -> None:
        for item in decided.items:
            for step in item.steps:
                self._event(item.ref, item.view, step.rule, step.describe(), "planned")

    def _finish(self, decided: Decided) -> list[str]:
        """After a batch's actions: settle, record; the uids that failed (to be retried)."""
        items, unplanned = decided.items, decided.unplanned
        settle = getattr(self.box, "settle", None)  # POP3: deliver what no rule placed
        if settle is not None:
            settle(items, unplanned)
        self._record(items, unplanned, self.validity)
        return [item.ref.uid for item in items if not item.ok and not item.permanent]

    def _record(
        self, items: list[Item], unplanned: list[tuple[MessageRef, Summary]], validity: str
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
            if not item.ok and not item.permanent:
                continue  # tried again on the next run
            relocated = any(s.action.relocates and r is None for s, r in item.results)
            key = self._keys.pop(ref.uid, view.message_id)
            (forget if relocated else seen)[self.folder].append(
                ref.uid if relocated else Seen(ref.uid, key)  # type: ignore[arg-type]
            )
            for folder, (uid, dest_validity) in ref.arrived_in.items():
                if folder in watched and folder != self.folder:
                    seen.setdefault(folder, []).append(Seen(uid, key, dest_validity))
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
        # A failure is an error in the log, unless the caller shows every event itself
        # (run --once prints it on stdout): then it would be said twice; -v logs it.
        failed = result not in ("ok", "planned")
        level = logging.ERROR if failed and self.options.on_event is None else logging.INFO
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
    view: MessageView,
    rules: list[Rule],
    account: str,
    folder: str,
    now: datetime | None = None,
    clean_folder: Callable[[str], str] | None = None,
) -> Decision:
    """What the rules decide for ``view``. Give the account's ``clean_component`` as
    ``clean_folder``: rendered folder names are then exactly the ones a run would use."""
    ctx = EvalContext(now=now or datetime.now(UTC), account=account, folder=folder, explain=True)
    if clean_folder is None:
        return decide(view, rules, ctx)
    return decide(view, rules, ctx, clean_folder)

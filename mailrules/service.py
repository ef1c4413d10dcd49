"""The long-running service (``mailrules run`` without ``--once``): schedules, IDLE, signals.

Threads and what each may touch:

* **The scheduler** (APScheduler 3, ``BackgroundScheduler``, in-memory jobs rebuilt from
  the config) fires one job per account on its schedule (``every`` or crontab; first run
  at start-up, jitter, missed runs coalesced, ``misfire_grace_time=None`` so a busy pool
  delays a poll rather than dropping it), the periodic jobs in ``PERIODIC_JOBS``, and a
  heartbeat for the systemd watchdog. Its pool has a thread per account and job plus two.
* **IDLE watchers** (``mailrules.watch``): one thread and one IMAP connection per watched
  folder of a ``push: idle`` account. New mail makes the watcher ask for a run of that
  folder, which it then does itself, on its own thread.
* **The main thread** waits for signals: SIGTERM/SIGINT stop, SIGHUP reloads the config,
  and it sends ``WATCHDOG=1`` only while the heartbeat job keeps running.

An account is processed by one thread at a time, whoever asked (schedule, retry, IDLE
watcher): a request sets the account's *pending* folders and, unless a run is already
going on, makes the asking thread the runner, which loops until nothing is pending. So
no request is lost, and no two runs of one account overlap. Each run opens its own
SQLite connection (connections must stay in their thread) and keeps the account's
mailbox connection for the next run if that comes soon (``REUSE_WITHIN``).

Failures stay with their account: a run that cannot reach the server is retried after an
exponential backoff with jitter (15 s doubling to 15 min), and the log says what failed
and when the next try is. The others keep their schedules.

Stopping: no run starts after SIGTERM; runs in progress stop between batches (the
current batch finishes and is recorded) and get ``STOP_GRACE`` seconds; after that the
process exits anyway, leaving unrecorded messages for the next start (at least once,
never lost).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from mailrules import log as logsetup
from mailrules import systemd
from mailrules.config.load import Account, Config, load_config
from mailrules.errors import ConfigError, SourceError, StateError
from mailrules.runner import Report, RunOptions, run_account
from mailrules.schedule import backoff
from mailrules.sources.base import Mailbox
from mailrules.sources.imap import ImapMailbox
from mailrules.state import ServiceStatus, State
from mailrules.watch import FolderWatcher

log = logging.getLogger(__name__)
logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every job run at INFO

STOP_GRACE = 20.0  # seconds runs in progress get after SIGTERM (systemd waits 30)
REUSE_WITHIN = 240.0  # keep an account's connection for a run that comes this soon
RETRY_BASE, RETRY_CAP = 15.0, 900.0  # an account that failed: 15 s, 30 s, ... 15 min


@dataclass(frozen=True)
class JobContext:
    """What a periodic job gets: the current config, a State for this run, the stop flag."""

    config: Config
    state: State
    stopping: threading.Event


@dataclass(frozen=True)
class PeriodicJob:
    """A job the service runs every ``every`` seconds besides polling accounts.

    ``run`` gets a JobContext; it should return within a few seconds, checking
    ``stopping`` if it loops. An exception is logged and shown by ``mailrules status``;
    the job runs again at its next time (keep retries in the state store, not in here).
    ``describe``, if given, adds a line to ``mailrules status`` (for example an outbox's
    depth); it gets a State and runs in the ``status`` command's process.
    ``after_new_mail``: also run right after any account run that found new mail (a
    notification dispatcher, so that a notice goes out seconds after the mail came).
    ``wanted``: whether the (current) config needs the job at all; when it does not,
    the job's turns cost nothing, not even opening the state.
    """

    name: str
    every: float
    run: Callable[[JobContext], None]
    describe: Callable[[State], str] | None = None
    after_new_mail: bool = False
    wanted: Callable[[Config], bool] | None = None


OUTBOX_EVERY = 15.0  # seconds between sends of due notifications
OUTBOX_BUDGET = 10.0  # seconds one send may take, so a stop is never held up long


def _send_outbox(ctx: JobContext) -> None:
    """Send the notifications that are due; retries and backoff live in the outbox."""
    if ctx.stopping.is_set():
        return
    from mailrules.notify.outbox import dispatch

    report = dispatch(ctx.state, ctx.config.notifiers, OUTBOX_BUDGET)
    if report.sent or report.retrying or report.dead or report.digests:
        log.info("notifications: %s", report.summary())


def _outbox_depth(state: State) -> str:
    """For ``mailrules status``: how many notifications wait, and how many were given up."""
    try:
        counts = dict(state.db.execute("SELECT state, count(*) FROM outbox GROUP BY state"))
    except sqlite3.Error:  # a state file from before the outbox existed
        counts = {}
    waiting = counts.get("pending", 0) + counts.get("held", 0)
    return f"outbox: {waiting} waiting, {counts.get('dead', 0)} given up"


PERIODIC_JOBS: list[PeriodicJob] = [
    PeriodicJob(
        "outbox",
        OUTBOX_EVERY,
        _send_outbox,
        _outbox_depth,
        after_new_mail=True,
        wanted=lambda config: bool(config.notifiers),
    )
]
"""Jobs every service runs besides polling: the notification outbox's dispatcher."""


class AccountRuntime:
    """One account inside the service: its settings, its connection, what is pending."""

    def __init__(self, account: Account, status: ServiceStatus) -> None:
        self.account = account
        self.status = status
        self.mutex = threading.Lock()
        self.running = False
        self.pending: set[str] = set()
        self.pending_all = False
        self.box: Mailbox | None = None
        self.box_used = 0.0
        self.stale = False  # settings changed: open a new connection next time

    @property
    def name(self) -> str:
        return self.account.name

    def close_box(self) -> None:
        if self.box is not None:
            with contextlib.suppress(Exception):
                self.box.close()
            self.box = None


class Service:
    """The service for one config file and one state directory (whose lock the caller holds)."""

    def __init__(
        self,
        config: Config,
        state_dir: Path,
        *,
        only: list[str] | None = None,
        periodic: list[PeriodicJob] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config.path
        self.state_path = state_dir / "state.sqlite3"
        self.only = only
        self.periodic = list(PERIODIC_JOBS if periodic is None else periodic)
        self.stopping = threading.Event()
        self.abandoned = False
        self.runtimes: dict[str, AccountRuntime] = {}
        self.watchers: dict[tuple[str, str], FolderWatcher] = {}
        self.job_status: dict[str, ServiceStatus] = {}
        self._retired: list[AccountRuntime] = []
        self._busy = threading.Condition()
        self._active = 0
        self._wake = threading.Event()
        self._signals: set[int] = set()
        self._beat = time.monotonic()
        self._watchdog = systemd.watchdog_interval()
        self._no_idle_logged: set[str] = set()
        self._history: dict[str, ServiceStatus] = {}
        accounts = len(self._accounts(config)) + len(self.periodic)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(accounts + 2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    # -- start, reload, stop ------------------------------------------------------------

    def start(self) -> None:
        """Schedule every account and job, start the IDLE watchers; return at once."""
        state = State(self.state_path)
        try:
            self._history = {s.name: s for s in state.service_status()}
        finally:
            state.close()
        self._apply(self.config)
        for job in self.periodic:
            self.job_status[job.name] = self._history.get(job.name) or ServiceStatus(
                job.name, "job", detail=f"every {job.every:g}s"
            )
            self.scheduler.add_job(
                self._run_periodic,
                IntervalTrigger(seconds=job.every),
                args=[job],
                id=f"job:{job.name}",
                next_run_time=datetime.now().astimezone(),
            )
        if self._watchdog:
            self.scheduler.add_job(
                self._heartbeat,
                IntervalTrigger(seconds=max(0.2, self._watchdog / 4)),
                id="heartbeat",
            )
        self.scheduler.start()
        self._save_status(keep=True)
        log.info(
            "service started (pid %d): %s; state in %s",
            os.getpid(),
            "; ".join(self._describe(rt) for rt in self.runtimes.values()),
            self.state_path.parent,
        )

    def _accounts(self, config: Config) -> dict[str, Account]:
        return {n: a for n, a in config.accounts.items() if not self.only or n in self.only}

    def _describe(self, rt: AccountRuntime) -> str:
        text = f"{rt.name}: {rt.account.schedule.describe()}"
        folders = [f for (a, f) in self.watchers if a == rt.name]
        return text + (f", IDLE on {', '.join(folders)}" if folders else "")

    def _apply(self, config: Config) -> None:
        """Make the runtimes, jobs and watchers match ``config``; every account runs now."""
        self.config = config
        wanted = self._accounts(config)
        now = datetime.now().astimezone()
        for name in list(self.runtimes):
            if name not in wanted:
                rt = self.runtimes.pop(name)
                self._retired.append(rt)
                for prefix in ("poll", "retry"):
                    with contextlib.suppress(Exception):
                        self.scheduler.remove_job(f"{prefix}:{name}")
                log.info("account %s is no longer in the config; stopped polling it", name)
        for name, account in wanted.items():
            rt = self.runtimes.get(name)
            if rt is None:
                status = self._history.get(name) or ServiceStatus(name, "account")
                rt = self.runtimes[name] = AccountRuntime(account, status)
            else:
                with rt.mutex:
                    rt.stale = rt.stale or rt.account.settings != account.settings
                    rt.account = account
            rt.status.detail = account.schedule.describe()
            self.scheduler.add_job(
                self._scheduled,
                account.schedule.trigger(),
                args=[name],
                id=f"poll:{name}",
                replace_existing=True,
                next_run_time=now,
            )
        idle = {
            (name, folder): account
            for name, account in wanted.items()
            if account.settings.push == "idle" and account.settings.imap is not None
            for folder in account.settings.folders
        }
        for key, watcher in list(self.watchers.items()):
            if key not in idle or idle[key].settings != watcher.account.settings:
                watcher.halt()
                del self.watchers[key]
        for key, account in idle.items():
            if key not in self.watchers:
                status = self._history.get(f"{key[0]}/{key[1]}") or ServiceStatus(
                    f"{key[0]}/{key[1]}", "idle"
                )
                self.watchers[key] = FolderWatcher(self, account, key[1], status)
                self.watchers[key].start()

    def reload(self) -> bool:
        """Re-read the config; on any problem keep the running one. True if it changed."""
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload: %s", problem)
            log.error(
                "reload: %d problem%s in %s; still running with the previous config",
                len(exc.problems),
                "s" * (len(exc.problems) != 1),
                self.config_path,
            )
            return False
        missing = [n for n in self.only or [] if n not in config.accounts]
        if missing:
            log.error(
                "reload: %s no longer has the account(s) %s named by --account; still running "
                "with the previous config",
                self.config_path,
                ", ".join(missing),
            )
            return False
        self._apply(config)
        self._save_status(keep=True)
        log.info(
            "reloaded %s: %d account%s, %d rule%s",
            self.config_path,
            len(self.runtimes),
            "s" * (len(self.runtimes) != 1),
            len(config.rules),
            "s" * (len(config.rules) != 1),
        )
        return True

    def stop(self) -> None:
        """Stop taking work, let runs in progress finish their batch, close connections."""
        self.stopping.set()
        for watcher in self.watchers.values():
            watcher.halt()
        if self.scheduler.running:
            self.scheduler.pause()
        deadline = time.monotonic() + STOP_GRACE
        with self._busy:
            while self._active and time.monotonic() < deadline:
                self._busy.wait(deadline - time.monotonic())
            busy = self._active
        if busy:
            self.abandoned = True
            log.error(
                "stopping: %d run%s still busy after %.0fs; leaving without them (what they "
                "had not recorded is processed again at the next start)",
                busy,
                "s" * (busy != 1),
                STOP_GRACE,
            )
        if self.scheduler.running:
            self.scheduler.shutdown(wait=not busy)
        for watcher in self.watchers.values():
            watcher.join(max(0.1, deadline - time.monotonic()))
        closers = [
            threading.Thread(target=rt.close_box, daemon=True)
            for rt in [*self.runtimes.values(), *self._retired]
            if not rt.running
        ]
        for thread in closers:
            thread.start()
        for thread in closers:
            thread.join(max(0.1, min(5.0, deadline + 5 - time.monotonic())))
        with contextlib.suppress(StateError):
            self._save_status()
        log.info("service stopped")

    # -- the main thread ------------------------------------------------------------------

    def serve(self) -> int:
        """Run until SIGTERM or SIGINT; reload on SIGHUP. Return the exit status (0)."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.start()
        systemd.ready(self.status_line())
        tick = self._watchdog / 2 if self._watchdog else 60.0
        warned = False
        while True:
            self._wake.wait(tick)
            self._wake.clear()
            signals, self._signals = self._signals, set()
            if signals & {signal.SIGTERM, signal.SIGINT}:
                name = "SIGTERM" if signal.SIGTERM in signals else "SIGINT"
                log.info("%s: stopping (runs in progress get %.0fs)", name, STOP_GRACE)
                break
            if signal.SIGHUP in signals:
                systemd.reloading(f"reloading {self.config_path}")
                self.reload()
                systemd.notify("READY=1", f"STATUS={self.status_line()}")
            if self._watchdog:
                if self.alive():
                    systemd.watchdog()
                    warned = False
                elif not warned:
                    log.error(
                        "the scheduler ran no job for %.0fs; not telling systemd's watchdog "
                        "that all is well",
                        time.monotonic() - self._beat,
                    )
                    warned = True
            systemd.status(self.status_line())
        systemd.stopping("stopping: finishing the current batches")
        self.stop()
        return 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.add(signum)
        self._wake.set()

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()

    def alive(self) -> bool:
        """The scheduler runs and its pool executed the heartbeat job recently."""
        limit = self._watchdog or 60.0
        return self.scheduler.running and time.monotonic() - self._beat < limit

    def status_line(self) -> str:
        failing = [rt.name for rt in self.runtimes.values() if rt.status.failures]
        idle = sum(1 for w in self.watchers.values() if w.connected)
        text = f"{len(self.runtimes)} account{'s' * (len(self.runtimes) != 1)}"
        if self.watchers:
            text += f", {idle}/{len(self.watchers)} folders in IDLE"
        return text + (f", failing: {', '.join(failing)}" if failing else "")

    # -- running accounts ---------------------------------------------------------------

    def _scheduled(self, name: str) -> None:
        self.request(name, None)

    def request(self, name: str, folder: str | None) -> None:
        """Ask for a run of an account (``folder`` None: all its folders).

        Runs it on the calling thread unless a run of the account is going on, which will
        then also do this request before it ends.
        """
        rt = self.claim(name, folder)
        if rt is not None:
            self.run_claimed(rt)

    def claim(self, name: str, folder: str | None) -> AccountRuntime | None:
        """Mark ``folder`` (None: all) pending; return the account's runtime if the caller
        is now its runner (and must call ``run_claimed``), None if a run is going on (it
        takes the request along) or the service is stopping."""
        rt = self.runtimes.get(name)
        if rt is None:
            return None
        with rt.mutex:
            log.debug("%s: run requested for %s", name, folder or "all folders")
            if folder is None:
                rt.pending_all = True
            else:
                rt.pending.add(folder)
            if rt.running or self.stopping.is_set():
                return None
            rt.running = True
            return rt

    def release(self, rt: AccountRuntime) -> None:
        """Give up a claim without running; what is pending waits for the next request."""
        with rt.mutex:
            rt.running = False

    def run_claimed(self, rt: AccountRuntime, own: tuple[str, Mailbox] | None = None) -> bool:
        """Run what is pending for a claimed account until nothing is; False if the last
        run failed. ``own``: (folder, mailbox) of an IDLE watcher, used for that folder."""
        with self._busy:
            self._active += 1
        try:
            self._drain(rt, own)
        finally:
            with self._busy:
                self._active -= 1
                self._busy.notify_all()
        return rt.status.failures == 0

    def _drain(self, rt: AccountRuntime, own: tuple[str, Mailbox] | None = None) -> None:
        try:
            while True:
                with rt.mutex:
                    if self.stopping.is_set() or not (rt.pending_all or rt.pending):
                        rt.running = False
                        return
                    account = rt.account
                    folders = None
                    if not rt.pending_all:
                        folders = [f for f in account.settings.folders if f in rt.pending]
                    rt.pending.clear()
                    rt.pending_all = False
                    if rt.stale:
                        rt.close_box()
                        rt.stale = False
                box = own[1] if own is not None and folders == [own[0]] else None
                self._run(rt, account, folders, box)
        except BaseException:
            with rt.mutex:
                rt.running = False
            raise

    def _run(
        self,
        rt: AccountRuntime,
        account: Account,
        folders: list[str] | None,
        box: Mailbox | None = None,
    ) -> None:
        """One run of the account's ``folders``, on ``box`` (a watcher's) or its own."""
        config = self.config
        started = time.time()
        error: str | None = None
        report = Report()
        options = RunOptions(should_stop=self.stopping.is_set)
        log.debug("%s: run starts (%s)", rt.name, ", ".join(folders or ["all folders"]))
        with logsetup.context(account=account.name):
            try:
                state = State(self.state_path)
            except StateError as exc:
                self._failed(rt, None, started, str(exc))
                return
            try:
                if box is not None:  # a watcher's: it reconnects by itself if this fails
                    _bind(box, state, config)
                    run_account(account, box, state, config.rules, options, report, folders)
                else:
                    self._run_on_account_box(rt, account, state, config, options, report, folders)
            except (SourceError, StateError) as exc:
                error = str(exc)
                if box is None:
                    rt.close_box()
            except Exception as exc:  # a bug must not end the service; the account retries
                log.exception("%s: run failed", rt.name)
                error = f"internal error: {exc!r}"
                if box is None:
                    rt.close_box()
            try:
                if error is None:
                    self._succeeded(rt, state, started, report)
                else:
                    self._failed(rt, state, started, error)
            finally:
                state.close()

    def _run_on_account_box(
        self,
        rt: AccountRuntime,
        account: Account,
        state: State,
        config: Config,
        options: RunOptions,
        report: Report,
        folders: list[str] | None,
    ) -> None:
        """Run on the account's own connection: an IMAP one is kept if used recently, else
        a new one is made, and a kept one that turns out dead is replaced once, at once.
        Others are closed after the run: a POP3 session sees the maildrop as it was at
        login (RFC 1939), so new mail needs a new session."""
        try:
            if rt.box is not None and time.monotonic() - rt.box_used > REUSE_WITHIN:
                rt.close_box()
            if rt.box is None:
                rt.box = account.mailbox()
            reused = bool(getattr(rt.box, "connected", False))
            try:
                _bind(rt.box, state, config)
                run_account(account, rt.box, state, config.rules, options, report, folders)
            except SourceError as exc:
                if not reused or self.stopping.is_set():
                    raise
                log.info("%s: the open connection failed (%s); trying a new one", rt.name, exc)
                rt.close_box()
                rt.box = account.mailbox()
                _bind(rt.box, state, config)
                run_account(account, rt.box, state, config.rules, options, report, folders)
        finally:
            rt.box_used = time.monotonic()
            if not isinstance(rt.box, ImapMailbox):
                rt.close_box()

    def _succeeded(self, rt: AccountRuntime, state: State, started: float, report: Report) -> None:
        status = rt.status
        log.debug("%s: run done, %d new", rt.name, report.new)
        for note in report.notes:  # a first-run baseline or a UIDVALIDITY reset: say so
            log.warning("%s", note)
        if status.failures:
            log.info("%s: working again after %d failed run(s)", rt.name, status.failures)
        with contextlib.suppress(Exception):
            self.scheduler.remove_job(f"retry:{rt.name}")
        status.last_run, status.last_ok, status.failures = started, time.time(), 0
        if report.new:
            now = datetime.now().astimezone()
            for job in self.periodic:
                if job.after_new_mail:
                    with contextlib.suppress(Exception):  # gone if the service is stopping
                        self.scheduler.modify_job(f"job:{job.name}", next_run_time=now)
        status.next_run = self._next_run(rt.name)
        status.detail = rt.account.schedule.describe()
        if report.failed_actions:
            status.detail += f"; {report.failed_actions} action(s) failed in the last run"
            log.warning(
                "%s: %d action(s) failed; those messages are tried again at the next run",
                rt.name,
                report.failed_actions,
            )
        self._save(state, [status])

    def _failed(self, rt: AccountRuntime, state: State | None, started: float, error: str) -> None:
        status = rt.status
        status.failures += 1
        status.last_run, status.last_error, status.last_error_at = started, error, time.time()
        delay = backoff(status.failures, RETRY_BASE, RETRY_CAP)
        retry_at = time.time() + delay
        scheduled = self._next_run(rt.name, retries=False)
        if not self.stopping.is_set() and (scheduled is None or retry_at < scheduled):
            self.scheduler.add_job(
                self._scheduled,
                "date",
                run_date=datetime.fromtimestamp(retry_at).astimezone(),
                args=[rt.name],
                id=f"retry:{rt.name}",
                replace_existing=True,
            )
        status.next_run = self._next_run(rt.name)
        log.error(
            "%s; next try at %s (in %.0fs; %d failure%s in a row)",
            error if error.startswith(f"{rt.name} ") else f"{rt.name}: {error}",
            _clock(status.next_run),
            (status.next_run or retry_at) - time.time(),
            status.failures,
            "s" * (status.failures != 1),
        )
        if state is not None:
            self._save(state, [status])

    def _next_run(self, name: str, retries: bool = True) -> float | None:
        times = []
        for prefix in ("poll", "retry") if retries else ("poll",):
            job = self.scheduler.get_job(f"{prefix}:{name}")
            if job is not None and job.next_run_time is not None:
                times.append(job.next_run_time.timestamp())
        return min(times) if times else None

    # -- periodic jobs --------------------------------------------------------------------

    def _run_periodic(self, job: PeriodicJob) -> None:
        with self._busy:
            self._active += 1
        try:
            if self.stopping.is_set() or (job.wanted and not job.wanted(self.config)):
                return
            status = self.job_status[job.name]
            status.last_run = time.time()
            state = State(self.state_path)
            try:
                try:
                    job.run(JobContext(self.config, state, self.stopping))
                except Exception as exc:  # the job runs again at its next time
                    log.exception("job %s failed", job.name)
                    status.failures += 1
                    status.last_error, status.last_error_at = repr(exc), time.time()
                else:
                    status.failures, status.last_ok = 0, time.time()
                scheduled = self.scheduler.get_job(f"job:{job.name}")
                status.next_run = (
                    scheduled.next_run_time.timestamp()
                    if scheduled is not None and scheduled.next_run_time
                    else None
                )
                self._save(state, [status])
            finally:
                state.close()
        finally:
            with self._busy:
                self._active -= 1
                self._busy.notify_all()

    # -- status -----------------------------------------------------------------------------

    def _save(self, state: State, rows: list[ServiceStatus]) -> None:
        try:
            state.save_status(rows)
        except StateError as exc:
            log.warning("cannot record the service status: %s", exc)

    def _save_status(self, keep: bool = False) -> None:
        """Write every status row (and with ``keep``, drop rows of what is gone)."""
        rows: list[ServiceStatus] = []
        for rt in self.runtimes.values():
            rt.status.next_run = self._next_run(rt.name) if self.scheduler.running else None
            rows.append(rt.status)
        rows += [w.status for w in self.watchers.values()]
        rows += list(self.job_status.values())
        state = State(self.state_path)
        try:
            if keep:
                state.keep_status(r.name for r in rows)
            self._save(state, rows)
        finally:
            state.close()

    def save_watcher_status(self, status: ServiceStatus) -> None:
        """For watcher threads: record one IDLE connection's status."""
        try:
            state = State(self.state_path)
        except StateError as exc:
            log.warning("cannot record the service status: %s", exc)
            return
        try:
            self._save(state, [status])
        finally:
            state.close()

    def no_idle(self, account: str) -> bool:
        """True the first time a watcher of ``account`` finds the server without IDLE."""
        if account in self._no_idle_logged:
            return False
        self._no_idle_logged.add(account)
        return True


def _bind(box: Mailbox, state: State, config: Config) -> None:
    """Hand this run's State to a mailbox that keeps its own records (POP3 does)."""
    bind_state = getattr(box, "bind_state", None)
    if bind_state is not None:
        bind_state(state, False, config)


def _clock(when: float | None) -> str:
    if when is None:
        return "(not scheduled)"
    return datetime.fromtimestamp(when).astimezone().strftime("%H:%M:%S")

"""IDLE watchers: one thread and one IMAP connection per watched folder (RFC 2177).

A watcher connects, EXAMINEs its folder, processes it (to catch what arrived while it
was away), and enters IDLE. Whenever the server reports ``* n EXISTS`` it processes the
folder again, on this thread and this connection, which the server has just synced
(the fastest way to the new message), unless a run of the account is already going on:
then it stays in IDLE and that run takes the folder along. After processing, the
watcher checks whether more mail came meanwhile (the server reported it to the run's
commands and will not announce it again in IDLE), and goes back to IDLE only when none
did. IDLE is renewed
every ``RENEW`` seconds, well inside the 29 minutes RFC 2177 allows and before NATs
forget a quiet connection; TCP keepalive covers the time in between. The account's own
schedule keeps polling as a backstop.

Any failure (network error, ``* BYE``, a server restart, an expired token, a renewed
certificate that no longer matches a pin) closes the connection; the watcher logs what
happened and when it will reconnect, and waits with exponential backoff and jitter
(1 s doubling to 5 min; back to 1 s once a connection has lasted a minute). A server
without IDLE ends the watcher: the folder is then only polled on the schedule.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from mailrules import log as logsetup
from mailrules.config.load import Account
from mailrules.schedule import backoff
from mailrules.sources.imap import IdleSession, IdleUnsupported, ImapMailbox
from mailrules.state import ServiceStatus

if TYPE_CHECKING:
    from mailrules.service import AccountRuntime, Service

log = logging.getLogger(__name__)

RENEW = 600.0  # re-issue IDLE every 10 minutes
RECONNECT_BASE, RECONNECT_CAP = 1.0, 300.0
STABLE_AFTER = 60.0  # a connection that lasted this long resets the backoff


class FolderWatcher:
    """Watches one folder of one account over IDLE, in its own thread."""

    def __init__(
        self, service: Service, account: Account, folder: str, status: ServiceStatus
    ) -> None:
        self.service = service
        self.account = account
        self.folder = folder
        self.status = status
        self.connected = False
        self._halt = threading.Event()
        self._session: IdleSession | None = None
        self._thread = threading.Thread(
            target=self._loop, name=f"idle {account.name}/{folder}", daemon=True
        )

    @property
    def label(self) -> str:
        return f"{self.account.name}/{self.folder}"

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> None:
        """Stop watching (from any thread); a run in progress ends between batches."""
        self._halt.set()
        session = self._session
        if session is not None:
            session.interrupt()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        failures = 0
        with logsetup.context(account=self.account.name, folder=self.folder):
            while not self._halt.is_set():
                connected_at: float | None = None
                box = self.account.mailbox()
                assert isinstance(box, ImapMailbox)
                session = self._session = IdleSession(box, self.folder)
                try:
                    session.open()
                    if self._halt.is_set():
                        break
                    connected_at = time.monotonic()
                    self._connected(failures)
                    self._process(session)  # what came while there was no connection
                    self._watch(session)
                except IdleUnsupported as exc:
                    self._no_idle(exc)
                    return
                except Exception as exc:  # whatever broke, reconnect; never end the thread
                    if self._halt.is_set():
                        break
                    if connected_at is not None and time.monotonic() - connected_at > STABLE_AFTER:
                        failures = 0
                    failures += 1
                    self._lost(exc, failures)
                finally:
                    self.connected = False
                    session.close()
                    self._session = None

    def _watch(self, session: IdleSession) -> None:
        session.start()
        renew_at = time.monotonic() + RENEW
        while not self._halt.is_set():
            left = renew_at - time.monotonic()
            if left <= 0:
                session.stop()
                self._process(session)
                session.start()
                renew_at = time.monotonic() + RENEW
            elif session.wait(left) and not self._halt.is_set():
                log.debug("%s: IDLE says new mail", self.label)
                rt = self.service.claim(self.account.name, self.folder)
                if rt is None:
                    continue  # a run of the account is going on and takes the folder along
                try:
                    session.stop()
                except BaseException:
                    self.service.release(rt)
                    raise
                self._process(session, rt)
                session.start()

    def _process(self, session: IdleSession, rt: AccountRuntime | None = None) -> None:
        """Process the folder on this connection (``rt``: already claimed) until no mail
        came during the last run (``IdleSession.settled``). Not in IDLE meanwhile."""
        name = self.account.name
        if rt is None:
            rt = self.service.claim(name, self.folder)
        try:
            for attempt in range(3):  # more would mean mail keeps coming: IDLE will say so
                if rt is None:
                    return
                claimed, rt = rt, None
                ok = self.service.run_claimed(claimed, (self.folder, session.box))
                if not ok or self._halt.is_set():
                    return
                if session.settled():
                    return
                if attempt < 2:
                    rt = self.service.claim(name, self.folder)
        finally:
            if rt is not None:  # claimed but not run (an error on the way)
                self.service.release(rt)

    def _connected(self, failures: int) -> None:
        self.connected = True
        if failures:
            log.info("%s: IDLE connection is back", self.label)
        else:
            log.info("%s: watching with IDLE", self.label)
        self.status.last_ok, self.status.failures, self.status.next_run = time.time(), 0, None
        self.status.detail = "connected, in IDLE"
        self.service.save_watcher_status(self.status)

    def _lost(self, exc: BaseException, failures: int) -> None:
        delay = backoff(failures, RECONNECT_BASE, RECONNECT_CAP)
        again = time.time() + delay
        when = time.strftime("%H:%M:%S", time.localtime(again))
        log.warning(
            "%s: IDLE connection failed: %s; reconnecting at %s (in %.1fs, attempt %d)",
            self.label,
            exc,
            when,
            delay,
            failures,
        )
        self.status.failures = failures
        self.status.last_error, self.status.last_error_at = str(exc), time.time()
        self.status.next_run = again
        self.status.detail = "reconnecting"
        self.service.save_watcher_status(self.status)
        self._halt.wait(delay)

    def _no_idle(self, exc: BaseException) -> None:
        schedule = self.account.schedule.describe()
        if self.service.no_idle(self.account.name):
            log.warning(
                "%s; %s is polled on its schedule instead (%s): set a shorter schedule if "
                "mail must be seen sooner",
                exc,
                self.account.name,
                schedule,
            )
        self.status.detail = f"no IDLE on this server; polled {schedule}"
        self.status.next_run = None
        self.service.save_watcher_status(self.status)

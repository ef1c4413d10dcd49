"""Real IMAP/POP3 servers for the interop tier, started once per session on free ports.

Load with ``pytest_plugins = ["tests.servers.plugin"]``. Fixtures:

``imap_server`` / ``pop3_server``
    Parametrized over every server that speaks the protocol (``IMAP_SERVERS``,
    ``POP3_SERVERS``); each test gets a ``MailServer`` (tests/servers/common.py) whose
    INBOX holds the 20 corpus messages, unseen, and whose other folders are as the server
    starts (reset before the test: a directory swap or a few IMAP commands, well under a
    second). It has the host, ports, ``ca_file``, credentials, the personal namespace and
    inspection helpers (``ids``, ``stored``, ``folders``, ``pop3_count``).
``mail_server_named(name)``
    The same for one server, for a test about that server only.
``recording_proxy(port, cut_after=None, cut_when=None)``
    A proxy to a server's port that records the client's commands and the server's
    tagged answers, and can cut the connection (tests/servers/proxy.py).

The servers a session's tests need are started in parallel at the first request, each in
its own temp dir, and stopped at the end. Every listener binds 127.0.0.1 and a free port.
A server that is not installed skips its tests naming ``tests/servers/install.sh``; with
``MAILRULES_REQUIRE_SERVERS=1`` (or ``MAILRULES_REQUIRE_DOVECOT=1`` for Dovecot) it fails
them instead, so a missing server never shows green.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import importlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import pytest

from tests.servers import common
from tests.servers.common import MailServer, ServerError, ServerUnavailable
from tests.servers.proxy import recording_proxy

__all__ = ["recording_proxy"]  # a fixture: tests get it through this plugin

REQUIRE_VARIABLE = "MAILRULES_REQUIRE_SERVERS"

# Server name -> the module in tests/servers whose start(base, cert, key) runs it.
MODULES = {
    "dovecot": "dovecot_server",
    "cyrus": "cyrus",
    "courier": "courier",
    "mailutils": "mailutils",
    "twisted": "twisted_mail",
    "pymap": "pymap_server",
    "tclpop3d": "tclpop3d",
}
IMAP_SERVERS = ("dovecot", "cyrus", "courier", "mailutils", "twisted", "pymap")
POP3_SERVERS = ("dovecot", "cyrus", "courier", "mailutils", "twisted", "tclpop3d")


def _starter(name: str) -> Callable[[Path, Path, Path], tuple[MailServer, object]]:
    return importlib.import_module(f"tests.servers.{MODULES[name]}").start


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "interop: runs against the real servers of tests/servers")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Remember which servers the selected tests use, so only those are started."""
    wanted: set[str] = set()
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for key in ("imap_server", "pop3_server"):
            if key in params:
                wanted.add(params[key])
                item.add_marker("interop")
    config.stash[_WANTED] = wanted


_WANTED = pytest.StashKey[set[str]]()


def unavailable(name: str, reason: str) -> NoReturn:
    strict = os.environ.get(REQUIRE_VARIABLE) == "1" or (
        name == "dovecot" and os.environ.get("MAILRULES_REQUIRE_DOVECOT") == "1"
    )
    if strict:
        pytest.fail(
            f"{reason} ({REQUIRE_VARIABLE}=1 turns this skip into a failure)", pytrace=False
        )
    pytest.skip(reason)


class ServerPool:
    """The session's servers: started together in threads, each result kept (or its error)."""

    def __init__(self, wanted: set[str]) -> None:
        self.base = common.make_base("mailrules-servers-")
        self.wanted = wanted
        self._lock = threading.Lock()
        self._started = False
        self._results: dict[str, MailServer | Exception] = {}
        self._daemons: list[object] = []
        self.start_seconds: dict[str, float] = {}

    def _start_one(self, name: str, cert: Path, key: Path) -> None:
        directory = self.base / name
        directory.mkdir()
        directory.chmod(0o755)
        began = time.monotonic()
        try:
            server, daemon = _starter(name)(directory, cert, key)
        except (ServerUnavailable, ServerError) as exc:
            self._results[name] = exc
        except Exception as exc:  # anything else is a setup bug: report it on every test
            self._results[name] = ServerError(f"{name} did not start: {exc!r}")
        else:
            self._results[name] = server
            self._daemons.append(daemon)
        self.start_seconds[name] = time.monotonic() - began

    def _start_all(self, names: list[str]) -> None:
        shared = self.base / "tls"
        shared.mkdir()
        shared.chmod(0o755)
        cert, key = common.certificate(shared)
        key.chmod(0o644)  # servers running as other users read it; a throwaway key
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            list(pool.map(lambda n: self._start_one(n, cert, key), names))

    def get(self, name: str) -> MailServer:
        with self._lock:
            if not self._started:
                self._started = True
                self._start_all(sorted(self.wanted | {name}))
            if name not in self._results:
                directory_cert = self.base / "tls"
                self._start_one(name, directory_cert / "cert.pem", directory_cert / "key.pem")
        found = self._results[name]
        if isinstance(found, ServerUnavailable):
            unavailable(name, str(found))
        if isinstance(found, Exception):
            raise found
        return found

    def close(self) -> None:
        for found in self._results.values():
            if isinstance(found, MailServer):
                found.close()
        for daemon in self._daemons:
            daemon.terminate()  # all at once: some take a second to stop
        for daemon in self._daemons:
            stop = getattr(daemon, "close", None) or daemon.stop
            stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def _mail_servers(request: pytest.FixtureRequest) -> Iterator[ServerPool]:
    pool = ServerPool(request.config.stash.get(_WANTED, set()))
    yield pool
    pool.close()


def _fresh(pool: ServerPool, name: str) -> MailServer:
    server = pool.get(name)
    server.reset()
    return server


@pytest.fixture(params=IMAP_SERVERS)
def imap_server(request: pytest.FixtureRequest, _mail_servers: ServerPool) -> MailServer:
    return _fresh(_mail_servers, request.param)


@pytest.fixture(params=POP3_SERVERS)
def pop3_server(request: pytest.FixtureRequest, _mail_servers: ServerPool) -> MailServer:
    return _fresh(_mail_servers, request.param)


@pytest.fixture
def mail_server_named(_mail_servers: ServerPool) -> Callable[[str], MailServer]:
    return lambda name: _fresh(_mail_servers, name)

"""Helpers for the service tests: a PREAUTH Dovecot over pipes, the service as a subprocess,
and a datagram socket standing in for systemd's notify socket.

``PreauthDovecot`` is deliberately small (FIELD-NOTES, "PREAUTH over pipes"): a fresh
Maildir and a wrapper script that runs Dovecot's ``imap`` binary on it, pre-authenticated,
over stdin/stdout. The service reaches it as a ``tunnel`` account; the test's own
sessions (``append``, ``subjects``) use imaplib's IMAP4_stream on the same wrapper, so
they are "another client" to the service. No port, no password, no daemon.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

IMAP_BINARY = Path("/usr/lib/dovecot/imap")
MAIL_USER = "nobody"


def require_dovecot() -> None:
    if not os.access(IMAP_BINARY, os.X_OK):
        if os.environ.get("MAILRULES_REQUIRE_DOVECOT") == "1":
            pytest.fail(f"{IMAP_BINARY} missing (Debian package dovecot-imapd)")
        pytest.skip(f"{IMAP_BINARY} missing: install the Debian package dovecot-imapd")


class PreauthDovecot:
    """A fresh Maildir served by Dovecot's imap binary over pipes (``argv``)."""

    def __init__(self, capability: str | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="mailrules-service-"))
        self.base.chmod(0o755)  # Dovecot runs as nobody and must reach the Maildir
        self.home = self.base / "home"
        self.maildir = self.home / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        if os.geteuid() == 0:  # Dovecot refuses mail access as root
            entry = pwd.getpwnam(MAIL_USER)
            for path in [self.home, *self.home.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.log = self.base / "dovecot.log"
        self.argv = [self._wrapper("imap", capability)]
        self.helper_argv = [self._wrapper("imap-helper", None)] if capability else self.argv

    def _wrapper(self, name: str, capability: str | None) -> str:
        conf = self.base / f"{name}.conf"
        ids = ""
        if os.geteuid() == 0:
            entry = pwd.getpwnam(MAIL_USER)
            ids = f"mail_uid = {entry.pw_uid}\nmail_gid = {entry.pw_gid}\n"
        conf.write_text(
            f"base_dir = {self.base}/run\nssl = no\nmail_location = maildir:{self.maildir}\n"
            f"{ids}first_valid_uid = 1\nfirst_valid_gid = 1\n"
            f"default_internal_user = {MAIL_USER}\ndefault_login_user = {MAIL_USER}\n"
            "namespace inbox {\n  inbox = yes\n  separator = /\n}\n"
            + (f"imap_capability = {capability}\n" if capability else "")
        )
        script = self.base / name
        q = shlex.quote
        script.write_text(
            "#!/bin/sh\n"
            f"exec env -i PATH=/usr/sbin:/usr/bin:/bin HOME={q(str(self.home))} USER=user "
            f"{q(str(IMAP_BINARY))} -c {q(str(conf))} 2>>{q(str(self.log))}\n"
        )
        script.chmod(0o755)
        return str(script)

    @contextlib.contextmanager
    def session(self) -> Iterator[imaplib.IMAP4_stream]:
        client = imaplib.IMAP4_stream(shlex.quote(self.helper_argv[0]))
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(self, folder: str, raw: bytes) -> int:
        with self.session() as client:
            client.create(folder)  # NO [ALREADYEXISTS] is fine
            typ, data = client.append(folder, "", None, raw)
        assert typ == "OK", data
        found = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
        assert found, data
        return int(found.group(1))

    def subjects(self, folder: str = "INBOX") -> list[str]:
        with self.session() as client:
            typ, _ = client.select(folder, readonly=True)
            if typ != "OK":
                return []
            _, data = client.uid("SEARCH", "ALL")
            uids = data[0].split()
            if not uids:
                return []
            _, items = client.uid("FETCH", b",".join(uids), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        out = []
        for item in items:
            if isinstance(item, tuple):
                header = item[1].decode().strip()
                out.append(header.partition(":")[2].strip())
        return sorted(out)

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def message(subject: str, sender: str = "alice@example.org", n: int = 0) -> bytes:
    mid = f"<{subject.replace(' ', '-')}.{n}.{time.monotonic_ns()}@test.example>"
    return (
        f"From: {sender}\r\nTo: me@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid}\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n"
    ).encode()


class NotifySocket:
    """An AF_UNIX datagram socket the test owns, standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[str] = []

    def wait_for(self, field: str, timeout: float = 15) -> str:
        """Read messages until one has ``field`` (e.g. "READY=1"); return that message."""
        deadline = time.monotonic() + timeout
        for seen in self.messages:
            if field in seen.split("\n"):
                self.messages.remove(seen)
                return seen
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                break
            if field in data.split("\n"):
                return data
            self.messages.append(data)
        raise AssertionError(f"no {field!r} within {timeout}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


class ServiceProcess:
    """``mailrules run`` (the service) in a subprocess, its stderr in a file."""

    def __init__(
        self,
        config: Path,
        state_dir: Path,
        env: dict[str, str],
        notify: NotifySocket | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.log = state_dir.parent / f"service-{time.monotonic_ns()}.log"
        full_env = dict(env)
        if notify is not None:
            full_env["NOTIFY_SOCKET"] = str(notify.path)
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "mailrules.cli", "run", "-c", str(config)),
                    *("--state-dir", str(state_dir), *(extra or [])),
                ],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                env=full_env,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in the service log:\n{self.output}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the service ignored SIGTERM:\n{self.output}") from None

    def imap_children(self) -> list[int]:
        """Pids of the Dovecot imap processes the service started through its tunnels."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid and comm == "imap":
                    out.append(int(entry.name))
        return out


def wait_until(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

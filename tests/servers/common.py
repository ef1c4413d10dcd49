"""What every test mail server shares: processes, ports, the seed corpus and an inspector.

The servers themselves live in one module each (``dovecot_server``, ``cyrus`` ...); the
pytest fixtures that start them are in ``tests/servers/plugin.py``.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import poplib
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tests.servers import seed_messages

CACHE = Path(os.environ.get("MAILRULES_SERVERS_CACHE", "/var/cache/mailrules-test-servers"))
INSTALL_HINT = "run tests/servers/install.sh as root"
HERE = Path(__file__).resolve().parent
TIMEOUT = 10.0
USERNAME = "testuser"
PASSWORD = "testpass"
MAIL_USER = "nobody"  # owns the mail of every server that refuses root
SEED_DATE = 1704067200  # 2024-01-01T00:00:00Z; message N arrived N hours later


class ServerUnavailable(Exception):
    """The server is not installed here: the test skips (or fails in CI) with this reason."""


class ServerError(RuntimeError):
    """The server is installed but did not start or reset; the message carries its log."""


def seed() -> list[bytes]:
    """The 20 corpus messages, raw CRLF octets; message N is ``<lab-NN@interop.lab.test>``."""
    return [raw for _name, raw in seed_messages.messages()]


def seed_id(number: int) -> str:
    return f"<lab-{number:02d}@interop.lab.test>"


def make_base(prefix: str) -> Path:
    """A temp dir every user may enter: the servers' own users ('nobody') live in it.

    Not pytest's tmp_path: its parent is 0700, which a server running as 'nobody' cannot
    pass. The session's plugin removes it at the end.
    """
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    return base


def mail_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid


def chown_tree(root: Path, ids: tuple[int, int] | None = None) -> None:
    uid, gid = ids or mail_ids()
    os.chown(root, uid, gid)
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.lchown(os.path.join(directory, name), uid, gid)


def free_ports(count: int) -> list[int]:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    try:
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_seed_maildir(maildir: Path) -> None:
    """The corpus as a Maildir (``cur/``, unseen, LF line ends: the Maildir convention)."""
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for number, raw in enumerate(seed(), 1):
        data = raw.replace(b"\r\n", b"\n")
        path = maildir / "cur" / f"{SEED_DATE + number}.M{number:02d}P1.seed,S={len(data)}:2,"
        path.write_bytes(data)
        os.utime(path, (SEED_DATE + number * 3600,) * 2)


def replace_tree(live: Path, template: Path, owner: tuple[int, int] | None) -> None:
    """Swap ``live`` for a fresh copy of ``template``, in one rename for the servers."""
    fresh = live.with_name(live.name + ".fresh")
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.copytree(template, fresh, symlinks=True)
    if owner is not None:
        chown_tree(fresh, owner)
    if live.exists():
        stale = live.with_name(live.name + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        live.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    fresh.rename(live)


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for CN=localhost, IP:127.0.0.1: (cert.pem, key.pem)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    done = subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost/O=mailrules tests",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        raise ServerError(f"openssl could not make a certificate: {done.stderr.decode()}")
    key.chmod(0o600)
    return cert, key


def require_files(server: str, *paths: Path | str) -> None:
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise ServerUnavailable(f"{server} not installed ({INSTALL_HINT}); missing {missing[0]}")


def require_root(server: str) -> None:
    if os.geteuid() != 0:
        raise ServerUnavailable(f"{server} needs root (it drops to '{MAIL_USER}' itself)")


# --- Processes ---------------------------------------------------------------------------

# Runs a server and stops its whole process group with SIGTERM when stdin closes: when the
# fixture says so, and also when pytest dies without cleaning up, so an aborted run leaves
# no daemon behind.
_WATCHDOG = """\
exec 3<&0 </dev/null
"$@" &
pid=$!
{ read -r _ <&3; kill -TERM 0 2>/dev/null; } &
exec 3<&-
wait "$pid"
"""


class Daemon:
    """A server process in its own process group, with its output in ``log``."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None):
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", _WATCHDOG, "watchdog", *argv],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def stop(self) -> None:
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        # Servers that left the group's leader behind (forked workers) go with the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def wait_greeting(
    port: int, prefix: bytes, daemon: Daemon, what: str, timeout: float = 30.0
) -> None:
    """Wait until 127.0.0.1:``port`` greets with ``prefix``; fail early if the daemon dies."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise ServerError(f"{what} exited (status {daemon.proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
                line = sock.makefile("rb").readline()
            if line.startswith(prefix):
                return
            last = repr(line)
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise ServerError(
        f"{what}: no {prefix!r} greeting on port {port} after {timeout:.0f} s: {last}"
    )


def tail(*paths: Path, lines: int = 30) -> str:
    parts = []
    for path in paths:
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(text))
    return "\n".join(parts)


# --- The server as the tests see it -----------------------------------------------------


class Stored(NamedTuple):
    message_id: str | None
    flags: frozenset[str]  # without \Recent
    size: int


@dataclass
class MailServer:
    """One running server: where it listens, how to log in, how to start a test afresh.

    ``imap_port`` takes plain LOGIN (STARTTLS offered where ``imap_starttls_port`` is the
    same port); ``pop3_stls`` says whether POP3 offers STLS. ``prefix``/``separator`` are
    the personal namespace, so ``folder("Alice")`` is the name the server stores.
    """

    name: str
    version: str
    username: str = USERNAME
    password: str = PASSWORD
    host: str = "127.0.0.1"
    imap_port: int | None = None
    imap_starttls_port: int | None = None
    pop3_port: int | None = None
    pop3_stls: bool = False
    ca_file: str = ""
    prefix: str = ""
    separator: str = "/"
    case_insensitive_names: bool = False
    reset_hook: Callable[[], None] | None = None
    keep_session: bool = False  # reuse one inspecting session (pymap: a login takes 0.35 s)
    _kept: imaplib.IMAP4 | None = field(default=None, repr=False)

    def reset(self) -> None:
        """INBOX holds the 20 seed messages, unseen; other folders as the server starts."""
        if self.reset_hook is not None:
            self.reset_hook()

    def folder(self, name: str) -> str:
        """The server's name for the folder a user writes as ``name`` (``/`` separated)."""
        if name.upper() == "INBOX":
            return "INBOX"
        return self.prefix + name.replace("/", self.separator)

    # IMAP inspection, over a separate plain connection that never goes through a proxy.

    @contextlib.contextmanager
    def imap(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in imaplib client; with ``keep_session`` the same one each time."""
        assert self.imap_port is not None, f"{self.name} has no IMAP"
        client = self._kept
        self._kept = None
        if client is None:
            client = imaplib.IMAP4(self.host, self.imap_port, timeout=TIMEOUT)
            # imaplib sends a literal and its CRLF in two writes: without this each APPEND
            # waits for a delayed ACK.
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.login(self.username, self.password)
        healthy = False
        try:
            yield client
            healthy = True
        finally:
            if healthy and self.keep_session:
                self._kept = client
            else:
                with contextlib.suppress(imaplib.IMAP4.error, OSError):
                    client.logout()

    def close(self) -> None:
        """Log out the kept inspecting session, if any."""
        client, self._kept = self._kept, None
        if client is not None:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                client.logout()

    def folders(self) -> list[str]:
        """Every folder the server lists, as the server names them, sorted."""
        with self.imap() as client:
            return sorted(name for _flags, name in list_folders(client))

    def has_folder(self, name: str) -> bool:
        wanted = self.folder(name)
        names = self.folders()
        if self.case_insensitive_names:
            return wanted.upper() in {n.upper() for n in names}
        return wanted in names

    def stored(self, name: str = "INBOX") -> list[Stored]:
        """Each message in the folder (user's name for it), by sequence number; EXAMINE only."""
        with self.imap() as client:
            return examine(client, self.folder(name))

    def ids(self, name: str = "INBOX", *, deleted: bool = False) -> list[str]:
        """Message-IDs in the folder, sorted; ``\\Deleted`` ones only with ``deleted=True``."""
        if not self.has_folder(name):
            return []
        return sorted(
            m.message_id or "?" for m in self.stored(name) if deleted or "\\Deleted" not in m.flags
        )

    # POP3 inspection.

    @contextlib.contextmanager
    def pop3(self) -> Iterator[poplib.POP3]:
        assert self.pop3_port is not None, f"{self.name} has no POP3"
        poplib._MAXLINE = max(poplib._MAXLINE, 1 << 20)  # corpus message 10: 2,200 octets
        client = poplib.POP3(self.host, self.pop3_port, timeout=TIMEOUT)
        try:
            client.user(self.username)
            client.pass_(self.password)
            # Courier sends a notice instead of a message with raw UTF-8 headers unless the
            # client says UTF8 (RFC 6856).
            with contextlib.suppress(poplib.error_proto):
                if "UTF8" in client.capa():
                    client._shortcmd("UTF8")
            yield client
        finally:
            with contextlib.suppress(poplib.error_proto, OSError):
                client.quit()

    def pop3_count(self) -> int:
        with self.pop3() as client:
            return client.stat()[0]


_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<sep>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)$')


def list_folders(client: imaplib.IMAP4) -> list[tuple[frozenset[str], str]]:
    """(lower-cased attributes, name) for each LIST entry; modified UTF-7 left as sent."""
    status, data = client.list()
    if status != "OK":
        raise ServerError(f"LIST: {status} {data}")
    out = []
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):  # name sent as a literal
            head, name_bytes = item[0], item[1]
            found = _LIST_LINE.match(head.rsplit(b" ", 1)[0] + b" x")
            flags = found.group("flags") if found else b""
            name = name_bytes.decode("utf-8", "replace")
        else:
            found = _LIST_LINE.match(item)
            if not found:
                continue
            flags, raw = found.group("flags"), found.group("name")
            if raw.startswith(b'"'):
                raw = re.sub(rb"\\(.)", rb"\1", raw[1:-1])
            name = raw.decode("utf-8", "replace")
        out.append((frozenset(f.lower() for f in flags.decode().split()), name))
    return out


def quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


_MESSAGE_ID = re.compile(rb"(?im)^message-id:\s*(<[^>\r\n]*>)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")


def examine(client: imaplib.IMAP4, folder: str) -> list[Stored]:
    """Read every message of ``folder`` with EXAMINE + BODY.PEEK[]: no flag changes.

    BODY.PEEK[] rather than HEADER.FIELDS: some servers (Twisted) cannot send the header
    fields of a message with raw 8-bit headers, but all of them send its octets.
    """
    status, data = client.select(quote(folder), readonly=True)
    if status != "OK":
        raise ServerError(f"EXAMINE {folder}: {data}")
    if int(data[0] or 0) == 0:
        return []
    status, data = client.fetch("1:*", "(FLAGS BODY.PEEK[])")
    if status != "OK":
        raise ServerError(f"FETCH in {folder}: {data}")
    records: list[list[bytes]] = []  # [response text around the literal, literal]
    for item in data:
        if isinstance(item, tuple):
            records.append([item[0], item[1]])
        elif records and item:
            records[-1][0] += b" " + item  # what follows the literal: ")" or " FLAGS (...))"
    out = []
    for text, body in records:
        found = _FLAGS.search(text)
        flags = frozenset(
            f.decode() for f in (found.group(1).split() if found else []) if f != b"\\Recent"
        )
        header = re.split(rb"\r?\n\r?\n", body, maxsplit=1)[0]
        mid = _MESSAGE_ID.search(header)
        out.append(Stored(mid.group(1).decode() if mid else None, flags, len(body)))
    return out


def imap_reset(server: MailServer, baseline: set[str]) -> None:
    """Over IMAP: drop folders not in ``baseline``, empty the others, seed INBOX again.

    For servers whose store is not plain files (Cyrus, pymap, Twisted's in-memory one).
    """
    with server.imap() as client:
        listed = list_folders(client)
        extra = [name for _flags, name in listed if name not in baseline]
        for name in sorted(extra, key=lambda n: -n.count(server.separator)):
            status, data = client.delete(quote(name))
            if status != "OK":
                raise ServerError(f"{server.name}: DELETE {name}: {data}")
        for attributes, name in listed:
            if name not in baseline or "\\noselect" in attributes:
                continue
            status, data = client.select(quote(name))
            if status != "OK":
                raise ServerError(f"{server.name}: SELECT {name}: {data}")
            if int(data[0] or 0):
                client.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
                client.expunge()
        client.select("INBOX")
        for number, raw in enumerate(seed(), 1):
            date = imaplib.Time2Internaldate(SEED_DATE + number * 3600)
            status, data = client.append("INBOX", "()", date, raw)
            if status != "OK":
                raise ServerError(f"{server.name}: APPEND of seed message {number}: {data}")


def tls_context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)

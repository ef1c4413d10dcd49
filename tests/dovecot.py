"""Real Dovecot for tests: PREAUTH tunnels, a full TLS daemon, and a proxy that drops connections.

Load with ``pytest_plugins = ["tests.dovecot"]``. Fixtures (all function-scoped):

``dovecot_preauth`` / ``dovecot_preauth_factory(capability=None)``
    A fresh, empty Maildir and wrapper scripts that run Dovecot's ``imap`` / ``pop3`` binary
    on it pre-authenticated over stdin/stdout: what a ``tunnel`` account runs. No daemon, no
    port, no password; about 30 ms per session. The wrappers set everything Dovecot needs, so
    ``argv`` works in an environment holding nothing but PATH and HOME.
``dovecot_server`` / ``dovecot_server_factory(capability=None, starttls=True)``
    A Dovecot daemon on 127.0.0.1 (IMAP + STARTTLS, IMAPS, POP3 + STLS, POP3S; PLAIN, LOGIN,
    XOAUTH2, OAUTHBEARER) with a throwaway self-signed certificate. One daemon per variant is
    started once per session (start and stop cost about a second); every test gets a fresh,
    empty mailbox on it.
``cutting_proxy(target_port, cut_after=N)``
    A TCP proxy that cuts both sides once the client has sent N CRLF-terminated lines.

Both Dovecot fixtures offer the same helpers (``append``, ``create``, ``folders``, ``uids``,
``messages``, ``subjects``, ``mark_deleted``, ``uidvalidity``). They work through a separate
PREAUTH session that never has capabilities masked and never goes through a proxy.

Without Dovecot the fixtures skip, naming the Debian packages; with
``MAILRULES_REQUIRE_DOVECOT=1`` (CI) they fail instead, so a missing server never shows green.

Dovecot refuses mail access as root, so as root all mail belongs to ``nobody`` and lives in
temp dirs outside pytest's ``tmp_path``, whose 0700 parents ``nobody`` cannot enter. Files a
test writes into ``maildir`` itself must stay readable and writable for that user.

PYTEST_DONT_REWRITE: test modules may import this before pytest loads it as a plugin.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import hashlib
import http.server
import imaplib
import itertools
import json
import os
import poplib
import pwd
import re
import selectors
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import NamedTuple, NoReturn

import pytest
from imapclient import DELETED, IMAPClient

DOVECOT = Path("/usr/sbin/dovecot")
IMAP_BINARY = Path("/usr/lib/dovecot/imap")
POP3_BINARY = Path("/usr/lib/dovecot/pop3")
INSTALL_HINT = (
    "Dovecot not installed: run .ci/install-dovecot (Debian packages dovecot-imapd dovecot-pop3d)"
)
REQUIRE_VARIABLE = "MAILRULES_REQUIRE_DOVECOT"
CHILD_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MAIL_USER = "nobody"  # owns all test mail when we run as root
USERNAME = "user"
PASSWORD = "secret"
TIMEOUT = 10.0

DOVECOT_FIXTURES = frozenset(
    {"dovecot_preauth", "dovecot_preauth_factory", "dovecot_server", "dovecot_server_factory"}
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "dovecot: runs a real Dovecot (tests/dovecot.py)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a Dovecot fixture, so ``-m 'not dovecot'`` deselects them."""
    for item in items:
        if DOVECOT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker("dovecot")


class DovecotError(RuntimeError):
    """Dovecot could not be set up or started; the message carries its log."""


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when MAILRULES_REQUIRE_DOVECOT=1 (or, as for every test
    server, MAILRULES_REQUIRE_SERVERS=1)."""
    if "1" in (os.environ.get(REQUIRE_VARIABLE), os.environ.get("MAILRULES_REQUIRE_SERVERS")):
        pytest.fail(
            f"{reason} ({REQUIRE_VARIABLE}=1 turns this skip into a failure)", pytrace=False
        )
    pytest.skip(reason)


def require_dovecot(*, daemon: bool = False) -> None:
    """Skip (or fail) unless the Dovecot binaries, and for a daemon root and openssl, are here."""
    needed = [IMAP_BINARY, POP3_BINARY, *([DOVECOT] if daemon else [])]
    missing = [str(path) for path in needed if not os.access(path, os.X_OK)]
    if missing:
        unavailable(f"{INSTALL_HINT}; missing {', '.join(missing)}")
    if daemon and shutil.which("openssl") is None:
        unavailable(
            "openssl not installed: the Dovecot daemon fixture makes its certificate with it"
        )
    if daemon and os.geteuid() != 0:
        unavailable("the Dovecot daemon fixture needs root (Dovecot drops to 'nobody' itself)")


def make_message(
    subject: str = "Test message",
    *,
    sender: str = "alice@example.org",
    to: str = "user@example.org",
    message_id: str | None = None,
    date: datetime | None = None,
    body: str = "Hello.\r\n",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A small RFC 5322 message with CRLF line ends, ready for ``append``."""
    fields = {
        "From": sender,
        "To": to,
        "Subject": subject,
        "Message-ID": message_id or f"<{next(_message_numbers)}.{os.getpid()}@test.example>",
        "Date": format_datetime(date or datetime.now().astimezone()),
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=utf-8",
        **(headers or {}),
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return (head + "\r\n" + body).encode()


_message_numbers = itertools.count(1)


# --- Command tunnels: pipes relayed to a socketpair ---------------------------------------


class PipeTunnel:
    """Run ``argv`` with pipes and relay them to a socketpair; ``sock`` is the client's end.

    IMAPClient's own ``stream=True`` is broken and Dovecot refuses a socket as stdin, so two
    threads copy bytes between the child's pipes and the other end of the pair. ``greeting``
    is sent to the client first: Dovecot's pop3 binary says nothing in PREAUTH mode.
    """

    def __init__(
        self, argv: Sequence[str], *, greeting: bytes = b"", env: dict[str, str] | None = None
    ) -> None:
        self.sock, self._theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env if env is not None else {"PATH": CHILD_PATH, "HOME": "/"},
                bufsize=0,
            )
        except OSError:
            self.sock.close()
            self._theirs.close()
            raise
        self._closed = False
        self._threads = [
            threading.Thread(target=self._to_child, daemon=True, name="dovecot-tunnel-in"),
            threading.Thread(
                target=self._from_child, args=(greeting,), daemon=True, name="dovecot-tunnel-out"
            ),
        ]
        for thread in self._threads:
            thread.start()

    def _to_child(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while data := self._theirs.recv(65536):
                view = memoryview(data)
                while view:
                    view = view[stdin.write(view) :]
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _from_child(self, greeting: bytes) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            if greeting:
                self._theirs.sendall(greeting)
            while data := os.read(stdout.fileno(), 65536):
                self._theirs.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                self._theirs.shutdown(socket.SHUT_RDWR)

    def close(self) -> int:
        """Close our end, reap the child (killing it after 5 s) and return its exit status."""
        if not self._closed:
            self._closed = True
            self.sock.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for thread in self._threads:
                thread.join(timeout=5)
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            self._theirs.close()
        return self.proc.returncode


class _TunnelIMAP4(imaplib.IMAP4):
    def __init__(self, argv: Sequence[str], env: dict[str, str] | None) -> None:
        self._argv, self._env = argv, env
        self.tunnel: PipeTunnel | None = None
        super().__init__("tunnel", 0)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        self.tunnel = PipeTunnel(self._argv, env=self._env)
        return self.tunnel.sock

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            if self.tunnel is not None:
                self.tunnel.close()


class TunnelIMAPClient(IMAPClient):
    """IMAPClient over a command's stdin/stdout (``argv`` such as ``dovecot_preauth.argv``)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        timeout: float | None = TIMEOUT,
    ) -> None:
        self._tunnel_argv, self._tunnel_env = list(argv), env
        super().__init__("tunnel", port=0, ssl=False, timeout=timeout)

    def _create_IMAP4(self) -> imaplib.IMAP4:
        return _TunnelIMAP4(self._tunnel_argv, self._tunnel_env)


class TunnelPOP3(poplib.POP3):
    """poplib over a command's stdin/stdout; ``greeting`` stands in for the server's one."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        greeting: bytes = b"+OK pre-authenticated (greeting injected by the tunnel)\r\n",
        env: dict[str, str] | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self._argv, self._greeting, self._env = list(argv), greeting, env
        self.tunnel: PipeTunnel | None = None
        super().__init__("tunnel", 0, timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        self.tunnel = PipeTunnel(self._argv, greeting=self._greeting, env=self._env)
        self.tunnel.sock.settimeout(timeout)
        return self.tunnel.sock

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.tunnel is not None:
                self.tunnel.close()


# --- Helpers shared by both fixtures ----------------------------------------------------------


class StoredMessage(NamedTuple):
    uid: int
    flags: tuple[str, ...]  # sorted, without \Recent
    message_id: str | None


class MailboxHelpers:
    """Inspect and change the test mailbox through a separate, unmasked PREAUTH session.

    Each call opens and closes its own session (about 30 ms), so the helpers never share
    state with the client under test. Reads use EXAMINE, which leaves flags alone.
    """

    maildir: Path
    helper_argv: list[str]

    @contextlib.contextmanager
    def session(self) -> Iterator[IMAPClient]:
        client = TunnelIMAPClient(self.helper_argv)
        try:
            yield client
        finally:
            try:
                client.logout()
            except (imaplib.IMAP4.error, OSError):
                with contextlib.suppress(imaplib.IMAP4.error, OSError):
                    client.shutdown()

    def append(
        self,
        folder: str,
        raw: bytes,
        flags: Sequence[str] = (),
        date: datetime | None = None,
    ) -> int | None:
        """APPEND ``raw`` to ``folder``; return its UID (from APPENDUID)."""
        with self.session() as client:
            response = client.append(folder, raw, tuple(flags), date)
        found = re.search(rb"\[APPENDUID \d+ (\d+)\]", response)
        return int(found.group(1)) if found else None

    def create(self, folder: str) -> None:
        with self.session() as client:
            client.create_folder(folder)

    def folders(self) -> list[str]:
        """Selectable folders, sorted; a parent that exists only by name is left out."""
        with self.session() as client:
            listed = client.list_folders()
        skip = {b"\\noselect", b"\\nonexistent"}
        return sorted(
            name for flags, _delim, name in listed if not skip & {f.lower() for f in flags}
        )

    def uids(self, folder: str = "INBOX") -> list[int]:
        with self.session() as client:
            client.select_folder(folder, readonly=True)
            return sorted(client.search("ALL"))

    def messages(self, folder: str = "INBOX") -> list[StoredMessage]:
        """(uid, flags, Message-ID) for each message in ``folder``, by UID."""
        return [
            StoredMessage(uid, flags, headers["Message-ID"])
            for uid, flags, headers in self._headers(folder)
        ]

    def subjects(self, folder: str = "INBOX") -> list[str]:
        """Decoded Subject of each message in ``folder``, by UID."""
        return [str(headers["Subject"] or "") for _uid, _flags, headers in self._headers(folder)]

    def mark_deleted(self, folder: str, uid: int) -> None:
        """Set \\Deleted as another client would; nothing is expunged."""
        with self.session() as client:
            client.select_folder(folder)
            client.add_flags([uid], [DELETED], silent=True)

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.session() as client:
            return int(client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])

    def _headers(self, folder: str) -> list[tuple[int, tuple[str, ...], EmailMessage]]:
        section = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)]"
        parser = email.parser.BytesHeaderParser(policy=email.policy.default)
        with self.session() as client:
            client.select_folder(folder, readonly=True)
            uids = sorted(client.search("ALL"))
            fetched = client.fetch(uids, ["FLAGS", section]) if uids else {}
        out = []
        for uid in uids:
            item = fetched[uid]
            raw = next(v for k, v in item.items() if k.startswith(b"BODY[HEADER"))
            flags = tuple(sorted(f.decode() for f in item[b"FLAGS"] if f != b"\\Recent"))
            out.append((uid, flags, parser.parsebytes(raw)))
        return out


# --- Files and config shared by both fixtures ------------------------------------------------


def _mail_ids() -> tuple[int, int] | None:
    """uid and gid for mail when we are root (Dovecot refuses root), else None."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid


def _make_base(prefix: str) -> Path:
    """A temp dir every user may enter (mkdtemp makes 0700; Dovecot's users need to pass)."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    return base


def _make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    ids = _mail_ids()
    if ids is not None:
        for directory in (path.parent, path, *(path / sub for sub in ("cur", "new", "tmp"))):
            os.chown(directory, *ids)
    return path


DEFAULT_NAMESPACE = "inbox = yes\nseparator = /"


def _mail_settings(mail_location: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    ids = _mail_ids()
    inside = "".join(f"  {line}\n" for line in namespace.splitlines())
    owner = f"mail_uid = {ids[0]}\nmail_gid = {ids[1]}\n" if ids else ""
    return f"""\
mail_location = {mail_location}
{owner}first_valid_uid = 1
first_valid_gid = 1
default_internal_user = {MAIL_USER}
default_login_user = {MAIL_USER}
namespace inbox {{
{inside}}}
"""


def _preauth_config(
    base: Path, maildir: Path, capability: str | None, namespace: str = DEFAULT_NAMESPACE
) -> str:
    masked = f"imap_capability = {capability}\n" if capability else ""
    return f"""\
# PREAUTH sessions on one test Maildir; made by tests/dovecot.py. Reads nothing in /etc/dovecot.
base_dir = {base}/run
ssl = no
{_mail_settings(f"maildir:{maildir}", namespace)}{masked}"""


def _write_wrapper(path: Path, binary: Path, conf: Path, home: Path, log: Path) -> list[str]:
    """A script that runs ``binary`` pre-authenticated, whatever environment it is given."""
    q = shlex.quote
    path.write_text(
        "#!/bin/sh\n"
        f"# {binary.name} pre-authenticated over stdin/stdout; made by tests/dovecot.py.\n"
        f"exec env -i PATH={CHILD_PATH} HOME={q(str(home))} USER={USERNAME} \\\n"
        f"    {q(str(binary))} -c {q(str(conf))} 2>>{q(str(log))}\n"
    )
    path.chmod(0o755)
    return [str(path)]


class _PreauthFiles:
    """Config and wrappers for PREAUTH sessions on ``maildir`` (masked and unmasked)."""

    def __init__(
        self,
        base: Path,
        maildir: Path,
        home: Path,
        capability: str | None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        self.log = base / "preauth.log"
        self.log.touch()
        conf = base / "preauth.conf"
        conf.write_text(_preauth_config(base, maildir, capability, namespace))
        self.argv = _write_wrapper(base / "imap", IMAP_BINARY, conf, home, self.log)
        self.pop3_argv = _write_wrapper(base / "pop3", POP3_BINARY, conf, home, self.log)
        self.conf = conf
        if capability:
            helper_conf = base / "helper.conf"
            helper_conf.write_text(_preauth_config(base, maildir, None, namespace))
            self.helper_argv = _write_wrapper(
                base / "imap-helper", IMAP_BINARY, helper_conf, home, self.log
            )
        else:
            self.helper_argv = self.argv


# --- PREAUTH fixture --------------------------------------------------------------------------


class DovecotPreauth(MailboxHelpers):
    """A fresh Maildir, and commands that serve it pre-authenticated over stdin/stdout.

    ``argv`` starts an IMAP session that greets with ``* PREAUTH``; ``pop3_argv`` a POP3
    session in TRANSACTION state that sends **no greeting** (``pop3_sends_greeting`` is False):
    the POP3 client side must supply the ``+OK`` itself, as ``TunnelPOP3`` does.
    ``capability`` is the ``imap_capability`` the IMAP session advertises (None: Dovecot's).
    ``namespace`` is the body of the inbox namespace (the helpers use it too), e.g. Courier's
    ``inbox = yes`` / ``prefix = INBOX.`` / ``separator = .``.
    """

    pop3_sends_greeting = False

    def __init__(
        self, base: Path, capability: str | None, namespace: str = DEFAULT_NAMESPACE
    ) -> None:
        self.base = base
        self.capability = capability
        self.home = base / "home"
        self.maildir = _make_maildir(self.home / "Maildir")
        files = _PreauthFiles(base, self.maildir, self.home, capability, namespace)
        self.argv, self.pop3_argv = files.argv, files.pop3_argv
        self.helper_argv, self.conf, self.log = files.helper_argv, files.conf, files.log

    def connect(self) -> TunnelIMAPClient:
        """An IMAPClient on ``argv`` (masked capabilities apply)."""
        return TunnelIMAPClient(self.argv)

    def pop3(self) -> TunnelPOP3:
        """A poplib client on ``pop3_argv`` with the missing greeting injected."""
        return TunnelPOP3(self.pop3_argv)


@pytest.fixture
def dovecot_preauth_factory() -> Iterator[Callable[..., DovecotPreauth]]:
    """``make(capability=None, namespace=None)``: a new, empty PREAUTH mailbox per call.

    ``capability`` replaces the advertised capabilities, e.g. "IMAP4rev1 IDLE LITERAL+" hides
    MOVE, UIDPLUS and CONDSTORE (Dovecot still accepts those commands: assert on what the
    client sent, not on a refusal).
    """
    require_dovecot()
    bases: list[Path] = []

    def make(capability: str | None = None, namespace: str | None = None) -> DovecotPreauth:
        bases.append(_make_base("mailrules-preauth-"))
        return DovecotPreauth(bases[-1], capability, namespace or DEFAULT_NAMESPACE)

    yield make
    for base in bases:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def dovecot_preauth(dovecot_preauth_factory: Callable[..., DovecotPreauth]) -> DovecotPreauth:
    return dovecot_preauth_factory()


# --- Daemon fixture ---------------------------------------------------------------------------


class _Certificate:
    """A throwaway self-signed certificate for CN=localhost, DNS:localhost, IP:127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        self.cert = directory / "cert.pem"
        self.key = directory / "key.pem"
        done = subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-sha256",
                "-keyout", str(self.key), "-out", str(self.cert),
                "-subj", "/CN=localhost/O=mailrules tests",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ],
            capture_output=True,
            timeout=30,
        )  # fmt: skip
        if done.returncode != 0:
            raise DovecotError(f"openssl could not make a certificate: {done.stderr.decode()}")
        self.key.chmod(0o600)
        der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        self.sha256 = "sha256:" + hashlib.sha256(der).hexdigest()


class _TokenServer:
    """Answers Dovecot's OAuth2 tokeninfo requests: ``token`` is valid for ``username``."""

    def __init__(self, token: str, username: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                valid = query.get("access_token") == [token]
                body = json.dumps(
                    {"active": True, "username": username, "scope": "mail"}
                    if valid
                    else {"error": "invalid_token"}
                ).encode()
                self.send_response(200 if valid else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


# Runs `dovecot -F` and stops it with SIGTERM when its stdin closes: when the fixture says so,
# and also when pytest dies without cleaning up, so an aborted run leaves no daemon behind.
# (PR_SET_PDEATHSIG does not survive Dovecot's start-up.) Exits with Dovecot's status.
_WATCHDOG = """\
exec 3<&0 </dev/null
"$1" -F -c "$2" &
pid=$!
{ read -r _ <&3; kill -TERM "$pid" 2>/dev/null; } &
watcher=$!
exec 3<&-
wait "$pid"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    try:
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _listener(name: str, port: int, tls: bool) -> str:
    ssl_line = "\n    ssl = yes" if tls else ""
    return f"""\
  inet_listener {name} {{
    address = 127.0.0.1
    port = {port}{ssl_line}
  }}
"""


class _Daemon:
    """One Dovecot master (``dovecot -F``) with its own dirs, ports, log and token server."""

    _instances = itertools.count(1)

    def __init__(
        self, base: Path, cert: _Certificate, capability: str | None, starttls: bool
    ) -> None:
        self.base, self.cert, self.capability, self.starttls = base, cert, capability, starttls
        self.log = base / "dovecot.log"
        self.conf = base / "dovecot.conf"
        self.home = base / "home" / USERNAME
        self.maildir = self.home / "Maildir"
        self.token = "tok-" + os.urandom(12).hex()
        self.instance = f"mailrules-test-{os.getpid()}-{next(self._instances)}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stale = itertools.count(1)
        for sub in ("run", "state", "home", "stale"):
            (base / sub).mkdir()
        (base / "users").write_text(f"{USERNAME}:{{PLAIN}}{PASSWORD}::::::\n")
        (base / "users").chmod(0o644)  # read by the auth process, which runs as nobody
        self.tokens = _TokenServer(self.token, USERNAME)
        (base / "oauth2.conf").write_text(
            f"tokeninfo_url = http://127.0.0.1:{self.tokens.port}/tokeninfo?access_token=\n"
            "username_attribute = username\n"
            "active_attribute = active\n"
            "active_value = true\n"
            "timeout_msecs = 5000\n"
        )
        (base / "oauth2.conf").chmod(0o644)
        self.fresh_mailbox()
        self.preauth = _PreauthFiles(base, self.maildir, self.home, None)

    def _config(self) -> str:
        b = self.base
        if self.starttls:
            dh = Path("/usr/share/dovecot/dh.pem")
            tls = (
                f"ssl = yes\nssl_cert = <{self.cert.cert}\nssl_key = <{self.cert.key}\n"
                + (f"ssl_dh = <{dh}\n" if dh.is_file() else "")
                + "ssl_min_protocol = TLSv1.2\n"
            )
        else:
            tls = "ssl = no\n"
        imap = _listener("imap", self.imap_port, False)
        pop3 = _listener("pop3", self.pop3_port, False)
        if self.imaps_port and self.pop3s_port:
            imap += _listener("imaps", self.imaps_port, True)
            pop3 += _listener("pop3s", self.pop3s_port, True)
        ids = _mail_ids() or (os.getuid(), os.getgid())
        masked = f"imap_capability = {self.capability}\n" if self.capability else ""
        return f"""\
# A private Dovecot for one pytest session; made by tests/dovecot.py.
# Reads nothing in /etc/dovecot and listens on 127.0.0.1 only.
protocols = imap pop3
listen = 127.0.0.1
base_dir = {b}/run
state_dir = {b}/state
instance_name = {self.instance}
log_path = {self.log}
{tls}disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {b}/users
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {b}/oauth2.conf
}}
userdb {{
  driver = static
  args = uid={ids[0]} gid={ids[1]} home={b}/home/%u
}}
{_mail_settings("maildir:~/Maildir")}mail_max_userip_connections = 100
{masked}# Failed logins would slow every later login from 127.0.0.1 by up to 15 s (auth penalty).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
{imap}}}
service pop3-login {{
{pop3}}}
"""

    def start(self) -> None:
        for attempt in range(3):
            ports = _free_ports(4)
            self.imap_port, self.pop3_port = ports[0], ports[1]
            self.imaps_port: int | None = ports[2] if self.starttls else None
            self.pop3s_port: int | None = ports[3] if self.starttls else None
            self.conf.write_text(self._config())
            self.log.write_text("")
            stderr = self.base / "dovecot.stderr"
            with stderr.open("wb") as err:
                self.proc = subprocess.Popen(
                    ["/bin/sh", "-c", _WATCHDOG, "dovecot-watchdog", str(DOVECOT), str(self.conf)],
                    stdin=subprocess.PIPE,
                    stdout=err,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, to kill stragglers
                )
            problem = self._wait_ready()
            if problem is None:
                return
            self.stop()
            if "Address already in use" not in self._logs() or attempt == 2:
                raise DovecotError(f"Dovecot did not start: {problem}\n{self._logs()}")

    def _wait_ready(self) -> str | None:
        assert self.proc is not None
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"dovecot exited with status {self.proc.returncode}"
            try:
                with socket.create_connection(("127.0.0.1", self.imap_port), timeout=1) as s:
                    if not s.recv(100).startswith(b"* OK"):
                        return "no IMAP greeting"
                for port in (self.pop3_port, self.imaps_port, self.pop3s_port):
                    if port is not None:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return None
            except OSError:
                time.sleep(0.05)
        return f"ports not accepting after {TIMEOUT:.0f} s"

    def _logs(self) -> str:
        parts = [f"config {self.conf}"]
        for path in (self.base / "dovecot.stderr", self.log):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-40:]
                parts.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def terminate(self) -> None:
        """Ask the watchdog to stop Dovecot (it sends SIGTERM once its stdin closes)."""
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def stop(self) -> None:
        """Stop the master; SIGKILL its process group if it lingers past 5 s."""
        if self.proc is None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.tokens.close()

    def fresh_mailbox(self) -> None:
        """Swap in an empty Maildir; sessions still open keep the old one, then it goes."""
        if self.home.exists():
            stale = self.base / "stale" / str(next(self._stale))
            self.home.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        _make_maildir(self.maildir)


class DovecotServer(MailboxHelpers):
    """A running Dovecot on 127.0.0.1 and this test's fresh mailbox on it.

    Ports: ``imap_port`` (STARTTLS offered), ``imaps_port``, ``pop3_port`` (STLS offered),
    ``pop3s_port``; with ``starttls=False`` the daemon has no TLS at all and both TLS ports
    are None. Log in with ``username``/``password`` or, over XOAUTH2/OAUTHBEARER, with
    ``token``. Trust ``ca_file`` (the self-signed certificate) or pin ``cert_sha256``.
    """

    host = "127.0.0.1"
    username = USERNAME
    password = PASSWORD

    def __init__(self, daemon: _Daemon) -> None:
        self.imap_port, self.imaps_port = daemon.imap_port, daemon.imaps_port
        self.pop3_port, self.pop3s_port = daemon.pop3_port, daemon.pop3s_port
        self.token = daemon.token
        self.ca_file = str(daemon.cert.cert)
        self.cert_sha256 = daemon.cert.sha256
        self.capability, self.starttls = daemon.capability, daemon.starttls
        self.maildir, self.conf, self.log = daemon.maildir, daemon.conf, daemon.log
        self.helper_argv = daemon.preauth.argv

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only ``ca_file``."""
        return ssl.create_default_context(cafile=self.ca_file)

    def connect(self, security: str = "starttls", *, login: bool = True) -> IMAPClient:
        """An IMAPClient: ``security`` is "starttls" (imap_port), "ssl" (imaps_port) or "plain"."""
        if security == "ssl":
            assert self.imaps_port is not None, "this variant has no IMAPS"
            client = IMAPClient(
                self.host, self.imaps_port, ssl_context=self.ssl_context(), timeout=TIMEOUT
            )
        else:
            client = IMAPClient(self.host, self.imap_port, ssl=False, timeout=TIMEOUT)
            if security == "starttls":
                client.starttls(self.ssl_context())
        if login:
            client.login(self.username, self.password)
        return client


class _DaemonPool:
    """Session-wide daemons, one per (capability, starttls), sharing one certificate."""

    def __init__(self) -> None:
        self.base = _make_base("mailrules-dovecot-")
        self._cert: _Certificate | None = None
        self._daemons: dict[tuple[str | None, bool], _Daemon | str] = {}

    def get(self, capability: str | None, starttls: bool) -> _Daemon:
        key = (capability, starttls)
        if key not in self._daemons:
            # A failure is remembered, so later tests fail at once with the same log.
            try:
                if self._cert is None:
                    self._cert = _Certificate(self.base)
                directory = self.base / f"daemon-{len(self._daemons) + 1}"
                directory.mkdir()
                daemon = _Daemon(directory, self._cert, capability, starttls)
                try:
                    daemon.start()
                except BaseException:
                    daemon.close()
                    raise
                self._daemons[key] = daemon
            except DovecotError as exc:
                self._daemons[key] = str(exc)
        found = self._daemons[key]
        if isinstance(found, str):
            raise DovecotError(found)
        return found

    def close(self) -> None:
        daemons = [d for d in self._daemons.values() if isinstance(d, _Daemon)]
        for daemon in daemons:
            daemon.terminate()  # all at once: each takes about a second to stop
        for daemon in daemons:
            daemon.close()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def _dovecot_daemons() -> Iterator[_DaemonPool]:
    pool = _DaemonPool()
    yield pool
    pool.close()


@pytest.fixture
def dovecot_server_factory(
    _dovecot_daemons: _DaemonPool,
) -> Callable[..., DovecotServer]:
    """``make(capability=None, starttls=True)``: a daemon of that variant, fresh mailbox.

    ``capability`` sets ``imap_capability`` (what IMAP advertises after login); with
    ``starttls=False`` the daemon runs with ``ssl = no``, so the plain ports offer no
    STARTTLS/STLS and there are no implicit-TLS ports. Asking twice for the same variant in
    one test returns the same server and mailbox.
    """
    require_dovecot(daemon=True)
    made: dict[tuple[str | None, bool], DovecotServer] = {}

    def make(*, capability: str | None = None, starttls: bool = True) -> DovecotServer:
        key = (capability, starttls)
        if key not in made:
            daemon = _dovecot_daemons.get(capability, starttls)
            daemon.fresh_mailbox()
            made[key] = DovecotServer(daemon)
        return made[key]

    return make


@pytest.fixture
def dovecot_server(dovecot_server_factory: Callable[..., DovecotServer]) -> DovecotServer:
    return dovecot_server_factory()


# --- Connection-cutting proxy ----------------------------------------------------------------


@dataclass
class _PartialLine:
    """The client's unfinished line: its first 200 bytes, and whether it ends in CR."""

    head: bytes = b""
    ends_in_cr: bool = False


class CuttingProxy:
    """Forward 127.0.0.1:``port`` to a target; cut both sides at the ``cut_after``-th client line.

    Lines are counted, across all connections, as client bytes ending in CRLF: a command
    line, but also each CRLF line inside an APPEND literal, an AUTHENTICATE response or IDLE's
    DONE, so N is a position in the byte stream rather than a command count. Run once with
    ``cut_after=None`` to learn how many lines a job sends (``lines_seen``), then cut at each
    position in turn.

    With ``deliver_last`` (the default) the N-th line reaches the server, the proxy waits for
    its answer (the tagged reply, or a line then 0.2 s of quiet, at most 5 s), drops it, and
    closes both sockets: the command ran but the client never heard. Otherwise the N-th line
    is dropped and both sides are closed at once. Only one cut happens; connections made
    afterwards (a reconnect) are relayed untouched.
    """

    def __init__(
        self, target: tuple[str, int], cut_after: int | None, deliver_last: bool = True
    ) -> None:
        if cut_after is not None and cut_after < 1:
            raise ValueError("cut_after counts lines from 1")
        self.host = "127.0.0.1"
        self.target = target
        self.cut_after = cut_after
        self.deliver_last = deliver_last
        self.lines: list[bytes] = []  # the first 200 bytes of each client line seen
        self.connections = 0
        self.cut_line: bytes | None = None
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server((self.host, 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)

    @property
    def lines_seen(self) -> int:
        with self._lock:
            return len(self.lines)

    @property
    def was_cut(self) -> bool:
        return self._cut.is_set()

    def wait_cut(self, timeout: float = 5.0) -> bool:
        return self._cut.wait(timeout)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="cutting-proxy")
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._sockets.append(client)
            self._spawn(self._relay, client)

    def _relay(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets.append(server)
        partial = _PartialLine()
        with contextlib.ExitStack() as closing:
            closing.callback(client.close)
            closing.callback(server.close)
            selector = selectors.DefaultSelector()
            closing.callback(selector.close)
            client.setblocking(True)
            server.settimeout(None)
            selector.register(client, selectors.EVENT_READ)
            selector.register(server, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    if not self._forward(key.fileobj, client, server, partial):  # type: ignore[arg-type]
                        return

    def _forward(
        self,
        sock: socket.socket,
        client: socket.socket,
        server: socket.socket,
        partial: _PartialLine,
    ) -> bool:
        """Move one chunk; False when the connection is over (EOF, error or the cut)."""
        try:
            data = sock.recv(65536)
            if not data:
                return False
            if sock is server:
                client.sendall(data)
                return True
            cut_at = self._count(data, partial)
            if cut_at is None:
                server.sendall(data)
                return True
            line_end, line_start = cut_at
            if self.deliver_last:
                server.sendall(data[:line_end])
                self._await_answer(server)
            else:
                server.sendall(data[:line_start])
        except OSError:
            return False
        self._cut.set()
        return False

    def _count(self, data: bytes, partial: _PartialLine) -> tuple[int, int] | None:
        """Record the CRLF lines in ``data``; return (end, start) of the cutting line, if any."""
        ends = [1] if partial.ends_in_cr and data.startswith(b"\n") else []
        position = ends[0] if ends else 0
        while (found := data.find(b"\r\n", position)) >= 0:
            ends.append(found + 2)
            position = found + 2
        start = 0
        with self._lock:
            for end in ends:
                line = (partial.head + data[start:end])[:200]
                partial.head = b""
                self.lines.append(line)
                if not self._cut.is_set() and self._cuts_at(line):
                    self.cut_line = line
                    return end, start
                start = end
        partial.head = (partial.head + data[start:])[:200]
        partial.ends_in_cr = data.endswith(b"\r")
        return None

    def _cuts_at(self, line: bytes) -> bool:
        """Whether the connection is cut at this client line (the last one in ``lines``)."""
        return len(self.lines) == self.cut_after

    def _await_answer(self, server: socket.socket) -> None:
        """Read and drop the server's answer to the cutting line; see the class docstring."""
        tag = (self.cut_line or b"").split(b" ", 1)[0]
        tagged = re.compile(rb"(?m)^" + re.escape(tag) + rb" (OK|NO|BAD)\b") if tag else None
        received = b""
        deadline = time.monotonic() + 5
        idle = 1.0  # silence this long with nothing received: it waits for more (a literal)
        while (remaining := deadline - time.monotonic()) > 0:
            server.settimeout(min(idle, remaining))
            try:
                data = server.recv(65536)
            except OSError:  # including the idle timeout
                return
            if not data:
                return
            received += data
            if tagged and tagged.search(received):
                return
            if b"\r\n" in received:
                idle = 0.2

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)
        with self._lock:
            for sock in self._sockets:
                sock.close()


@pytest.fixture
def cutting_proxy() -> Iterator[Callable[..., CuttingProxy]]:
    """``make(target_port, cut_after=N, *, host="127.0.0.1", deliver_last=True)``."""
    proxies: list[CuttingProxy] = []

    def make(
        target_port: int,
        cut_after: int | None,
        *,
        host: str = "127.0.0.1",
        deliver_last: bool = True,
    ) -> CuttingProxy:
        proxies.append(CuttingProxy((host, target_port), cut_after, deliver_last))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()

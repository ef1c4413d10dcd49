"""POP3 servers for the tests: Dovecot (over a pipe, or as a daemon with STLS) and a quirky one.

Everything listens on 127.0.0.1 only. Dovecot runs with its own base_dir, state_dir and
instance name, so it never touches a system Dovecot; mail is owned by ``nobody`` when
the tests run as root, because Dovecot refuses mail access as root.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from pathlib import Path

POP3_BINARY = "/usr/lib/dovecot/pop3"
HAVE_DOVECOT = bool(shutil.which("doveconf") and shutil.which("dovecot")) and os.path.exists(
    POP3_BINARY
)
MISSING = "Dovecot is not installed (Debian: apt-get install dovecot-pop3d)"
ROOT = os.geteuid() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stuffed(message: bytes) -> bytes:
    """A message (LF line ends) as POP3 carries it: CRLF, dot-stuffed (RFC 1939 s3)."""
    lines = message.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." if ln.startswith(b".") else b"") + ln + b"\r\n" for ln in lines)


class DovecotBox:
    """A Maildir served by Dovecot: over a pipe (``tunnel``) or by a daemon (``start``)."""

    def __init__(self) -> None:
        # Not pytest's tmp_path: its parents are mode 700, which 'nobody' cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix="mailrules-pop3-"))
        self.dir.chmod(0o755)
        self.maildir = self.dir / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        self.daemon: subprocess.Popen[bytes] | None = None
        self._n = 0
        self.conf = self.dir / "dovecot.conf"
        self._write_conf("")

    def _write_conf(self, extra: str) -> None:
        users = ""
        if ROOT:
            users = (
                "mail_uid = nobody\nmail_gid = nogroup\n"
                "default_login_user = nobody\ndefault_internal_user = nobody\n"
            )
        self.conf.write_text(
            f"base_dir = {self.dir}/run\nstate_dir = {self.dir}/state\n"
            f"instance_name = mailrules-test-{self.dir.name}\n"
            f"log_path = {self.dir}/dovecot.log\n"
            f"mail_location = maildir:{self.maildir}\n"
            "first_valid_uid = 1\nfirst_valid_gid = 1\n" + users + "protocols = pop3\n" + extra
        )
        for sub in ("run", "state"):
            (self.dir / sub).mkdir(exist_ok=True)

    def _own(self) -> None:
        if ROOT:
            subprocess.run(["chown", "-R", "nobody:nogroup", str(self.maildir)], check=True)

    def reset(self, messages: list[bytes]) -> None:
        """Start over with a new Maildir holding just these messages."""
        shutil.rmtree(self.maildir)
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        for m in messages:
            self.add(m)

    def add(self, message: bytes) -> None:
        self._n += 1
        (self.maildir / "new" / f"{1700000000 + self._n}.M{self._n}P1.test").write_bytes(message)
        self._own()

    def on_server(self) -> list[bytes]:
        files = [p for sub in ("new", "cur") for p in (self.maildir / sub).iterdir()]
        return sorted(p.read_bytes() for p in files)

    def tunnel(self) -> list[str]:
        return [
            "env",
            f"USER={'nobody' if ROOT else os.environ.get('USER', 'me')}",
            f"HOME={self.dir}",
            "doveconf",
            "-c",
            str(self.conf),
            "-e",
            POP3_BINARY,
        ]

    def start(self) -> dict[str, object]:
        """Run Dovecot as a daemon: STLS on one port, implicit TLS on another, USER/PASS."""
        ssl_dir = self.dir / "ssl"
        ssl_dir.mkdir()
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-keyout", str(ssl_dir / "key.pem"), "-out", str(ssl_dir / "cert.pem"),
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", str(ssl_dir / "cert.pem"), "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        (self.dir / "users").write_text("me:{PLAIN}secret::::::\n")
        (self.dir / "users").chmod(0o644)
        plain, implicit = free_port(), free_port()
        self._write_conf(
            f"listen = 127.0.0.1\nssl = yes\nssl_cert = <{ssl_dir}/cert.pem\n"
            f"ssl_key = <{ssl_dir}/key.pem\nssl_min_protocol = TLSv1.2\n"
            "disable_plaintext_auth = no\nauth_mechanisms = plain login apop\n"
            "passdb {\n  driver = passwd-file\n"
            f"  args = scheme=PLAIN username_format=%u {self.dir}/users\n}}\n"
            "userdb {\n  driver = static\n"
            f"  args = uid={'nobody' if ROOT else os.getuid()} "
            f"gid={'nogroup' if ROOT else os.getgid()} home={self.dir}\n}}\n"
            "mail_max_userip_connections = 50\n"
            "service pop3-login {\n"
            f"  inet_listener pop3 {{\n    address = 127.0.0.1\n    port = {plain}\n  }}\n"
            f"  inet_listener pop3s {{\n    address = 127.0.0.1\n    port = {implicit}\n"
            "    ssl = yes\n  }\n}\n"
            "service anvil {\n  chroot =\n}\nservice stats {\n  chroot =\n}\n"
        )
        self._own()
        self.daemon = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", plain), 1):
                break
            if time.monotonic() > deadline or self.daemon.poll() is not None:
                log = self.dir / "dovecot.log"
                raise RuntimeError(
                    f"dovecot did not start: {log.read_text() if log.exists() else ''}"
                )
            time.sleep(0.05)
        return {
            "port": plain,
            "tls_port": implicit,
            "ca_file": str(ssl_dir / "cert.pem"),
            "fingerprint": "sha256:" + hashlib.sha256(der).hexdigest(),
        }

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.terminate()
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Quirky(socketserver.ThreadingTCPServer):
    """A POP3 server with the faults of small servers met in the wild.

    No CAPA and no UIDL (both answer -ERR), TOP sends the whole message whatever the
    line count, DELE deletes at once and renumbers the rest, and ``drop_retr`` makes
    the next RETR of that message number stop half-way and close the connection.
    ``uidl_by_number`` makes UIDL answer each message's number, as servers that reuse a
    UIDL once its message is deleted do. ``echo_auth`` refuses every AUTH, quoting what
    the client sent, as a careless server's error does.
    USER/PASS, APOP and AUTH XOAUTH2 are accepted for user ``me``.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, messages: list[bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _QuirkyHandler)
        self.messages = list(messages)
        self.drop_retr: int | None = None
        self.uidl_by_number = False
        self.echo_auth = False
        self.commands: list[str] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _QuirkyHandler(socketserver.StreamRequestHandler):
    server: Quirky

    def handle(self) -> None:
        stamp = b"<1896.697170952@quirky.example>"
        self.wfile.write(b"+OK quirky POP3 ready " + stamp + b"\r\n")
        while line := self.rfile.readline(65536):
            cmd, *args = line.decode().split() or [""]
            cmd = cmd.upper()
            self.server.commands.append(cmd)
            msgs = self.server.messages
            n = int(args[0]) if args and args[0].isdigit() else 0
            if cmd == "AUTH" and self.server.echo_auth:
                self.err(f"cannot decode {' '.join(args)}")
            elif cmd in ("USER", "PASS", "NOOP", "RSET"):
                self.ok()
            elif cmd == "APOP":
                good = hashlib.md5(stamp + b"secret").hexdigest()
                self.reply(args == ["me", good], "bad APOP digest")
            elif cmd == "AUTH" and args[:1] == ["XOAUTH2"]:
                want = b"user=me\x01auth=Bearer tok-123\x01\x01"
                self.reply(base64.b64decode(args[1]) == want, "bad token")
            elif cmd == "STAT":
                self.ok(f"{len(msgs)} {sum(len(stuffed(m)) for m in msgs)}")
            elif cmd == "LIST":
                sizes = [(i, len(m) + m.count(b"\n")) for i, m in enumerate(msgs, 1)]
                self.ok(body="".join(f"{i} {size}\r\n" for i, size in sizes).encode())
            elif cmd == "UIDL" and self.server.uidl_by_number and not args:
                self.ok(body="".join(f"{i} {i}\r\n" for i in range(1, len(msgs) + 1)).encode())
            elif cmd in ("RETR", "TOP") and 1 <= n <= len(msgs):
                data = stuffed(msgs[n - 1])
                if cmd == "RETR" and self.server.drop_retr == n:
                    self.server.drop_retr = None
                    self.wfile.write(b"+OK\r\n" + data[: len(data) // 2])
                    return
                self.ok(body=data)  # TOP ignores its line count
            elif cmd == "DELE" and 1 <= n <= len(msgs):
                del msgs[n - 1]  # at once, renumbering the rest: not what RFC 1939 says
                self.ok()
            elif cmd == "QUIT":
                self.ok()
                return
            else:
                self.err(f"unknown command {cmd!r}")

    def ok(self, text: str = "", body: bytes | None = None) -> None:
        self.wfile.write(f"+OK {text}".rstrip().encode() + b"\r\n")
        if body is not None:
            self.wfile.write(body + b".\r\n")

    def reply(self, good: bool, problem: str) -> None:
        if good:
            self.ok()
        else:
            self.err(problem)

    def err(self, text: str) -> None:
        self.wfile.write(f"-ERR {text}\r\n".encode())

"""The IMAP side of the quick poll (``mailrules.quick_poll``): one STATUS per folder.

The record's marker lists the watched folders and their names on the server. A quick
poll connects as the full run does (tunnel, TLS or a required STARTTLS, certificates
verified, PREAUTH only from a tunnel), logs in (LOGIN, or XOAUTH2/OAUTHBEARER with a
fresh token), sends one ``STATUS (UIDNEXT UIDVALIDITY)`` per folder, all pipelined
(RFC 3501 s6.3.10, RFC 2971-free: nothing but STATUS is asked), and logs out. A folder
has nothing new when its UIDVALIDITY is the one in the state and UIDNEXT - 1 is at most
the last UID handled there, exactly the test the full run makes before it SELECTs.

This speaks only the few lines it needs. Whatever it does not understand (a literal in
a response, a name it cannot quote, a refused command) ends the quick poll with False,
and the full run, with IMAPClient, does the work and reports any error properly.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import socket
from types import SimpleNamespace

from mailrules.auth import SecretSource
from mailrules.errors import MailrulesError
from mailrules.quick_poll import Question
from mailrules.sources import mutf7
from mailrules.transport import tcp, tls
from mailrules.transport.tunnel import Tunnel

log = logging.getLogger("mailrules.quick_poll")
_STATUS = re.compile(rb"^\* STATUS (.+) \(([^()]*)\)\s*$", re.IGNORECASE)
_QUOTABLE = re.compile(r"^[\x20-\x7e]*$")


class _NotUnderstood(Exception):
    """An answer the quick poll does not handle: the full run will."""


def unchanged(question: Question) -> bool:
    """True if no watched folder of the account holds a message newer than the state's."""
    account = question.account
    folders: dict[str, str] = json.loads(question.marker)  # folder -> its name on the server
    rows = question.db.execute(
        "SELECT folder, validity, last_uid FROM folders WHERE account=?", (account,)
    ).fetchall()
    known = {folder: (validity, last) for folder, validity, last in rows}
    if any(known.get(f, (None, None))[1] is None for f in folders):
        return False  # a folder never polled, or one whose first run is unfinished
    session = _Session(account, question)
    try:
        status = session.status(list(folders.values()))
    except (_NotUnderstood, MailrulesError, OSError, ValueError) as exc:
        log.debug("%s: quick poll not possible (%s); doing a full run", account, exc)
        return False
    finally:
        session.close()
    for folder, name in folders.items():
        validity, last = known[folder]
        uidnext, uidvalidity = status[name]
        if uidvalidity == 0 or str(uidvalidity) != validity or uidnext - 1 > last:
            log.debug("%s: %s has something new; doing a full run", account, folder)
            return False
    return True


class _Session:
    """One short IMAP conversation: connect, log in, STATUS, LOGOUT."""

    def __init__(self, account: str, question: Question) -> None:
        self.question = question
        saved = question.settings
        self.settings = SimpleNamespace(**saved["imap"], password=None)  # read at login
        self.timeout = float(saved["timeout"])
        self.label = f"{account} ({self.settings.host or 'tunnel'})"
        self.sock: socket.socket | None = None
        self.tunnel: Tunnel | None = None
        self.buffer = b""
        self.tags = 0

    def status(self, names: list[str]) -> dict[str, tuple[int, int]]:
        """name -> (UIDNEXT, UIDVALIDITY) for each folder name on the server."""
        preauth = self._connect()
        if not preauth:
            self._login()
        encoded = {mutf7.encode(name): name for name in names}
        tags = [self._send(f"STATUS {_quote(server)} (UIDNEXT UIDVALIDITY)") for server in encoded]
        untagged = self._finish(tags)
        found: dict[str, tuple[int, int]] = {}
        for line in untagged:
            match = _STATUS.match(line)
            if not match:
                continue
            name = _unquote(match.group(1).decode("utf-8"))
            items = match.group(2).upper().split()
            values = dict(zip(items[::2], items[1::2], strict=True))
            if name in encoded:
                found[encoded[name]] = (int(values[b"UIDNEXT"]), int(values[b"UIDVALIDITY"]))
        if len(found) != len(encoded):
            raise _NotUnderstood("not every folder's STATUS was understood")
        with contextlib.suppress(_NotUnderstood, OSError):
            self._finish([self._send("LOGOUT")])
        return found

    # -- connection and login -------------------------------------------------------------

    def _connect(self) -> bool:
        """Connect and read the greeting; True if it is PREAUTH (from a tunnel only)."""
        s = self.settings
        if s.tunnel:
            self.tunnel = Tunnel(list(s.tunnel), self.label)
            self.sock = self.tunnel.sock
            self.sock.settimeout(self.timeout)
        else:
            port = s.port or (993 if s.security == "tls" else 143)
            self.sock = tcp.connect(s.host, port, self.timeout, self.label)
            if s.security == "tls":
                self.sock = self._tls()
        greeting = self._line().upper()
        preauth = greeting.startswith(b"* PREAUTH")
        if not (greeting.startswith(b"* OK") or (preauth and s.tunnel)):
            raise _NotUnderstood(f"greeting {greeting[:40]!r}")
        if not s.tunnel and s.security == "starttls":
            self._finish([self._send("STARTTLS")])
            self.sock = self._tls()
        return preauth

    def _tls(self) -> socket.socket:
        s = self.settings
        assert self.sock is not None
        context = tls.make_context(s.ca_file, s.fingerprint)
        return tls.wrap(self.sock, context, s.host, s.fingerprint, self.label, s.ca_file)

    def _login(self) -> None:
        s, user = self.settings, self.settings.username or ""
        if s.oauth2_token_command:
            token = SecretSource(command=tuple(s.oauth2_token_command)).read(self.label)
            if s.oauth2_mechanism == "oauthbearer":
                response = f"n,a={user},\x01auth=Bearer {token}\x01\x01"
                mechanism = "OAUTHBEARER"
            else:
                response = f"user={user}\x01auth=Bearer {token}\x01\x01"
                mechanism = "XOAUTH2"
            initial = base64.b64encode(response.encode()).decode()
            self._finish([self._send(f"AUTHENTICATE {mechanism} {initial}")])
            return
        s.password = self.question.password()
        password = SecretSource.password_of(s).read(self.label)
        self._finish([self._send(f"LOGIN {_quote(user)} {_quote(password)}")])

    # -- lines ----------------------------------------------------------------------------

    def _send(self, command: str) -> bytes:
        assert self.sock is not None
        self.tags += 1
        tag = b"q%d" % self.tags
        self.sock.sendall(tag + b" " + command.encode("ascii") + b"\r\n")
        return tag

    def _finish(self, tags: list[bytes]) -> list[bytes]:
        """Read until every tag is answered OK; return the untagged lines."""
        waiting, untagged = set(tags), []
        while waiting:
            line = self._line()
            if line.startswith(b"+"):  # a SASL failure's challenge: answer it, then NO follows
                assert self.sock is not None
                self.sock.sendall(b"\r\n")
                continue
            tag, _, rest = line.partition(b" ")
            if tag in waiting:
                if not rest.upper().startswith(b"OK"):
                    raise _NotUnderstood(f"{rest.split(b' ', 1)[0]!r} to a command")
                waiting.discard(tag)
            elif tag == b"*":
                untagged.append(line)
            else:
                raise _NotUnderstood(f"unexpected line {line[:40]!r}")
        return untagged

    def _line(self) -> bytes:
        assert self.sock is not None
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > 65536:
                raise _NotUnderstood("a line longer than 64 KiB")
            data = self.sock.recv(65536)
            if not data:
                raise _NotUnderstood("the server closed the connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        if line.endswith(b"}"):
            raise _NotUnderstood("a literal in a response")
        return line

    def close(self) -> None:
        if self.tunnel is not None:
            self.tunnel.close()
        elif self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()


def _quote(text: str) -> str:
    """An IMAP quoted string, or _NotUnderstood for what needs a literal."""
    if not _QUOTABLE.match(text):
        raise _NotUnderstood("a name or password that needs an IMAP literal")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(text: str) -> str:
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text

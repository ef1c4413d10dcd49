"""The POP3 protocol client: stdlib poplib behind an adapter that fixes what bites in practice.

poplib is kept for the commands (USER, PASS, APOP, CAPA, UIDL, LIST, TOP, RETR, DELE,
QUIT); this adapter replaces its reading and connecting:

* Lines may be up to 1 MiB (poplib stops at 2,048 octets, and real mail has longer
  header lines); a multi-line response is read in blocks and turned into the message
  as a Maildir holds it in two C-speed passes (CRLF -> LF, then dot-unstuffing:
  RFC 1939 s3, a line starting with "." lost its first octet).
* The socket is given, already connected by ``mailrules.transport`` (TCP with
  keepalive, implicit TLS, or a tunnel's socketpair), so timeouts work on every
  transport. STLS upgrades with the caller's verifying context (RFC 2595).
* ``AUTH PLAIN`` and ``AUTH XOAUTH2`` (RFC 5034 initial response), which poplib lacks.
* Pipelining (RFC 2449 PIPELINING): ``fetch_many`` sends a window of commands before
  reading their answers, so a download is not one round trip per message.

Errors: a ``-ERR`` answer raises ``poplib.error_proto`` with the server's text; a
response that breaks the protocol raises ``ProtocolError`` (also an error_proto); a
closed connection raises ``ConnectionLost``. The caller ends the session on any of
them without QUIT, so nothing marked for deletion is deleted.
"""

from __future__ import annotations

import base64
import poplib
import socket
import ssl
from collections.abc import Iterator

MAX_LINE = 1 << 20  # a status or listing line; message bodies have no line limit
_READ = 1 << 18
WINDOW = 64  # pipelined commands in flight


class ProtocolError(poplib.error_proto):
    """The server's response does not follow the protocol (too long, unterminated)."""


class ConnectionLost(OSError):
    """The server (or the tunnel command) closed the connection."""


class Session(poplib.POP3):
    """One POP3 session over a connected socket, starting with the server's greeting."""

    def __init__(self, sock: socket.socket, host: str = "") -> None:
        self.host = host
        self.port = 0
        self._tls_established = False
        self._debugging = 0
        self.sock = sock
        self.file = None  # poplib's reader is replaced by _buf
        self._buf = bytearray()
        self._eol = b"\r\n"
        self._saw_crlf = True
        line, _ = self._getline()
        if not self._saw_crlf:  # a server that ends lines with LF alone
            self._eol = b"\n"
        if not line.startswith(b"+"):
            raise poplib.error_proto(line)
        self.welcome = line
        self.caps: dict[str, list[str]] | None = None

    # -- reading ----------------------------------------------------------------------

    def _fill(self) -> None:
        data = self.sock.recv(_READ)
        if not data:
            raise ConnectionLost("the server closed the connection")
        self._buf += data

    def _getline(self) -> tuple[bytes, int]:
        buf = self._buf
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end >= 0:
                break
            if len(buf) > MAX_LINE:
                raise ProtocolError(f"a response line is longer than {MAX_LINE} octets")
            start = len(buf)
            self._fill()
        raw = bytes(buf[: end + 1])
        del buf[: end + 1]
        self._saw_crlf = raw.endswith(b"\r\n")
        return (raw[:-2] if self._saw_crlf else raw[:-1]), len(raw)

    def read_body(self) -> bytes:
        """The rest of a multi-line response: dot-unstuffed, with LF line ends."""
        buf, eol = self._buf, self._eol
        first = b"." + eol
        term = eol + first
        scanned = 0
        while True:
            if len(buf) >= len(first):
                if buf.startswith(first):
                    end, consumed = 0, len(first)
                    break
                found = buf.find(term, max(0, scanned - len(term)))
                if found >= 0:
                    end, consumed = found + len(eol), found + len(term)
                    break
                scanned = len(buf)
            self._fill()
        body = bytes(buf[:end])
        del buf[:consumed]
        if eol == b"\r\n":
            body = body.replace(b"\r\n", b"\n")
        if body.startswith(b".") or b"\n." in body:
            body = (b"\n" + body).replace(b"\n.", b"\n")[1:]
        return body

    def _getlongresp(self) -> tuple[bytes, list[bytes], int]:
        resp = self._getresp()
        body = self.read_body()
        lines = body.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        return resp, lines, len(body)

    # -- commands poplib lacks ------------------------------------------------------------

    def capabilities(self) -> dict[str, list[str]] | None:
        """CAPA (RFC 2449) as {NAME: [args]}, or None when the server does not know CAPA."""
        try:
            _, lines, _ = self._longcmd("CAPA")
        except ProtocolError:
            raise
        except poplib.error_proto:  # -ERR: a server older than RFC 2449
            self.caps = None
            return None
        caps = {}
        for line in lines:
            words = line.decode("ascii", "replace").split()
            if words:
                caps[words[0].upper()] = words[1:]
        self.caps = caps
        return caps

    def has(self, name: str) -> bool:
        return self.caps is not None and name in self.caps

    def starttls(self) -> socket.socket:
        """Send STLS; return the plain socket, to be wrapped by the caller on +OK."""
        self._shortcmd("STLS")
        if self._buf:
            raise ProtocolError("the server sent data after STLS before the TLS handshake")
        return self.sock

    def use_socket(self, sock: socket.socket) -> None:
        self.sock = sock
        self._tls_established = isinstance(sock, ssl.SSLSocket)

    def auth_plain(self, user: str, password: str) -> bytes:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return self._auth("PLAIN", token)

    def auth_xoauth2(self, user: str, access_token: str) -> bytes:
        raw = f"user={user}\x01auth=Bearer {access_token}\x01\x01"
        return self._auth("XOAUTH2", base64.b64encode(raw.encode()).decode())

    def _auth(self, mechanism: str, initial: str) -> bytes:
        self._putcmd(f"AUTH {mechanism} {initial}")
        line, _ = self._getline()
        if line.startswith(b"+ ") or line == b"+":
            # A challenge instead of +OK: the server explains the failure (XOAUTH2 sends
            # a JSON error); an empty answer ends the exchange with -ERR.
            self._putcmd("")
            line, _ = self._getline()
        if not line.startswith(b"+OK"):
            raise poplib.error_proto(line)
        return line

    # -- pipelined retrieval ---------------------------------------------------------------

    def fetch_many(self, commands: list[str]) -> Iterator[tuple[bytes, bytes]]:
        """(status line, body) for each multi-line command, pipelined when offered.

        A ``-ERR`` answer raises error_proto when it is read, after the answers before it
        were yielded.
        """
        window = WINDOW if self.has("PIPELINING") else 1
        sent = 0
        for i in range(len(commands)):
            while sent < len(commands) and sent < i + window:
                stop = min(len(commands), i + window)
                self.sock.sendall(b"".join(c.encode() + b"\r\n" for c in commands[sent:stop]))
                sent = stop
            status = self._getresp()
            yield status, self.read_body()

    def close(self) -> None:
        try:
            if self.sock is not None:
                self.sock.close()
        finally:
            self.sock = None

"""A TCP proxy that records what the client sends and what the server answers, and can cut.

``RecordingProxy`` extends tests/dovecot.py's ``CuttingProxy``: besides cutting at the N-th
client line it can cut at the first client line ``cut_when`` accepts (say, the first
``UID MOVE``: with two connections the line count is not the same from run to run), and it
keeps the server's tagged answers, so a test can say which command a server refused.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from tests.dovecot import CuttingProxy, _PartialLine

_TAGGED = re.compile(rb"^([A-Za-z0-9.]+) (OK|NO|BAD)\b[^\r\n]*", re.MULTILINE)
_LITERAL = re.compile(rb"\{(\d+)(\+?)\}$")
_COMMAND = re.compile(rb"[A-Z]{4}[0-9]+ [A-Z]+[ \r]")


def _sent(data: bytes, position: int, literal: re.Match[bytes]) -> bool:
    """Whether the client sent a literal's octets. A synchronizing literal (``{n}``) waits
    for the server's ``+``; when the server refuses the command instead (a tagged NO or
    BAD), the client sends no octets, and its next command begins right there."""
    return bool(literal.group(2)) or not _COMMAND.match(data, position)


class RecordingProxy(CuttingProxy):
    """Forward 127.0.0.1:``port`` to ``target``, recording; cut as ``CuttingProxy`` does."""

    def __init__(
        self,
        target: tuple[str, int],
        cut_after: int | None = None,
        *,
        cut_when: Callable[[bytes], bool] | None = None,
        deliver_last: bool = True,
    ) -> None:
        self.cut_when = cut_when
        self.answers: list[bytes] = []  # tagged server lines: b"A12 BAD ..."
        self.raw: dict[int, list[bytes]] = {}  # what the client sent, per connection
        super().__init__(target, cut_after, deliver_last)

    def _forward(self, sock, client, server, partial: _PartialLine) -> bool:  # type: ignore[override]
        if sock is server:
            try:
                data = sock.recv(65536)
            except OSError:
                return False
            if not data:
                return False
            with self._lock:
                self.answers.extend(m.group(0)[:300] for m in _TAGGED.finditer(data))
            try:
                client.sendall(data)
            except OSError:
                return False
            return True
        return super()._forward(sock, client, server, partial)

    def _count(self, data: bytes, partial: _PartialLine) -> tuple[int, int] | None:
        with self._lock:
            stream = getattr(partial, "stream", None)
            if stream is None:  # a new connection
                stream = partial.stream = len(self.raw)  # type: ignore[attr-defined]
            self.raw.setdefault(stream, []).append(data)
        return super()._count(data, partial)

    def _cuts_at(self, line: bytes) -> bool:
        """At the first line ``cut_when`` accepts, else as ``CuttingProxy`` counts."""
        return super()._cuts_at(line) if self.cut_when is None else self.cut_when(line)

    # What a test asserts on.

    def client_streams(self) -> list[bytes]:
        """What the client sent on each connection, connections in the order they began."""
        with self._lock:
            return [b"".join(chunks) for chunks in self.raw.values()]

    def commands(self) -> list[str]:
        """The verb of each command line, ``UID`` joined to its command: ``UID MOVE``."""
        out = []
        for line in self.command_lines():
            words = line.decode("latin-1").split()
            if len(words) >= 2:
                verb = words[1].upper()
                out.append(f"UID {words[2].upper()}" if verb == "UID" and len(words) > 2 else verb)
        return out

    def command_lines(self) -> list[bytes]:
        """Client lines that begin a command (not literal data, not DONE or SASL lines)."""
        return [line for data in self.client_streams() for line in _command_lines(data)]

    def literals(self, verb: bytes = b"SEARCH") -> list[bytes]:
        """The literal octets sent in commands whose line contains ``verb``."""
        return [lit for data in self.client_streams() for lit in _literals(data, verb)]

    def refused(self) -> list[bytes]:
        """The server's tagged NO and BAD answers."""
        with self._lock:
            return [a for a in self.answers if re.match(rb"^\S+ (NO|BAD)", a)]


def _command_lines(data: bytes) -> list[bytes]:
    """The lines of one connection's client stream that begin a command."""
    lines, position = [], 0
    while (end := data.find(b"\r\n", position)) >= 0:
        line = data[position:end]
        lines.append(line)
        position = end + 2
        literal = _LITERAL.search(line)
        while literal and _sent(data, position, literal):
            position += int(literal.group(1))  # its octets; the same command goes on after them
            end = data.find(b"\r\n", position)
            if end < 0:
                break
            literal = _LITERAL.search(data[position:end])
            position = end + 2
    return [line for line in lines if re.match(rb"^[A-Za-z0-9.]+ [A-Za-z]", line)]


def _literals(data: bytes, verb: bytes) -> list[bytes]:
    """The literals of one connection's commands whose first line contains ``verb``."""
    out, position = [], 0
    while (end := data.find(b"\r\n", position)) >= 0:
        line = data[position:end]
        wanted = verb in line.upper()
        position = end + 2
        literal = _LITERAL.search(line)
        while literal and _sent(data, position, literal):
            size = int(literal.group(1))
            if wanted:
                out.append(data[position : position + size])
            position += size
            end = data.find(b"\r\n", position)
            if end < 0:
                break
            literal = _LITERAL.search(data[position:end])
            position = end + 2
    return out


@pytest.fixture
def recording_proxy() -> Iterator[Callable[..., RecordingProxy]]:
    """``make(port, *, cut_after=None, cut_when=None, deliver_last=True)`` to 127.0.0.1."""
    proxies: list[RecordingProxy] = []

    def make(port: int, **options: object) -> RecordingProxy:
        proxies.append(RecordingProxy(("127.0.0.1", port), **options))  # type: ignore[arg-type]
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()

"""Header FETCH as a stream: pipelined commands, a lean parser, a message at a time.

A full pass reads the headers of thousands of messages. IMAPClient reads a whole FETCH
response before parsing any of it, with a general-purpose lexer; here the commands for
every UID set are sent at once (RFC 3501 s5.5 allows pipelining FETCH), and each
``* n FETCH (...)`` response is parsed as it arrives, by a parser for exactly the
grammar FETCH answers use (RFC 3501 s9: atoms, numbers, NIL, quoted strings, literals,
parenthesized lists, and ``BODY[section]<origin>`` names). The rules decide on one
message while the server is still sending the next ones.

Untagged responses other than FETCH (EXISTS, EXPUNGE, FLAGS, OK) are skipped, as is a
FETCH without a UID (an unsolicited flag update). Anything this parser does not
understand raises ``FetchError``, and the caller drops the connection: the stream's
position is then unknown, and nothing has been acted on yet.
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

_TOKEN = re.compile(
    rb' *(?:(?P<open>\()|(?P<close>\))|"(?P<quoted>(?:[^"\\]|\\.)*)"'
    rb"|~?\{(?P<literal>\d+)\}\r\n"
    rb'|(?P<atom>[^ ()"{\r\n\[\]]+(?:\[[^\]]*\](?:<\d+>)?)?))',
    re.DOTALL,
)
_FETCH = re.compile(rb"\* \d+ FETCH \(", re.IGNORECASE)
_LITERAL_END = re.compile(rb"\{(\d+)\}\r\n$")
_UNESCAPE = re.compile(rb"\\(.)")
_MONTHS = {
    m: i + 1 for i, m in enumerate(b"JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())
}
_DATE = re.compile(rb"^ ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$")

Value = bytes | int | None | tuple["Value", ...]
Item = dict[bytes, object]


class FetchError(Exception):
    """The server refused the FETCH, closed the connection, or sent what is not FETCH."""


def fetch_stream(
    imap: imaplib.IMAP4, uid_sets: list[str], items: str, tag_prefix: bytes
) -> Iterator[tuple[int, Item]]:
    """Send ``UID FETCH <set> (<items>)`` for every set, then yield (uid, item) as they come.

    ``imap`` is the connection's imaplib object (IMAPClient's ``_imap``); its own tag
    bookkeeping is not involved, since every line up to the last tagged answer is read
    here. Keys are upper-cased (``UID``, ``FLAGS``, ``RFC822.SIZE``, ``INTERNALDATE``,
    ``BODY[HEADER.FIELDS (...)]``); INTERNALDATE becomes an aware datetime.
    """
    tags = [tag_prefix + b"%d" % n for n in range(len(uid_sets))]
    imap.send(
        b"".join(
            b"%s UID FETCH %s (%s)\r\n" % (tag, uids.encode("ascii"), items.encode("ascii"))
            for tag, uids in zip(tags, uid_sets, strict=True)
        )
    )
    waiting = list(tags)
    while waiting:
        response = read_response(imap)
        if response.startswith(b"* "):
            match = _FETCH.match(response)
            if match:
                item = _items(response, match.end())
                uid = item.get(b"UID")
                if isinstance(uid, int):
                    yield uid, item
            elif response[2:5].upper() == b"BYE":
                raise FetchError(f"the server ended the session: {_text(response)}")
            continue
        tag, _, rest = response.partition(b" ")
        if tag != waiting[0]:
            raise FetchError(f"unexpected response {_text(response)}")
        if not rest.upper().startswith(b"OK"):
            raise FetchError(f"the server refused FETCH: {_text(rest)}")
        waiting.pop(0)


def read_response(imap: imaplib.IMAP4) -> bytes:
    """One whole response line, literals included, exactly as sent."""
    line = imap.readline()
    if not line:
        raise FetchError("the server closed the connection")
    parts = [line]
    while (match := _LITERAL_END.search(line)) is not None:
        size = int(match.group(1))
        data = imap.read(size)
        if len(data) != size:
            raise FetchError("the server closed the connection in a literal")
        line = imap.readline()
        if not line:
            raise FetchError("the server closed the connection")
        parts += (data, line)
    return b"".join(parts)


def parse_fetch(response: bytes) -> Item:
    """The item pairs of one ``* n FETCH (...)`` response."""
    match = _FETCH.match(response)
    if match is None:
        raise FetchError(f"not a FETCH response: {_text(response)}")
    return _items(response, match.end())


def _items(response: bytes, start: int) -> Item:
    """The item pairs of a FETCH response whose list opens just before ``start``."""
    values, end = _parse_list(response, start)
    if response[end:].strip():
        raise FetchError(f"unexpected text after a FETCH response: {_text(response[end:])}")
    if len(values) % 2:
        raise FetchError(f"a FETCH response with an odd number of items: {_text(response)}")
    item: Item = {}
    for key, value in zip(values[::2], values[1::2], strict=True):
        if not isinstance(key, bytes):
            raise FetchError(f"a FETCH item name that is not an atom: {_text(response)}")
        name = key.upper()
        if name == b"INTERNALDATE" and isinstance(value, bytes):
            item[name] = parse_internaldate(value)
        else:
            item[name] = value
    return item


def _parse_list(text: bytes, pos: int) -> tuple[tuple[Value, ...], int]:
    """The values of a list whose "(" ends before ``pos``; returns them and the end."""
    out: list[Value] = []
    while True:
        match = _TOKEN.match(text, pos)
        if match is None:
            raise FetchError(f"cannot parse FETCH response near {_text(text[pos : pos + 40])}")
        pos = match.end()
        kind = match.lastgroup
        if kind == "close":
            return tuple(out), pos
        if kind == "open":
            value, pos = _parse_list(text, pos)
            out.append(value)
        elif kind == "quoted":
            out.append(_UNESCAPE.sub(rb"\1", match.group("quoted")))
        elif kind == "literal":
            size = int(match.group("literal"))
            out.append(text[pos : pos + size])
            pos += size
        else:
            atom = match.group("atom")
            if atom.isdigit():
                out.append(int(atom))
            elif atom.upper() == b"NIL":
                out.append(None)
            else:
                out.append(atom)


def parse_internaldate(value: bytes) -> datetime | None:
    """``25-Nov-2026 13:50:21 +0000`` (RFC 3501 date-time) as an aware datetime."""
    match = _DATE.match(value)
    if match is None or match.group(2).upper() not in _MONTHS:
        return None
    day, month, year, hh, mm, ss, sign, zh, zm = match.groups()
    offset = timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == b"-" else 1)
    try:
        return datetime(
            int(year), _MONTHS[month.upper()], int(day), int(hh), int(mm), int(ss),
            tzinfo=timezone(offset),
        )  # fmt: skip
    except ValueError:
        return None


def _text(data: bytes) -> str:
    return data[:120].decode("ascii", "backslashreplace").strip()

"""The narrowing ``UID SEARCH``, as bytes built here and sent by hand.

IMAPClient glues a parenthesised group's ``)`` onto the group's last token, so a
non-ASCII value, which must go as a literal, swallows the parenthesis
(``(SUBJECT {7+}`` then ``crème)``); servers answer BAD or crash. Here the criteria from
``mailrules.rules.search`` are walked by the SEARCH grammar (RFC 3501 s6.4.4, RFC 9051
s6.4.4): keys go as atoms, every text value as a quoted string, or, when it is not
plain ASCII, as a literal of exactly its UTF-8 octets, at any depth of nesting.

Literals are non-synchronizing (``{n+}``) only where the server offers LITERAL+ (or
LITERAL- or IMAP4rev2, for up to 4096 octets: RFC 7888, RFC 9051); otherwise the
command is sent in segments, each ending in ``{n}``, and the next one only after the
server's ``+`` continuation.
A server that answers a segment with a tagged NO or BAD has refused the command; the
connection is fine and the caller decides every message locally instead.

``CHARSET UTF-8`` is named only when a value is not ASCII, and never once
``ENABLE UTF8=ACCEPT`` is in effect (RFC 6855 s3 forbids it then).
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from mailrules.sources.imap_fetch import FetchError, read_response

NO_ARGUMENT = frozenset({"ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD",
                         "RECENT", "SEEN", "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED",
                         "UNSEEN"})  # fmt: skip
TEXT_ARGUMENT = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
ATOM_ARGUMENT = frozenset({"KEYWORD", "UNKEYWORD"})
NUMBER_ARGUMENT = frozenset({"LARGER", "SMALLER"})
DATE_ARGUMENT = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
LITERAL_MINUS_MAX = 4096  # RFC 7888 s5: LITERAL- allows {n+} up to this size
_ATOM = re.compile(r"[!#$&'+\-./0-9:;<=>?@A-Z^_`a-z|~]+")  # no atom-specials, RFC 3501 s9
_SEQUENCE_SET = re.compile(r"(?:\d+|\*)(?::(?:\d+|\*))?(?:,(?:\d+|\*)(?::(?:\d+|\*))?)*")
_SEARCH = re.compile(rb"\* SEARCH\b", re.IGNORECASE)
_UNTAGGED_STATUS = re.compile(rb"\* (\d+) ([A-Za-z-]+)(?: (.*))?", re.DOTALL)
_UNTAGGED = re.compile(rb"\* ([A-Za-z-]+)(?: (.*))?", re.DOTALL)


@dataclass(frozen=True)
class _Literal:
    data: bytes


_Token = bytes | _Literal | list["_Token"]


class SearchRefused(Exception):
    """The server answered the SEARCH (or one of its literals) with a tagged NO or BAD.

    ``answer`` is its text, decoded: ``NO [BADCHARSET] ...``."""

    def __init__(self, answer: str) -> None:
        super().__init__(answer)
        self.answer = answer


def has_non_ascii(criteria: Sequence[object]) -> bool:
    """True if some value is not plain ASCII (bytes values are UTF-8 text)."""
    for item in criteria:
        if isinstance(item, list | tuple):
            if has_non_ascii(item):
                return True
        elif isinstance(item, bytes | str) and not item.isascii():
            return True
    return False


def encode_search(
    tag: bytes,
    criteria: Sequence[object],
    *,
    utf8_mode: bool,
    capabilities: frozenset[bytes] | set[bytes],
) -> list[bytes]:
    """``tag UID SEARCH [CHARSET UTF-8] criteria\\r\\n`` as the segments to send.

    Every segment but the last ends in a synchronizing literal's ``{n}\\r\\n``: the next
    one goes only after the server's ``+``. With LITERAL+ there is one segment."""
    caps = {c.upper() for c in capabilities}
    literal_plus = b"LITERAL+" in caps
    literal_minus = b"LITERAL-" in caps or b"IMAP4REV2" in caps  # RFC 9051 includes LITERAL-
    head = tag + b" UID SEARCH"
    if has_non_ascii(criteria) and not utf8_mode:
        head += b" CHARSET UTF-8"
    segments: list[bytes] = []
    current = bytearray(head)
    for token in _keys(list(criteria)):
        current += b" "
        _render(token, current, segments, literal_plus, literal_minus)
    current += b"\r\n"
    segments.append(bytes(current))
    return segments


def _render(
    token: _Token,
    out: bytearray,
    segments: list[bytes],
    literal_plus: bool,
    literal_minus: bool,
) -> None:
    if isinstance(token, list):
        grouped = not isinstance(token, _Flat)
        out += b"(" if grouped else b""
        for i, inner in enumerate(token):
            if i:
                out += b" "
            _render(inner, out, segments, literal_plus, literal_minus)
        out += b")" if grouped else b""
    elif isinstance(token, _Literal):
        size = len(token.data)
        if literal_plus or (literal_minus and size <= LITERAL_MINUS_MAX):
            out += b"{%d+}\r\n" % size
        else:
            out += b"{%d}\r\n" % size
            segments.append(bytes(out))
            out.clear()
        out += token.data
    else:
        out += token


def _keys(items: list[object]) -> list[_Token]:
    """The tokens of a sequence of search keys."""
    tokens: list[_Token] = []
    position = 0
    while position < len(items):
        token, position = _key(items, position)
        tokens.append(token)
    return tokens


def _key(items: list[object], position: int) -> tuple[_Token, int]:
    """One search key starting at ``position`` (with its arguments); the next position."""
    item = items[position]
    if isinstance(item, list | tuple):
        return _keys(list(item)), position + 1
    if not isinstance(item, str):
        raise ValueError(f"a SEARCH key must be a word or a group, not {item!r}")
    name = item.upper()
    after = position + 1

    def argument(count: int = 1) -> list[object]:
        if after + count > len(items):
            raise ValueError(f"SEARCH key {name} needs {count} argument(s)")
        return items[after : after + count]

    if name in NO_ARGUMENT:
        return name.encode(), after
    if name == "NOT":
        inner, end = _key(items, after)
        return _flat(b"NOT", inner), end
    if name == "OR":
        first, middle = _key(items, after)
        second, end = _key(items, middle)
        return _flat(b"OR", first, second), end
    if name in TEXT_ARGUMENT:
        (value,) = argument()
        return _flat(name.encode(), _text(value)), after + 1
    if name == "HEADER":
        field, value = argument(2)
        return _flat(b"HEADER", _text(field), _text(value)), after + 2
    if name in ATOM_ARGUMENT:
        (value,) = argument()
        return _flat(name.encode(), _atom(value)), after + 1
    if name in NUMBER_ARGUMENT:
        (value,) = argument()
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"SEARCH {name} needs a number, not {value!r}")
        return _flat(name.encode(), b"%d" % value), after + 1
    if name in DATE_ARGUMENT:
        (value,) = argument()
        if not isinstance(value, date):
            raise ValueError(f"SEARCH {name} needs a date, not {value!r}")
        day = f"{value.day}-{MONTHS[value.month - 1]}-{value.year}".encode()
        return _flat(name.encode(), day), after + 1
    if name == "UID":
        (value,) = argument()
        if not isinstance(value, str) or not _SEQUENCE_SET.fullmatch(value):
            raise ValueError(f"SEARCH UID needs a sequence set, not {value!r}")
        return _flat(b"UID", value.encode()), after + 1
    if _SEQUENCE_SET.fullmatch(item):
        return item.encode(), after
    raise ValueError(f"unknown SEARCH key {item!r}")


class _Flat(list):  # type: ignore[type-arg]
    """Tokens of one key with its arguments: rendered side by side, without parentheses."""


def _flat(*tokens: _Token) -> _Token:
    return _Flat(tokens)


def _text(value: object) -> _Token:
    """An astring: a quoted string if it is printable ASCII, else a literal of its UTF-8."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    if data.isascii() and not any(c < 0x20 or c == 0x7F for c in data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return _Literal(data)


def _atom(value: object) -> bytes:
    text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    if not _ATOM.fullmatch(text):
        raise ValueError(f"{text!r} cannot be sent as an IMAP keyword")
    return text.encode("ascii")


def run_search(imap: imaplib.IMAP4, segments: list[bytes]) -> list[int]:
    """Send the segments of one command (see encode_search) and read its answer.

    Returns the UIDs of ``* SEARCH`` lines. Raises SearchRefused on a tagged NO/BAD (the
    connection stays usable), FetchError if the server closed the connection or said
    something that is not IMAP; OSError and imaplib's abort come through as they are.
    Other untagged responses (EXISTS, EXPUNGE, FLAGS) are filed where imaplib files them.
    """
    tag = segments[0].split(b" ", 1)[0]
    found: list[int] = []
    for index, segment in enumerate(segments):
        imap.send(segment)
        last = index == len(segments) - 1
        while True:
            response = read_response(imap)
            if response.startswith(b"+"):
                if last:
                    raise FetchError(f"unexpected continuation {_text_of(response)}")
                break
            if response.startswith(b"* "):
                _untagged(imap, response, found)
                continue
            got, _, rest = response.partition(b" ")
            if got != tag:
                raise FetchError(f"unexpected response {_text_of(response)}")
            if rest[:2].upper() == b"OK":
                if not last:
                    raise FetchError("the server answered before the command was complete")
                return found
            raise SearchRefused(_text_of(rest))
    return found  # not reached: the last segment always ends in a tagged answer


def _untagged(imap: imaplib.IMAP4, response: bytes, found: list[int]) -> None:
    line = response.rstrip(b"\r\n")
    if _SEARCH.match(line):
        for word in line[8:].split():
            if word.isdigit():
                found.append(int(word))
            else:
                break  # (MODSEQ n) of CONDSTORE, RFC 7162 s3.1.5
        return
    if line[2:5].upper() == b"BYE":
        raise FetchError(f"the server ended the session: {_text_of(line)}")
    match = _UNTAGGED_STATUS.fullmatch(line)
    if match:
        imap._append_untagged(match.group(2).upper().decode("ascii"), match.group(1))  # type: ignore[attr-defined]
        return
    match = _UNTAGGED.fullmatch(line)
    if match:
        imap._append_untagged(match.group(1).upper().decode("ascii"), match.group(2) or b"")  # type: ignore[attr-defined]


def _text_of(data: bytes) -> str:
    """A server's answer as a user reads it: decoded, one line, not too long."""
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= 200 else text[:200] + "…"

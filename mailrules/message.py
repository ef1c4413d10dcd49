"""MessageView: what rules see of a message, decoded, and never raising on bad mail.

Headers are split and unfolded here (RFC 5322 s2.2.3) rather than by the stdlib parser:
it is several times faster on header-only input and cannot raise on malformed
headers. Values are decoded lazily, once, when a rule asks for them: RFC 2047 encoded
words, raw 8-bit bytes (UTF-8, else Latin-1), addresses by addr-spec. Bodies and
attachments are parsed only when a rule needs them, through a loader supplied by the
mailbox. Every problem found is recorded in ``defects`` instead of raised.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cached_property

from mailrules.addresses import Malformed, parse_mailboxes
from mailrules.charsets import decode_text as _decode_bytes
from mailrules.charsets import decode_words
from mailrules.mime import Attachment, read_structure

log = logging.getLogger(__name__)

# Headers beyond this size are cut: a rule never needs more, and it bounds memory.
MAX_HEADER_BYTES = 8 * 1024 * 1024
_READ_CHUNK = 64 * 1024
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ':'
_ADDR_SPEC = r"[^\s<>()\[\]\\,;:@\"]+@[A-Za-z0-9.-]+"
_SIMPLE_ADDRESS = re.compile(
    rf'\s*(?:(?:"(?P<quoted>[^"\\]*)"|(?P<plain>[^"<>()\[\]\\,;:@]*?))\s*<(?P<angle>{_ADDR_SPEC})>'
    rf"|(?P<bare>{_ADDR_SPEC}))\s*"
)

ADDRESS_HEADERS = {
    "from": ("from",),
    "to": ("to",),
    "cc": ("cc",),
    "bcc": ("bcc",),
    "recipient": ("to", "cc", "bcc", "resent-to", "resent-cc", "delivered-to", "x-original-to"),
    "sender": ("sender", "return-path"),
    "reply-to": ("reply-to",),
}


@dataclass(frozen=True)
class Address:
    """One mailbox: the display name as written and the addr-spec, lower-cased.

    ``name`` decodes the display name (RFC 2047) when first asked: most rules match on
    the address alone, and decoding is most of the cost of reading an address."""

    written_name: str
    address: str

    @cached_property
    def name(self) -> str:
        return _clean(decode_words(self.written_name.strip()))

    @property
    def local(self) -> str:
        return self.address.rpartition("@")[0] if "@" in self.address else self.address

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2] if "@" in self.address else ""


def split_header_block(data: bytes) -> tuple[bytes, int | None]:
    """Return the header block of a message and the offset where its body starts.

    The offset is None when no blank line was found (the message is all headers, or
    it was cut short).
    """
    if data.startswith((b"\n", b"\r\n")):
        return b"", 1 if data.startswith(b"\n") else 2
    found = _HEADER_END.search(data)
    if found is None:
        return data, None
    return data[: found.start() + 1], found.end()


def read_head(path: str) -> tuple[bytes, float]:
    """The header block of a message file and the file's modification time, in one open."""
    with open(path, "rb") as f:
        mtime = os.fstat(f.fileno()).st_mtime
        data = f.read(_READ_CHUNK)
        while len(data) < MAX_HEADER_BYTES:
            block, body_at = split_header_block(data)
            if body_at is not None:
                return block, mtime
            more = f.read(max(_READ_CHUNK, len(data)))
            if not more:
                return data, mtime
            data += more
    return split_header_block(data[:MAX_HEADER_BYTES])[0], mtime


def parse_header_lines(block: bytes, defects: list[str]) -> list[tuple[str, str]]:
    """Split a header block into (name, raw value) pairs, unfolded, in order."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = "\n".join(_decode_bytes(line) for line in block.split(b"\n"))
    if text.startswith("From ") and ":" not in text.split("\n", 1)[0].split(" ", 1)[0]:
        text = text.split("\n", 1)[1] if "\n" in text else ""  # an mbox "From " line
    fields: list[tuple[str, str]] = []
    # Only CRLF and LF end a line (RFC 5322 s2.2; LF as mail on disk has it). Not
    # str.splitlines(): it also breaks at \f, \v, \x1c-\x1e, U+0085, U+2028/9 and a bare
    # CR, where a sender could hide a second From that no MTA or mail reader sees.
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            continue
        if line[0] in " \t":
            if fields:
                name, value = fields[-1]
                fields[-1] = (name, value + line)
            else:
                defects.append("continuation line before the first header")
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _FIELD_NAME.fullmatch(name):
            defects.append(f"not a header line: {line[:60]!r}")
            continue
        fields.append((name, value.lstrip(" \t")))
    return fields


@dataclass(frozen=True, slots=True)
class Summary:
    """What the audit log, the state and a run's report show of a decided message."""

    name: str
    subject: str
    message_id: str
    senders: tuple[str, ...]  # the From addresses

    def addresses(self, kind: str) -> list[Address]:
        if kind != "from":
            raise ValueError(f"{self.name}: a summary keeps only the From addresses")
        return [Address("", address) for address in self.senders]


@dataclass
class MessageView:
    """A message as rules see it. Cheap to build: only the header block is required.

    ``load_bytes`` returns the whole message when a rule needs the body, attachments
    or the raw message (for ``run`` and ``command``).
    """

    header_block: bytes
    name: str = ""
    size: int | None = None
    arrived: datetime | None = None
    flags: frozenset[str] = frozenset()
    keywords: frozenset[str] = frozenset()
    load_bytes: Callable[[], bytes] | None = None
    defects: list[str] = field(default_factory=list)

    @classmethod
    def from_bytes(cls, data: bytes, **kwargs: object) -> MessageView:
        block, _ = split_header_block(data[:MAX_HEADER_BYTES])
        kwargs.setdefault("size", len(data) + data.count(b"\n") - data.count(b"\r\n"))
        return cls(header_block=block, load_bytes=lambda: data, **kwargs)  # type: ignore[arg-type]

    # -- headers -------------------------------------------------------------------

    @cached_property
    def fields(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        # Parsed again after compact(): its defects were reported the first time.
        defects = [] if self.__dict__.get("_compacted") else self.defects
        for name, value in parse_header_lines(self.header_block, defects):
            out.setdefault(name.lower(), []).append(value)
        if not out:
            self.defects.append("no header fields (an empty file, or not a message)")
        return out

    def compact(self) -> None:
        """Once the rules have decided: keep what logs, the audit and the state read (the
        subject, Message-ID and From) and let the other parsed fields go. A run holds a
        batch of thousands of views until their actions are done; anything else asked
        later is parsed again from the header block."""
        self.subject, self.message_id, self.addresses("from")
        cache = self.__dict__.get("_addr_cache")
        if cache:
            self.__dict__["_addr_cache"] = {"from": cache["from"]}
        self.__dict__.pop("fields", None)
        self.__dict__["_compacted"] = True

    def summary(self) -> Summary:
        """All a decided message needs when no action reads it (move, copy, delete, flag):
        about a third of a compacted view, so a full pass can hold more of them."""
        senders = tuple(a.address for a in self.addresses("from"))
        return Summary(self.name, self.subject, self.message_id, senders)

    def has_header(self, name: str) -> bool:
        return name.lower() in self.fields

    def header_all(self, name: str) -> list[str]:
        """Every occurrence of a header, RFC 2047 decoded, whitespace collapsed."""
        return [_clean(decode_words(v)) for v in self.fields.get(name.lower(), ())]

    def header(self, name: str) -> str:
        """The first occurrence of a header, decoded; '' when absent."""
        values = self.fields.get(name.lower())
        return _clean(decode_words(values[0])) if values else ""

    @cached_property
    def subject(self) -> str:
        return self.header("subject")

    @cached_property
    def message_id(self) -> str:
        return self.header("message-id").strip()

    def addresses(self, kind: str) -> list[Address]:
        """Addresses of an address condition kind ('from', 'recipient', ...)."""
        cache = self.__dict__.setdefault("_addr_cache", {})
        if kind not in cache:
            found: list[Address] = []
            for header in ADDRESS_HEADERS.get(kind, (kind,)):
                for raw in self.fields.get(header, ()):
                    found.extend(self._parse_addresses(raw))
            cache[kind] = found
        return cache[kind]

    def _parse_addresses(self, raw: str) -> list[Address]:
        simple = _SIMPLE_ADDRESS.fullmatch(raw)
        if simple:  # the common single "Name <a@b>", '"Name" <a@b>' or a@b, without the parser
            name = simple.group("quoted") or simple.group("plain") or ""
            addr = simple.group("angle") or simple.group("bare")
            return [Address(written_name=name, address=addr.lower())]
        try:
            pairs = parse_mailboxes(raw)
        except Malformed as exc:  # matches nothing: never a guess that may be the display name
            self.defects.append(f"malformed address header ({exc}): {raw[:60]!r}")
            return []
        return [Address(written_name=name, address=addr) for name, addr in pairs]

    @cached_property
    def date(self) -> datetime | None:
        """The Date header as an aware datetime, or None when absent or unreadable."""
        raw = self.header("date")
        if not raw:
            return None
        try:
            parsed = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            self.defects.append(f"unreadable Date: {raw[:40]!r}")
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    @property
    def when(self) -> datetime:
        """When the message arrived (mailbox time), else its Date, else now."""
        return self.arrived or self.date or datetime.now(UTC)

    @cached_property
    def list_id(self) -> str:
        """The List-Id identifier (RFC 2919), without the phrase and brackets."""
        raw = self.header("list-id")
        found = re.search(r"<([^<>]*)>", raw)
        return (found.group(1) if found else raw).strip().lower()

    # -- body ----------------------------------------------------------------------

    def raw(self) -> bytes:
        if self.load_bytes is None:
            return self.header_block
        return self.load_bytes()

    @cached_property
    def _structure(self) -> tuple[str, list[Attachment]]:
        """Body text and attachments, from one read of the message and one walk of its
        MIME parts (see mailrules.mime for what is read and the limits)."""
        try:
            data = self.raw()
        except OSError as exc:
            self.defects.append(f"cannot read the message: {exc.strerror or exc}")
            return "", []
        try:
            _, body_at = split_header_block(data)
            return read_structure(data, self.header_block, body_at, self.defects)
        except Exception as exc:  # a broken body must not stop the run
            self.defects.append(f"unparsable MIME structure: {exc}")
            return "", []

    @property
    def body_text(self) -> str:
        """Decoded text of the text parts (HTML reduced to text), attachments excluded."""
        return self._structure[0]

    @property
    def attachments(self) -> list[Attachment]:
        return self._structure[1]


def _clean(value: str) -> str:
    return " ".join(value.split()) if ("\n" in value or "\t" in value or "  " in value) else value

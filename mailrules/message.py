"""MessageView: what rules see of a message, decoded, and never raising on bad mail.

Headers are split and unfolded here (RFC 5322 s2.2.3) rather than by the stdlib parser:
it is several times faster on header-only input and cannot raise on malformed
headers. Values are decoded lazily, once, when a rule asks for them: RFC 2047 encoded
words, raw 8-bit bytes (UTF-8, else Latin-1), addresses by addr-spec. Bodies and
attachments are parsed only when a rule needs them, through a loader supplied by the
mailbox. Every problem found is recorded in ``defects`` instead of raised.
"""

from __future__ import annotations

import email
import email.policy
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from functools import cached_property
from html.parser import HTMLParser

from mailrules.addresses import Malformed, parse_mailboxes
from mailrules.charsets import decode_text as _decode_bytes
from mailrules.charsets import decode_words, without_surrogates

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


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


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


class _HTMLText(HTMLParser):
    """Reduce HTML to its visible text (script and style dropped)."""

    _SKIP = frozenset({"script", "style", "head", "title"})
    _BREAK = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _HTMLText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: S110 - broken HTML still yields what was parsed
        pass
    return re.sub(r"[ \t\r\f\v]+", " ", "".join(parser.parts))


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
    def _mime(self) -> Message | None:
        try:
            root = email.message_from_bytes(self.raw(), policy=email.policy.compat32)
        except Exception as exc:  # a broken body must not stop the run
            self.defects.append(f"unparsable MIME structure: {exc}")
            return None
        for part in _walk(root, self.defects):
            for defect in getattr(part, "defects", ()):
                name = type(defect).__name__.removesuffix("Defect")
                self.defects.append(f"MIME: {' '.join(re.findall('[A-Z][a-z]*', name)).lower()}")
        return root

    @cached_property
    def body_text(self) -> str:
        """Decoded text of the text parts (HTML reduced to text), attachments excluded."""
        root = self._mime
        if root is None:
            return ""
        chunks = []
        for part in _walk(root, self.defects):
            if part.is_multipart() or _is_attachment(part):
                continue
            ctype = part.get_content_type()
            if ctype not in ("text/plain", "text/html"):
                continue
            text = _part_text(part, self.defects)
            chunks.append(html_to_text(text) if ctype == "text/html" else text)
        return "\n".join(chunks)

    @cached_property
    def attachments(self) -> list[Attachment]:
        root = self._mime
        if root is None:
            return []
        found = []
        for part in _walk(root, self.defects):
            if part.is_multipart() or not _is_attachment(part):
                continue
            payload = _payload(part, self.defects)
            try:
                filename = decode_words(without_surrogates(part.get_filename() or ""))
            except Exception:  # RFC 2231 parameters can be garbage
                filename = ""
            found.append(
                Attachment(
                    filename=filename,
                    content_type=without_surrogates(part.get_content_type()),
                    size=len(payload),
                )
            )
        return found


def _clean(value: str) -> str:
    return " ".join(value.split()) if ("\n" in value or "\t" in value or "  " in value) else value


def _walk(root: Message, defects: list[str]) -> list[Message]:
    try:
        return list(root.walk())
    except Exception as exc:  # a broken MIME tree must not stop the run
        defects.append(f"cannot walk MIME parts: {exc}")
        return [root]


def _is_attachment(part: Message) -> bool:
    try:
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        if disposition == "attachment":
            return True
        if part.get_param("filename", header="content-disposition") or part.get_param("name"):
            return True
        return part.get_content_maintype() not in ("text", "multipart", "message")
    except Exception:  # malformed MIME headers
        return False


def _payload(part: Message, defects: list[str]) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:  # truncated base64 and the like
        defects.append(f"undecodable part: {exc}")
        return b""
    return data if isinstance(data, bytes) else b""


def _part_text(part: Message, defects: list[str]) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:  # malformed Content-Type
        charset = None
    return _decode_bytes(_payload(part, defects), charset)

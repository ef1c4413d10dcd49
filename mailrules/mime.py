"""The MIME structure of a message, read once, in place, for ``body`` and ``attachment``.

The stdlib parser holds a message several times over (the bytes, a text copy, its
lines, each decoded payload): a 50 MB attachment cost over 600 MiB. Here the parts are
found by their boundaries in the raw bytes, and each part's own header block is read by
the stdlib's header-only parser. Only text parts are decoded, and only their first
MAX_TEXT_PART_BYTES; a body rule sees at most MAX_BODY_TEXT characters of text in all.
An attachment's size is computed from its encoded form without decoding it. Nesting
deeper than MAX_DEPTH levels, or more than MAX_PARTS parts, is not read; HTML is reduced
to text in linear time, up to its MAX_HTML_TAGS-th tag. Problems become defects; nothing
here raises on bad input.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from html import unescape

from mailrules.charsets import decode_text, decode_words, without_surrogates

MAX_BODY_TEXT = 1024 * 1024  # characters of decoded text a body rule sees, all parts together
MAX_TEXT_PART_BYTES = 4 * MAX_BODY_TEXT  # encoded bytes of one text part that are decoded
MAX_DEPTH = 32  # levels of multipart / message/rfc822 nesting that are read
MAX_PARTS = 1000  # parts that are read
MAX_HTML_TAGS = 100_000  # tags of one HTML part that are read; the text after them is not
_MAX_DELIMITER_LINE = 1000  # RFC 5322 s2.1.1 line length; a longer line is no delimiter
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_WHITESPACE = (b"\n", b"\r", b" ", b"\t")
_QP_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


def read_structure(
    data: bytes, header_block: bytes, body_at: int | None, defects: list[str]
) -> tuple[str, list[Attachment]]:
    """The text of the text parts (HTML reduced to text) and the attachments."""
    walk = _Walk(data, defects)
    start = len(data) if body_at is None else body_at
    walk.part(_headers(header_block), start, len(data), 0)
    chunks: list[str] = []
    room = MAX_BODY_TEXT
    attachments: list[Attachment] = []
    for part, begin, end in walk.parts:
        try:
            maintype = part.get_content_maintype()
            ctype = without_surrogates(part.get_content_type())
        except Exception:  # a Content-Type the stdlib cannot read
            defects.append("MIME: unreadable Content-Type")
            continue
        if maintype == "multipart":
            continue
        if _is_attachment(part, maintype):
            attachments.append(Attachment(_filename(part), ctype, _size(data, part, begin, end)))
        elif ctype in ("text/plain", "text/html") and room > 0:
            text = _text(data, part, begin, end, defects)
            if ctype == "text/html":
                text = html_to_text(text)
            chunks.append(text[:room])
            room -= len(chunks[-1])
    return "\n".join(chunks), attachments


def _headers(block: bytes, default_type: str = "text/plain") -> Message:
    msg = BytesParser(policy=compat32).parsebytes(block, headersonly=True)
    msg.set_default_type(default_type)
    return msg


class _Walk:
    """Collects (headers, body begin, body end) of every part, depth first, in order."""

    def __init__(self, data: bytes, defects: list[str]) -> None:
        self.data = data
        self.defects = defects
        self.parts: list[tuple[Message, int, int]] = []

    def part(self, headers: Message, begin: int, end: int, depth: int) -> None:
        if len(self.parts) >= MAX_PARTS:
            if len(self.parts) == MAX_PARTS:
                self.defects.append(f"MIME: more than {MAX_PARTS} parts; the rest are not read")
                self.parts.append((_headers(b"", "application/octet-stream"), end, end))
            return
        self.parts.append((headers, begin, end))
        try:
            ctype = headers.get_content_type()
            boundary = headers.get_boundary() if ctype.startswith("multipart/") else None
        except Exception:  # malformed parameters
            self.defects.append("MIME: unreadable Content-Type")
            return
        if not ctype.startswith("multipart/") and ctype != "message/rfc822":
            return
        if depth >= MAX_DEPTH:
            self.defects.append(f"MIME: nested deeper than {MAX_DEPTH} levels; not read further")
            return
        if ctype == "message/rfc822":
            inner, body = _part_headers(self.data, begin, end, "text/plain")
            self.part(inner, body, end, depth + 1)
            return
        if not boundary:
            self.defects.append("MIME: multipart without a boundary")
            return
        raw_boundary = boundary.encode("utf-8", "surrogateescape")
        spans, closed = _split(self.data, begin, end, raw_boundary)
        if not spans and not closed:
            self.defects.append("MIME: start boundary not found")
        elif not closed:
            self.defects.append("MIME: close boundary not found")
        child_type = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        for span_begin, span_end in spans:
            inner, body = _part_headers(self.data, span_begin, span_end, child_type)
            self.part(inner, body, span_end, depth + 1)


def _part_headers(data: bytes, begin: int, end: int, default_type: str) -> tuple[Message, int]:
    """A part's header block, read, and where its body starts."""
    if data.startswith(b"\n", begin, end):
        return _headers(b"", default_type), begin + 1
    if data.startswith(b"\r\n", begin, end):
        return _headers(b"", default_type), begin + 2
    found = _HEADER_END.search(data, begin, end)
    head_end, body = (found.start() + 1, found.end()) if found else (end, end)
    return _headers(data[begin:head_end], default_type), body


def _split(
    data: bytes, begin: int, end: int, boundary: bytes
) -> tuple[list[tuple[int, int]], bool]:
    """The (begin, end) spans of a multipart's parts, and whether it was closed.

    A delimiter is a line that starts with '--' and the boundary, maybe '--' after it
    (the close delimiter), then only white space (RFC 2046 s5.1.1). The line end before
    it belongs to the delimiter, not to the part."""
    delimiter = b"--" + boundary
    spans: list[tuple[int, int]] = []
    part_begin: int | None = None
    at = begin if data.startswith(delimiter, begin, end) else -1
    search_from = begin
    while True:
        if at < 0:
            found = data.find(b"\n" + delimiter, search_from, end)
            if found < 0:
                break
            at = found + 1
        line_end = data.find(b"\n", at, end)
        line_end = end if line_end < 0 else line_end
        rest = b"-" if line_end - at > _MAX_DELIMITER_LINE else data[at + len(delimiter) : line_end]
        rest = rest.rstrip(b" \t\r")
        if rest not in (b"", b"--"):  # a longer boundary, or a line that only starts alike
            search_from, at = at, -1
            continue
        if part_begin is not None:
            part_end = at - 1
            if part_end > part_begin and data[part_end - 1] == 0x0D:
                part_end -= 1
            spans.append((part_begin, max(part_begin, part_end)))
        if rest == b"--":
            return spans, True
        part_begin = min(line_end + 1, end)
        search_from, at = line_end, -1
    if part_begin is not None:
        spans.append((part_begin, end))
    return spans, False


def _is_attachment(part: Message, maintype: str) -> bool:
    try:
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        if disposition == "attachment":
            return True
        if part.get_param("filename", header="content-disposition") or part.get_param("name"):
            return True
        return maintype not in ("text", "multipart", "message")
    except Exception:  # malformed MIME headers
        return False


def _filename(part: Message) -> str:
    try:
        return without_surrogates(decode_words(without_surrogates(part.get_filename() or "")))
    except Exception:  # RFC 2231 parameters can be garbage
        return ""


def _encoding(part: Message) -> str:
    return str(part.get("Content-Transfer-Encoding", "")).strip().lower()


def _size(data: bytes, part: Message, begin: int, end: int) -> int:
    """The decoded size of a part, computed without holding its decoded form."""
    encoding = _encoding(part)
    if encoding == "base64":
        chars = end - begin - sum(data.count(c, begin, end) for c in _WHITESPACE)
        tail = data[max(begin, end - 8) : end].rstrip(b"\r\n \t")
        padding = len(tail) - len(tail.rstrip(b"="))
        return max(0, chars * 3 // 4 - min(padding, 2))
    if encoding == "quoted-printable":
        size, pos = 0, begin
        while pos < end:
            cut = data.rfind(b"\n", pos, min(end, pos + _QP_CHUNK)) + 1 or min(end, pos + _QP_CHUNK)
            size += len(binascii.a2b_qp(data[pos:cut]))
            pos = cut
        return size
    return end - begin


def _text(data: bytes, part: Message, begin: int, end: int, defects: list[str]) -> str:
    """A text part decoded: its transfer encoding, then its charset; the first
    MAX_TEXT_PART_BYTES of it."""
    raw = data[begin : min(end, begin + MAX_TEXT_PART_BYTES)]
    encoding = _encoding(part)
    try:
        if encoding == "base64":
            chars = raw.translate(None, b" \t\r\n")
            raw = binascii.a2b_base64(chars[: len(chars) - len(chars) % 4])
        elif encoding == "quoted-printable":
            raw = binascii.a2b_qp(raw)
    except (binascii.Error, ValueError) as exc:  # the text is read as it was sent
        defects.append(f"undecodable part: {exc}")
    try:
        charset = part.get_content_charset()
    except Exception:  # malformed Content-Type
        charset = None
    return decode_text(raw, charset)


# A comment's start, a tag (its name; it ends at the first '>', and a '<' before that means
# it was no tag), or a declaration or processing instruction. Any other '<' is text.
_MARKUP = re.compile(r"<!--|<(/?)([A-Za-z][A-Za-z0-9]*)[^<>]*>|<[!?][^<>]*>")
_SKIPPED_TAGS = ("script", "style", "head", "title")  # their content is not visible text
_SKIP_END = {tag: re.compile(rf"</{tag}\b", re.IGNORECASE) for tag in _SKIPPED_TAGS}
_BREAK_TAGS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})
_BREAK_TAGS |= {t.upper() for t in _BREAK_TAGS}


def html_to_text(html: str, limit: int = MAX_BODY_TEXT) -> str:
    """The visible text of HTML: tags, comments and script/style/head/title dropped,
    entities decoded, a line break for each block tag; about the first ``limit``
    characters of it, and nothing after the MAX_HTML_TAGS-th tag.

    In linear time: each search for the end of a tag, comment or skipped element either
    finds it and goes on after it, or finds none and ends the text there. (The stdlib's
    HTMLParser rescans to the end of the text for every unclosed '<!--' or '<': 400 KB of
    them took minutes.)"""
    out: list[str] = []
    room = 2 * limit  # characters of text before entities are decoded
    pos, size = 0, len(html)
    search = _MARKUP.search
    for _ in range(MAX_HTML_TAGS):
        if pos >= size or room <= 0:
            break
        found = search(html, pos)
        start = size if found is None else found.start()
        if start > pos:
            out.append(html[pos : min(start, pos + room)])
            room -= len(out[-1])
        if found is None:
            break
        pos = found.end()
        tag = found.group(2)
        if tag is None:
            if found.group() == "<!--":
                end = html.find("-->", pos)
                if end < 0:
                    break
                pos = end + 3
            continue
        if found.group(1):
            continue  # an end tag
        if tag in _BREAK_TAGS:
            out.append("\n")
            continue
        skip = _SKIP_END.get(tag.lower())
        if skip is not None and html[pos - 2] != "/":
            end = skip.search(html, pos)
            if end is None:
                break
            pos = end.start()
    return re.sub(r"[ \t\r\f\v]+", " ", unescape("".join(out)))

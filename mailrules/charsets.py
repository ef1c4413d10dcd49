"""Charsets as mail names them: bytes to text that every later step can handle.

A charset name in a message (``=?utf-7?q?...?=``, ``Content-Type: text/plain;
charset=punycode``) is chosen by the sender, and to Python it is a codec name. Only
codecs that turn bytes into ordinary text are accepted: not the binary transforms
(base64, rot13, zlib, ...), and not the text codecs that can yield lone surrogates or
take quadratic time (utf-7, unicode_escape, raw_unicode_escape, punycode, idna). Any
other name is an unknown charset, decoded as UTF-8, else Latin-1, as undeclared bytes
are. So every string decoded here can be written to a file, a database or a terminal as
UTF-8: it never holds a lone surrogate.

RFC 2047 encoded words are decoded here too, in linear time, instead of by
``email.header.decode_header``: it hands undecoded text back through
``raw-unicode-escape``, which turns a literal ``\\ud800`` in a header into a surrogate.
"""

from __future__ import annotations

import binascii
import codecs
import re
from functools import lru_cache

# Text codecs that are still not charsets a message may use: they decode ASCII input to
# lone surrogates (utf-7, the escape codecs) or take quadratic time (punycode, idna).
_REFUSED = frozenset({"utf-7", "unicode-escape", "raw-unicode-escape", "punycode", "idna"})
_SURROGATE = re.compile("[\ud800-\udfff]")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?]*)\?=")
_MAX_CHARSET_NAME = 64


@lru_cache(maxsize=512)
def text_codec(name: str) -> str | None:
    """The codec for a charset name from a message, or None if it is not a text charset."""
    name = name.strip().strip('"').lower()
    if not name or len(name) > _MAX_CHARSET_NAME or not name.isascii():
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED:
        return None
    return info.name


def without_surrogates(text: str) -> str:
    """Text that encodes as UTF-8: raw bytes smuggled in as surrogate escapes (as the
    stdlib parser leaves 8-bit headers) are decoded as UTF-8 or Latin-1; any other lone
    surrogate becomes U+FFFD."""
    if not _SURROGATE.search(text):
        return text
    try:
        return decode_text(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def decode_text(data: bytes, charset: str | None = None) -> str:
    """Decode header or body bytes: the declared charset if it is a text charset, else
    UTF-8, else Latin-1. Never raises; the result never holds a lone surrogate."""
    codec = text_codec(charset) if charset else None
    if codec is not None:
        try:
            text = data.decode(codec)
        except (ValueError, LookupError, TypeError, Warning):  # UnicodeDecodeError included
            pass
        else:
            return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _word_bytes(encoding: str, text: str) -> bytes | None:
    raw = text.encode("utf-8")
    try:
        if encoding in "qQ":
            return binascii.a2b_qp(raw, header=True)
        raw = raw.translate(None, b" \t\r\n")
        return binascii.a2b_base64(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        return None


def decode_words(value: str) -> str:
    """Decode the RFC 2047 encoded words in a header value; text around them stays as is.

    Whitespace between two encoded words is dropped (RFC 2047 s6.2), and adjacent words
    in one charset are decoded together, so a character split across words survives. A
    word that cannot be decoded (bad base64) is kept as written."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    pos = 0
    for found in _ENCODED_WORD.finditer(value):
        charset = found.group(1).partition("*")[0]  # RFC 2231 language: charset*en
        data = _word_bytes(found.group(2), found.group(3))
        if data is None:
            continue  # left in the text as written
        between = value[pos : found.start()]
        adjacent = pending_charset is not None and not between.strip(" \t\r\n")
        if pending_charset is not None and not (adjacent and charset == pending_charset):
            out.append(decode_text(bytes(pending), pending_charset))
            pending.clear()
        if not adjacent:
            out.append(between)
        pending_charset = charset
        pending += data
        pos = found.end()
    if pending_charset is not None:
        out.append(decode_text(bytes(pending), pending_charset))
    out.append(value[pos:])
    return "".join(out)

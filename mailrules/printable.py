"""Text from mail and from the outside world, made safe to show on a terminal or in a log.

A Subject, a From display name, a Message-ID or a folder rendered from them is chosen by
the sender. Raw, an ESC starts a terminal escape sequence (retitle the window, hide or
rewrite lines), a CR or LF forges a new log line, a BEL rings, a bidi override reverses
what follows, and a lone surrogate (from a broken charset) makes printing fail. Every
place that writes such text to stdout, ``explain`` or the text log passes it through
``printable`` first: these characters become visible escapes (``\\x1b``, ``\\r``,
``\\u202e``), and the text can be cut to a length.
"""

from __future__ import annotations

import re

# C0 controls (tab and newline too: one field, one line), DEL, C1 controls, the Unicode
# line and paragraph separators, the bidi embeddings, overrides and isolates, the BOM,
# and every surrogate (only a lone one can be in a str).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ufeff\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, limit: int | None = None) -> str:
    """``text`` with unsafe characters escaped; cut to ``limit`` characters ("…")."""
    value = str(text)
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    return _UNSAFE.sub(_escape, value)

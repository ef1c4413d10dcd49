"""Properties of header parsing over hostile input: every Unicode line-break class inside
header values and every codec name the standard library knows as a "charset".

Whatever a sender writes: nothing raises, every decoded value can be written as UTF-8
(no lone surrogates), the header fields rules see are exactly the lines that start after
CRLF or LF, and a name that is not a text charset decodes as an unknown charset does.
"""

from __future__ import annotations

import codecs
import encodings
import encodings.aliases
import pkgutil
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrules.charsets import decode_text, decode_words, text_codec
from mailrules.message import ADDRESS_HEADERS, MessageView

BOUNDED = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,  # the same examples every run, in a few seconds
    suppress_health_check=[HealthCheck.too_slow],
)
# Every character str.splitlines() breaks at, and the two RFC 5322 line ends.
LINE_BREAKS = ["\n", "\r\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
NOT_LINE_ENDS = [b for b in LINE_BREAKS if b not in ("\n", "\r\n")]
CODEC_NAMES = sorted(
    set(encodings.aliases.aliases)
    | set(encodings.aliases.aliases.values())
    | {m.name for m in pkgutil.iter_modules(encodings.__path__)}
    | {"utf-7", "UTF-7", "unicode-escape", "punycode", "idna", "rot13", "base64", "x-unknown"}
)
FIELD_NAMES = ["From", "To", "Cc", "Subject", "Reply-To", "Authentication-Results", "X-Spam"]
PAYLOADS = ["+2AA-", "+2ADcAA-", "=5Cud800", "\\udfff", "caf=E9", "K2RnQS0=", "w6k=", "a-z", "=FF"]


def _encoded_word(charset: str, kind: str, payload: str) -> str:
    return f"=?{charset}?{kind}?{payload}?="


text_piece = st.one_of(
    st.text(alphabet='abc <>@"(),;:.=?\\\t é€\x00\x1b', max_size=12),
    st.sampled_from(NOT_LINE_ENDS),
    st.builds(
        _encoded_word,
        st.sampled_from(CODEC_NAMES),
        st.sampled_from(["q", "Q", "b", "B"]),
        st.one_of(st.sampled_from(PAYLOADS), st.text(alphabet="AZaz09+/=_-", max_size=16)),
    ),
)
header_value = st.lists(text_piece, max_size=6).map("".join)
header_lines = st.lists(st.tuples(st.sampled_from(FIELD_NAMES), header_value), max_size=8)


def _all_text(view: MessageView) -> list[str]:
    out = [view.subject, view.message_id, view.list_id, view.body_text, *view.defects]
    for name in (*FIELD_NAMES, "message-id", "x-none"):
        out.append(view.header(name))
        out.extend(view.header_all(name))
    for kind in ADDRESS_HEADERS:
        for addr in view.addresses(kind):
            out += [addr.address, addr.name, addr.local, addr.domain]
    for att in view.attachments:
        out += [att.filename, att.content_type]
    return out


@BOUNDED
@given(header_lines, st.sampled_from(["\n", "\r\n"]), st.sampled_from(["utf-8", "latin-1"]))
def test_fields_are_the_lines_after_crlf_or_lf(
    lines: list[tuple[str, str]], line_end: str, encoding: str
) -> None:
    block = "".join(f"{name}: {value.replace(chr(10), ' ')}{line_end}" for name, value in lines)
    data = block.encode(encoding, "replace") + line_end.encode() + b"body" + line_end.encode()
    view = MessageView.from_bytes(data, name="x")
    seen = [name for name, values in view.fields.items() for _ in values]
    assert sorted(seen) == sorted(name.lower() for name, _ in lines)
    for text in _all_text(view):
        text.encode("utf-8")  # raises on a lone surrogate


@BOUNDED
@given(st.sampled_from(CODEC_NAMES), st.binary(max_size=64))
def test_a_name_that_is_not_a_text_charset_decodes_as_unknown(name: str, data: bytes) -> None:
    text = decode_text(data, name)
    text.encode("utf-8")
    if text_codec(name) is None:
        assert text == decode_text(data, None)


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_every_codec_name_as_an_encoded_word(name: str) -> None:
    for kind in "qb":
        for payload in PAYLOADS:
            words = decode_words("x " + _encoded_word(name, kind, payload) + " y")
            words.encode("utf-8")
    body = f"Content-Type: text/plain; charset={name}\n\n+2AA- \\ud800 caf\xe9\n".encode("latin-1")
    view = MessageView.from_bytes(b"From: a@b.example\n" + body)
    view.body_text.encode("utf-8")


@pytest.mark.parametrize("name", ["punycode", "idna", "utf-7", "unicode_escape"])
def test_slow_or_unsafe_codecs_are_not_used_on_long_values(name: str) -> None:
    payload = "a" * 200_000 + "-" + "z" * 200_000
    started = time.monotonic()
    decoded = decode_words(_encoded_word(name, "q", payload))
    assert time.monotonic() - started < 0.5
    assert decoded == payload


def test_the_stdlib_codec_registry_has_no_new_surrogate_makers() -> None:
    """If a Python release adds a codec that turns ASCII into surrogates, say so."""
    for name in CODEC_NAMES:
        if text_codec(name) is None:
            continue
        for sample in (b"+2AA-", b"\\ud800", b"\xed\xa0\x80", b"\x00\xd8", b"\x00\xd8\x00\x00"):
            try:
                out = sample.decode(codecs.lookup(name).name)
            except (UnicodeDecodeError, ValueError):
                continue
            assert not any(0xD800 <= ord(c) <= 0xDFFF for c in out), (name, sample)

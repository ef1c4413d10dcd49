"""The streaming FETCH parser: what servers send, what it must refuse, and a round trip."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailrules.sources.imap_fetch import FetchError, fetch_stream, parse_fetch, parse_internaldate

HEADER = b'From: a@b.example\r\nSubject: (odd) {3} "quoted"\r\n\r\n'


def test_a_dovecot_header_fetch():
    response = (
        b"* 12 FETCH (UID 4031 FLAGS (\\Seen $Work) RFC822.SIZE 2048 INTERNALDATE "
        b'" 5-Nov-2026 13:50:21 -0130" BODY[HEADER.FIELDS (FROM SUBJECT)] {%d}\r\n%s)\r\n'
        % (len(HEADER), HEADER)
    )
    item = parse_fetch(response)
    assert item[b"UID"] == 4031
    assert item[b"FLAGS"] == (b"\\Seen", b"$Work")
    assert item[b"RFC822.SIZE"] == 2048
    offset = timezone(-timedelta(hours=1, minutes=30))
    assert item[b"INTERNALDATE"] == datetime(2026, 11, 5, 13, 50, 21, tzinfo=offset)
    assert item[b"BODY[HEADER.FIELDS (FROM SUBJECT)]"] == HEADER


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'""', b""),
        (b"NIL", None),
        (b'"a \\"b\\" \\\\c"', b'a "b" \\c'),
        (b"~{2}\r\n\xc3\xa9", "é".encode()),  # literal8 (RFC 3516), as UTF8=ACCEPT may send
    ],
)
def test_headers_may_come_quoted_or_nil(text, expected):
    item = parse_fetch(b"* 1 FETCH (UID 7 BODY[HEADER] %s)\r\n" % text)
    assert item[b"BODY[HEADER]"] == expected


@pytest.mark.parametrize(
    "response",
    [
        b"* 1 FETCH (UID 7 FLAGS (\\Seen)\r\n",  # unclosed list
        b"* 1 FETCH (UID)\r\n",  # a name without a value
        b"* 1 FETCH (UID 7 BODY[HEADER] {10}\r\nshort)\r\n",  # literal past the end
        b"* 1 FETCH (UID 7) trailing\r\n",
        b"* 1 FETCH ((UID) 7)\r\n",
    ],
)
def test_what_is_not_fetch_grammar_is_refused(response):
    with pytest.raises(FetchError):
        parse_fetch(response)


def test_internaldate_needs_the_rfc_3501_form():
    assert parse_internaldate(b"25-Nov-2026 13:50:21 +0000") == datetime(
        2026, 11, 25, 13, 50, 21, tzinfo=UTC
    )
    assert parse_internaldate(b"31-Feb-2026 13:50:21 +0000") is None
    assert parse_internaldate(b"2026-11-25T13:50:21Z") is None


class FakeIMAP:
    """The two reads fetch_stream uses, over canned server output; what it sent is kept."""

    def __init__(self, output: bytes) -> None:
        self.file = io.BytesIO(output)
        self.sent = b""

    def send(self, data: bytes) -> None:
        self.sent += data

    def readline(self) -> bytes:
        return self.file.readline()

    def read(self, size: int) -> bytes:
        return self.file.read(size)


def test_pipelined_commands_and_the_untagged_noise_between_answers():
    server = FakeIMAP(
        b"* 3 EXISTS\r\n"
        b"* 1 FETCH (UID 10 BODY[HEADER] {2}\r\nab)\r\n"
        b"* 2 FETCH (FLAGS (\\Deleted))\r\n"  # unsolicited: no UID, not ours
        b"t0 OK done\r\n"
        b"* 1 EXPUNGE\r\n"
        b"* 4 FETCH (UID 20 BODY[HEADER] {0}\r\n)\r\n"
        b"t1 OK done\r\n"
    )
    got = list(fetch_stream(server, ["10", "20"], "UID BODY.PEEK[HEADER]", b"t"))  # type: ignore[arg-type]
    assert (
        server.sent
        == b"t0 UID FETCH 10 (UID BODY.PEEK[HEADER])\r\nt1 UID FETCH 20 (UID BODY.PEEK[HEADER])\r\n"
    )
    assert [(uid, item[b"BODY[HEADER]"]) for uid, item in got] == [(10, b"ab"), (20, b"")]


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (b"t0 NO [SERVERBUG] oops\r\n", "refused FETCH"),
        (b"* BYE shutting down\r\n", "ended the session"),
        (b"* 1 FETCH (UID 10 BODY[HEADER] {5}\r\nab", "closed the connection"),
        (b"", "closed the connection"),
    ],
)
def test_a_refusal_or_a_lost_connection_is_an_error(output, reason):
    with pytest.raises(FetchError, match=reason):
        list(fetch_stream(FakeIMAP(output), ["10"], "UID", b"t"))  # type: ignore[arg-type]


@given(
    uid=st.integers(1, 2**32 - 1),
    flags=st.lists(st.sampled_from([b"\\Seen", b"\\Flagged", b"$Work", b"NonJunk"]), max_size=4),
    size=st.integers(0, 10**9),
    header=st.binary(max_size=300),
)
def test_what_a_server_sends_is_what_the_parser_gives_back(uid, flags, size, header):
    response = b"* 1 FETCH (UID %d FLAGS (%s) RFC822.SIZE %d " % (uid, b" ".join(flags), size)
    response += b"BODY[HEADER.FIELDS (FROM)] {%d}\r\n%s)\r\n" % (len(header), header)
    item = parse_fetch(response)
    assert item[b"UID"] == uid and item[b"FLAGS"] == tuple(flags)
    assert item[b"RFC822.SIZE"] == size
    assert item[b"BODY[HEADER.FIELDS (FROM)]"] == header

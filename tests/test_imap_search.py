"""The narrowing SEARCH: its bytes on the wire, and what a server that refuses it gets."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import pytest

from mailrules.sources.imap_search import SearchRefused, encode_search, run_search
from tests.test_imap import config, ids, message

pytestmark = pytest.mark.timeout(120)

FAULT_TUNNEL = Path(__file__).with_name("imap_fault_tunnel.py")
CREME = "crème".encode()
ISSUE_RULES = [  # the three rules of the report: from *alice*, subject Attachment, crème
    "OR", ["OR", ["FROM", "alice"], ["SUBJECT", "Attachment"]], ["SUBJECT", CREME],
]  # fmt: skip


def test_a_nested_literal_is_sized_exactly_and_its_group_closes_after_it():
    sent = encode_search(b"A1", ISSUE_RULES, utf8_mode=False, capabilities={b"LITERAL+"})
    assert sent == [
        b'A1 UID SEARCH CHARSET UTF-8 OR (OR (FROM "alice") (SUBJECT "Attachment")) '
        b"(SUBJECT {6+}\r\ncr\xc3\xa8me)\r\n"
    ]


def test_without_literal_plus_each_literal_waits_for_the_servers_go_ahead():
    criteria = ["OR", [["SUBJECT", CREME], ["NOT", ["FROM", "Jörg"]]], ["LARGER", 100]]
    sent = encode_search(b"A1", criteria, utf8_mode=False, capabilities={b"IMAP4REV1"})
    assert sent == [
        b"A1 UID SEARCH CHARSET UTF-8 OR ((SUBJECT {6}\r\n",
        b"cr\xc3\xa8me) (NOT (FROM {5}\r\n",
        b"J\xc3\xb6rg))) (LARGER 100)\r\n",
    ]


def test_literal_minus_covers_small_literals_only():
    big = "é".encode() * 2049  # 4098 octets: over LITERAL-'s 4096
    sent = encode_search(b"A1", ["OR", ["SUBJECT", CREME], ["SUBJECT", big]],
                         utf8_mode=False, capabilities={b"LITERAL-"})  # fmt: skip
    assert sent[0].endswith(b"(SUBJECT {4098}\r\n") and b"{6+}\r\ncr\xc3\xa8me)" in sent[0]
    assert sent[1] == big + b")\r\n"
    rev2 = encode_search(b"A1", ["SUBJECT", CREME], utf8_mode=False, capabilities={b"IMAP4rev2"})
    assert rev2 == [b"A1 UID SEARCH CHARSET UTF-8 SUBJECT {6+}\r\ncr\xc3\xa8me\r\n"]


def test_no_charset_once_utf8_is_enabled():
    sent = encode_search(b"A1", ["SUBJECT", CREME], utf8_mode=True, capabilities={b"LITERAL+"})
    assert sent == [b"A1 UID SEARCH SUBJECT {6+}\r\ncr\xc3\xa8me\r\n"]
    ascii_only = encode_search(b"A2", ["FROM", "a"], utf8_mode=False, capabilities=set())
    assert ascii_only == [b'A2 UID SEARCH FROM "a"\r\n']


def test_every_key_the_rules_produce_is_sent_in_its_own_grammar():
    criteria = ["UID", "5:*", "HEADER", "LIST-ID", 'a "q" \\ b', "KEYWORD", "Work",
                "SINCE", date(2026, 2, 3), "SMALLER", 7, "UNSEEN", "DELETED"]  # fmt: skip
    (sent,) = encode_search(b"T", criteria, utf8_mode=False, capabilities=set())
    assert sent == (
        b'T UID SEARCH UID 5:* HEADER "LIST-ID" "a \\"q\\" \\\\ b" KEYWORD Work '
        b"SINCE 3-Feb-2026 SMALLER 7 UNSEEN DELETED\r\n"
    )
    with pytest.raises(ValueError, match="cannot be sent as an IMAP keyword"):
        encode_search(b"T", ["KEYWORD", "two words"], utf8_mode=False, capabilities=set())


class ScriptedServer:
    """The imaplib side of a connection: records what is sent, answers from a script."""

    def __init__(self, answers: list[bytes]) -> None:
        self.sent: list[bytes] = []
        self.lines = [line + b"\r\n" for a in answers for line in a.split(b"\r\n") if line]
        self.untagged_responses: dict[str, list[bytes]] = {}

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def readline(self) -> bytes:
        return self.lines.pop(0) if self.lines else b""

    def read(self, size: int) -> bytes:
        raise AssertionError("no literals in these answers")

    def _append_untagged(self, typ: str, dat: bytes) -> None:
        self.untagged_responses.setdefault(typ, []).append(dat)


def test_a_refused_literal_is_a_refusal_and_the_rest_is_never_sent():
    segments = encode_search(b"A1", ISSUE_RULES, utf8_mode=False, capabilities=set())
    server = ScriptedServer([b"A1 NO CHARSET is not valid in UTF8 mode as per RFC 6855"])
    with pytest.raises(SearchRefused) as refused:
        run_search(server, segments)  # type: ignore[arg-type]
    assert refused.value.answer == "NO CHARSET is not valid in UTF8 mode as per RFC 6855"
    assert server.sent == segments[:1]


def test_search_results_and_the_news_around_them():
    segments = encode_search(b"A1", ISSUE_RULES, utf8_mode=False, capabilities=set())
    server = ScriptedServer(
        [b"+ go ahead", b"* 9 EXISTS\r\n* SEARCH 3 5 (MODSEQ 12)\r\nA1 OK done"]
    )
    assert run_search(server, segments) == [3, 5]  # type: ignore[arg-type]
    assert server.sent == segments
    assert server.untagged_responses == {"EXISTS": [b"9"]}  # kept for the IDLE watcher


def fault_tunnel(box, log: Path, *options: str) -> str:
    argv = [sys.executable, str(FAULT_TUNNEL), str(log), *options, "--", *box.argv]
    return "{tunnel: [" + ", ".join(f"'{a}'" for a in argv) + "]}"


# Rules whose non-ASCII criterion the narrowing SEARCH puts at nesting depth 0 to 3.
DEPTHS = {
    0: "- {name: c, when: {subject: crème}, then: [{move: Creme}]}\n",
    1: "- {name: a, when: {from: '*alice*'}, then: [{move: Alice}]}\n"
       "- {name: c, when: {subject: crème}, then: [{move: Creme}]}\n",
    2: "- {name: a, when: {from: '*alice*'}, then: [{move: Alice}]}\n"
       "- {name: c, when: {all: [{subject: crème}, {larger_than: 1}]}, then: [{move: Creme}]}\n",
    3: "- {name: a, when: {from: '*alice*'}, then: [{move: Alice}]}\n"
       "- {name: c, when: {all: [{any: [{subject: crème}, {from: nobody@x.example}]},"
       " {larger_than: 1}]}, then: [{move: Creme}]}\n",
}  # fmt: skip
WIRE = {  # what each of those sends after CHARSET UTF-8 (and the half's UID range)
    0: b"SUBJECT <creme>\r\n",
    1: b'OR (FROM "alice") (SUBJECT <creme>)\r\n',
    2: b'OR (FROM "alice") ((SUBJECT <creme>) (LARGER 1))\r\n',
    3: b'OR (FROM "alice") ((OR (SUBJECT <creme>) (FROM "nobody@x.example")) (LARGER 1))\r\n',
}


@pytest.mark.parametrize("literal_plus", [True, False], ids=["LITERAL+", "synchronizing"])
@pytest.mark.parametrize("depth", sorted(DEPTHS))
def test_non_ascii_criteria_at_every_depth_are_searched_by_dovecot(
    dovecot_preauth, tmp_path, run_cli, depth, literal_plus
):
    box = dovecot_preauth
    box.append("INBOX", message("c1", "carol@x.example", "Café crème"))
    box.append("INBOX", message("a1", "alice@x.example", "hello"))
    box.append("INBOX", message("o1", "bob@x.example", "other"))
    log = tmp_path / "sent.log"
    drop = () if literal_plus else ("--drop-caps", "LITERAL+ LITERAL-")
    cfg = config(tmp_path, fault_tunnel(box, log, *drop), rules=DEPTHS[depth])

    result = run_cli("run", "--once", "--all", "-c", str(cfg))

    assert result.returncode == 0, result.stderr
    assert "refused" not in result.stderr, result.stderr  # the server searched, nothing fell back
    assert ids(box, "Creme") == ["<c1@t>"]
    sent = log.read_bytes()
    literal = (b"{6+}\r\n" if literal_plus else b"{6}\r\n") + CREME
    assert WIRE[depth].replace(b"<creme>", literal) in sent
    assert b"CHARSET UTF-8" in sent


@pytest.mark.parametrize(
    "answer",
    ["NO CHARSET is not valid in UTF8 mode as per RFC 6855",  # Courier
     "BAD Server error: SEARCH failed: must be str, not bytes"],  # Twisted
)  # fmt: skip
def test_a_refused_narrowing_search_falls_back_with_one_clear_line(
    dovecot_preauth, tmp_path, run_cli, answer
):
    box = dovecot_preauth
    box.append("INBOX", message("c1", "carol@x.example", "Café crème"))
    box.append("INBOX", message("a1", "alice@x.example", "hello"))
    log = tmp_path / "sent.log"
    tunnel = fault_tunnel(box, log, "--drop-caps", "LITERAL+", "--refuse-search", answer)
    cfg = config(tmp_path, tunnel, rules=DEPTHS[1])

    result = run_cli("run", "--once", "--all", "-c", str(cfg))

    assert result.returncode == 0, result.stderr
    assert ids(box, "Creme") == ["<c1@t>"] and ids(box, "Alice") == ["<a1@t>"]
    warnings = [line for line in result.stderr.splitlines() if "refused" in line]
    assert len(warnings) == 1, result.stderr
    assert f"the server refused the narrowing SEARCH ({answer})" in warnings[0]
    assert "b'" not in result.stderr and "Traceback" not in result.stderr
    assert "2 new messages, 2 actions done, 0 failed" in result.stdout


def test_after_enable_utf8_the_search_names_no_charset(dovecot_preauth, tmp_path, run_cli):
    from tests.test_imap import UTF8_TUNNEL

    box = dovecot_preauth
    box.append("INBOX", message("c1", "carol@x.example", "Café crème"))
    box.append("INBOX", message("o1", "bob@x.example", "other"))
    log = tmp_path / "sent.log"
    argv = [sys.executable, str(UTF8_TUNNEL), str(log), *box.argv]
    tunnel = "{tunnel: [" + ", ".join(f"'{a}'" for a in argv) + "]}"
    cfg = config(tmp_path, tunnel, rules=DEPTHS[0])

    result = run_cli("run", "--once", "--all", "-c", str(cfg))

    assert result.returncode == 0, result.stderr
    assert ids(box, "Creme") == ["<c1@t>"]
    sent = log.read_bytes()
    assert b"ENABLE UTF8=ACCEPT" in sent and b"SUBJECT {6+}\r\n" in sent
    assert b"CHARSET" not in sent  # RFC 6855 s3: Courier refuses it in UTF-8 mode

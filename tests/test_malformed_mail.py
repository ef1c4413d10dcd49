"""A malformed message never crashes the run, and a malformed config never crashes the loader.

Property tests feed arbitrary header bytes to MessageView and arbitrary YAML to the
config loader; CLI tests put broken files into a real Maildir next to good mail.
"""

from __future__ import annotations

import random
import re
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrules.config.load import parse_config
from mailrules.errors import ConfigError
from mailrules.message import ADDRESS_HEADERS, Address, Attachment, MessageView
from tests.helpers_maildir import Workspace, message, put, scan

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples every run
    suppress_health_check=[HealthCheck.too_slow],
)
SMALLER = settings(PROPERTY, max_examples=200)

# -- MessageView never raises -------------------------------------------------------------

NASTY_LINES = [
    b"From: <",
    b'From: "',
    b"From: :;<",
    b'From: "a\\',
    b"From: =?utf-8?q?=FF=FE?= <a@b>",
    b'From: a@b@c, <@>, ,,, "" <>',
    b"To: undisclosed-recipients:;",
    b"Cc: (comment only)",
    b"Reply-To: <a@b",
    b"Return-Path: <>",
    b"Message-ID: <[]@>",
    b"Message-ID: <<<>>>",
    b"Message-ID:",
    b"Subject: =?x-unknown-charset?q?caf=E9?=",
    b"Subject: =?utf-8?b?!!!not-base64?=",
    b"Subject: =?utf-8?q?unterminated",
    b"Subject: =?=?=?",
    b"Subject: =?utf-8*en?q?lang?=",
    b"Subject: \xc9t\xe9 latin-1",
    b"Subject: \xc3\x89t\xc3\xa9 utf-8",
    b"Subject: \xff\xfe\x00\x01",
    b"Subject: " + b"x" * 20000,
    b"Date: not a date",
    b"Date: Mon, 99 Foo 2024 99:99:99 +9999",
    b"Date: 0",
    b"Date: Thu, 1 Jan 99999999999 00:00:00 +0000",
    b"Date: Fri, 13 Dec 1901 20:45:52 -2400",
    b"List-Id: <",
    b"List-Id: Phrase <a.b.example> <c.d>",
    b"Content-Type: multipart/mixed; boundary=",
    b'Content-Type: multipart/mixed; boundary="b"',
    b"Content-Type: text/plain; charset=utf-99",
    b"Content-Type: text/plain; charset*=x''%FF",
    b"Content-Type: ;;;",
    b"Content-Transfer-Encoding: base64",
    b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Disposition: attachment; filename*=utf-8''%E9%ZZ",
    b"Content-Disposition: attachment; filename*0*=x; filename*1=y",
    b" continuation line",
    b"\tcontinuation line",
    b"no colon on this line",
    b": empty name",
    b"Bad Name: spaces in the name",
    b"From mbox-style line",
    b"\x00\x00\x00",
    b"\r",
]
NASTY_BODIES = [
    b"",
    b"plain body\n",
    b"--b\nContent-Type: text/plain\n\nintact\n--b\nContent-Transfer-Encoding: base64\n\nAAA",
    b"--b\n\n--b--\n--b--\n",
    b"=E9=\n=ZZ=\n",
    b"!!!! not base64 ====",
    b"<html><body><p>x</p><script>y",
    bytes(range(256)),
]
HEADER_NAMES = [b"From", b"To", b"Cc", b"Subject", b"Date", b"Message-ID", b"List-Id"]
HEADER_NAMES += [b"Content-Type", b"Content-Transfer-Encoding", b"Content-Disposition"]
VALUE_ALPHABET = '<>"@:;,()[]\\=?_ \t.abcé\x00\u2028\udcff'

header_value = st.one_of(
    st.binary(max_size=80),
    st.text(alphabet=VALUE_ALPHABET, max_size=60).map(
        lambda s: s.encode("utf-8", "surrogateescape")
    ),
)
header_line = st.one_of(
    st.sampled_from(NASTY_LINES),
    st.builds(lambda n, v: n + b": " + v, st.sampled_from(HEADER_NAMES), header_value),
    st.binary(max_size=120),
)
raw_message = st.builds(
    lambda lines, sep, blank, body: sep.join(lines) + (sep + sep + body if blank else body),
    st.lists(header_line, max_size=12),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.booleans(),
    st.one_of(st.sampled_from(NASTY_BODIES), st.binary(max_size=200)),
)


def read_everything(view: MessageView) -> None:
    """Call every accessor a rule or the CLI uses; check the types they promise."""
    assert isinstance(view.fields, dict)
    for name in ("from", "to", "subject", "message-id", "date", "list-id", "content-type", "x-y"):
        assert isinstance(view.header(name), str)
        assert all(isinstance(v, str) for v in view.header_all(name))
        assert isinstance(view.has_header(name), bool)
    for kind in (*ADDRESS_HEADERS, "x-custom"):
        for addr in view.addresses(kind):
            assert isinstance(addr, Address)
            assert isinstance(addr.local, str) and isinstance(addr.domain, str)
            assert isinstance(addr.name, str) and isinstance(addr.address, str)
    assert isinstance(view.subject, str)
    assert isinstance(view.message_id, str)
    assert view.date is None or isinstance(view.date, datetime)
    assert isinstance(view.when, datetime)
    assert isinstance(view.list_id, str)
    assert isinstance(view.body_text, str)
    assert all(isinstance(a, Attachment) for a in view.attachments)
    assert isinstance(view.raw(), bytes)
    assert all(isinstance(d, str) for d in view.defects)


@PROPERTY
@given(raw_message)
def test_message_view_never_raises(data: bytes) -> None:
    read_everything(MessageView.from_bytes(data, name="x"))


@SMALLER
@given(st.lists(header_line, max_size=12), st.sampled_from([b"\n", b"\r\n"]))
def test_header_only_view_never_raises(lines: list[bytes], sep: bytes) -> None:
    """As the Maildir source builds it when no rule needs the body: no loader at all."""
    read_everything(MessageView(header_block=sep.join(lines) + sep, name="x"))


@pytest.mark.parametrize("line", NASTY_LINES, ids=lambda b: repr(b[:30]))
def test_each_known_trap_alone(line: bytes) -> None:
    for body in NASTY_BODIES:
        read_everything(MessageView.from_bytes(line + b"\n\n" + body, name="x"))
        read_everything(MessageView.from_bytes(b"X-A: 1\n" + line + b"\n\n" + body, name="x"))


# -- the config loader only ever raises ConfigError, with FILE:line:col lines --------------

CONDITION_KEYS = [
    "all", "any", "not", "from", "to", "cc", "recipient", "sender", "subject", "header",
    "contains", "is", "matches", "regex", "exists", "case_sensitive", "list", "body",
    "attachment", "larger_than", "smaller_than", "older_than", "newer_than", "flags",
    "keywords", "command", "name", "bogus",
]  # fmt: skip
ACTION_KEYS = [
    "move", "copy", "delete", "flag", "unflag", "keyword", "unkeyword", "mark_read",
    "mark_unread", "deliver", "run", "stop", "expunge", "path", "folder", "argv", "timeout",
]  # fmt: skip
ACCOUNT_KEYS = ["maildir", "layout", "folders", "existing", "trash", "imap", "bogus"]
RULE_KEYS = ["name", "description", "enabled", "accounts", "folders", "when", "then", "x"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        ["INBOX", "a/b", "../x", ".hidden", "*.pdf", "[", "(?P<x", "{date.year}", "{nope",
         "$Label", "\\Seen", "seen", "7d", "10MB", "no", "1:30", "010", "~/Mail", "${NOPE}",
         "maildir++", "fs", "process", "skip", "a\nb", "\t", ""]
    ),
)  # fmt: skip


def _tree(keys: list[str]) -> st.SearchStrategy:
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(st.sampled_from(keys), inner, max_size=3),
        ),
        max_leaves=8,
    )


account = st.dictionaries(st.sampled_from(ACCOUNT_KEYS), _tree(ACCOUNT_KEYS), max_size=4)
rule = st.dictionaries(
    st.sampled_from(RULE_KEYS),
    st.one_of(_tree(CONDITION_KEYS), _tree(ACTION_KEYS)),
    max_size=6,
)
config_doc = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "accounts": st.one_of(
                st.dictionaries(st.sampled_from(["local", "x", "1"]), account, max_size=2),
                SCALARS,
            ),
            "rules": st.one_of(st.lists(rule, max_size=4), SCALARS),
            "extra": SCALARS,
        },
    ),
    _tree(["accounts", "rules"]),
)


def _yaml_text(doc: object, cut: int | None, noise: str) -> str:
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    if cut is not None:  # damage it: cut it short and splice in noise
        at = cut % (len(text) + 1)
        text = text[:at] + noise + text[at:]
    return text


def check_loader(text: str) -> None:
    try:
        parse_config(text, "FILE")
    except ConfigError as exc:
        lines = str(exc).splitlines()
        assert lines, "a ConfigError with no problem in it"
        for line in lines:
            assert re.match(r"^FILE:\d+:\d+: ", line), f"not FILE:line:col: {line!r}"


@PROPERTY
@given(config_doc, st.one_of(st.none(), st.integers(0, 10**6)), st.text(max_size=6))
def test_config_loader_raises_only_config_errors(doc: object, cut: int | None, noise: str) -> None:
    check_loader(_yaml_text(doc, cut, noise))


@SMALLER
@given(st.text(alphabet=":-[]{}&*!|>'\"%@`#,? \n\tabc0", max_size=80))
def test_config_loader_survives_yaml_syntax_noise(text: str) -> None:
    check_loader(text)


# -- the CLI on a Maildir full of broken mail ---------------------------------------------

TRUNCATED_PDF = b"JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmls"
BROKEN = {
    "1700000001.M1P1Q1.empty": b"",
    "1700000002.M2P1Q2.binary": random.Random(7).randbytes(4096),
    "1700000003.M3P1Q3.hugeline": (
        b"From: big@example.org\nMessage-ID: <huge@test.example>\nSubject: "
        + b"x" * (1024 * 1024)
        + b"\n\nbody\n"
    ),
    "1700000004.M4P1Q4.truncmime": (
        b"From: mime@example.org\nMessage-ID: <trunc@test.example>\nSubject: truncated\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="XYZ"\n\n'
        b"--XYZ\nContent-Type: text/plain\n\nnothing to see\n"
        b'--XYZ\nContent-Type: application/pdf; name="a.pdf"\n'
        b"Content-Transfer-Encoding: base64\n\n" + TRUNCATED_PDF[:-3]
    ),
    "1700000005.M5P1Q5.charsets": (
        b"From: =?utf-8?b?!!not-base64?= <cs@example.org>\n"
        b"Message-ID: <charsets@test.example>\n"
        b"Subject: =?x-unknown-charset?q?caf=E9?= =?utf-99?b?w6k=?=\n"
        b'Content-Type: text/plain; charset="utf-99"\n\n'
        b"caf\xe9 \xff\xfe\n"
    ),
    "1700000006.M6P1Q6.latin1": (
        b"From: fr@example.org\nMessage-ID: <latin1@test.example>\n"
        b"Subject: \xc9t\xe9 2024\n\nbody\n"
    ),
    "1700000007.M7P1Q7.baddate": (
        b"From: date@example.org\nMessage-ID: <baddate@test.example>\n"
        b"Date: Thu, 32 Foo 20x4 25:61:00 +9999\nSubject: when?\n\nbody\n"
    ),
    "1700000008.M8P1Q8.intact": (
        b"From: half@example.org\nMessage-ID: <intact@test.example>\nSubject: half\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b1"\n\n'
        b"--b1\nContent-Type: text/plain; charset=utf-8\n\n"
        b"The intact-text-marker is here.\n"
        b'--b1\nContent-Type: application/octet-stream; name="x.bin"\n'
        b"Content-Transfer-Encoding: base64\n\nAAAAAAAA" + TRUNCATED_PDF[:13]
    ),
    "1700000010.M10P1Q10.hugeyear": (
        b"From: y@example.org\nMessage-ID: <hugeyear@test.example>\n"
        b"Date: Thu, 1 Jan 99999999999 00:00:00 +0000\nSubject: far future\n\nbody\n"
    ),
}
GOOD = "1700000011.M11P1Q11.good"
RULES = """\
  - name: ancient
    when: {older_than: 36500d}
    then: [{move: Ancient}]
  - name: accents
    when: {subject: {contains: "Été"}}
    then: [{move: Accents}]
  - name: intact text
    when: {body: intact-text-marker}
    then: [{move: Bodies}]
  - name: good
    when: {from: good@example.com}
    then: [{move: Good}]
"""
MOVED = {"1700000006.M6P1Q6.latin1": "Accents", "1700000008.M8P1Q8.intact": "Bodies", GOOD: "Good"}
# Files that are broken beyond "unusual": a user running -v should hear about each one.
MUST_WARN = [
    "1700000001.M1P1Q1.empty",
    "1700000002.M2P1Q2.binary",
    "1700000004.M4P1Q4.truncmime",
    "1700000008.M8P1Q8.intact",
]


@pytest.fixture
def broken_maildir(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path).setup(RULES, "    existing: process\n")
    for name, data in BROKEN.items():
        put(ws.root, name, data)
    put(ws.root, GOOD, message("<good@test.example>", "fine", sender="good@example.com"))
    return ws


def _where(ws: Workspace) -> dict[str, tuple[str, bytes]]:
    return {e.unique: (e.folder, e.data) for e in scan(ws.root)}


@pytest.mark.timeout(120)
def test_broken_mail_does_not_stop_the_run(broken_maildir: Workspace) -> None:
    ws = broken_maildir
    before = _where(ws)
    result = ws.run("run", "--once", "-v")
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    after = _where(ws)
    assert set(after) == set(before), "a message was lost"
    for unique, (folder, data) in after.items():
        assert folder == MOVED.get(unique, "INBOX"), unique
        assert data == before[unique][1], f"{unique} was altered"
    # Nothing new on a second run, and still no crash.
    again = ws.run("run", "--once")
    assert again.returncode == 0
    assert _where(ws) == after


@pytest.fixture(scope="module")
def verbose_run_warnings(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    ws = Workspace(tmp_path_factory.mktemp("warnings")).setup(RULES, "    existing: process\n")
    for name, data in BROKEN.items():
        put(ws.root, name, data)
    result = ws.run("run", "--once", "-v")
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")[-2000:]
    return [
        line
        for line in result.stderr.decode("utf-8", "replace").splitlines()
        if " WARNING " in line or " ERROR " in line
    ]


@pytest.mark.parametrize("name", MUST_WARN)
def test_broken_mail_is_named_in_a_warning(verbose_run_warnings: list[str], name: str) -> None:
    assert any(name in w for w in verbose_run_warnings), (
        f"running with -v, no warning names {name}; the warnings were: {verbose_run_warnings}"
    )


def test_raw_8bit_subject_matches_in_either_encoding(tmp_path: Path) -> None:
    ws = Workspace(tmp_path).setup(RULES, "    existing: process\n")
    latin1 = b"From: a@example.org\nMessage-ID: <l1@t>\nSubject: R\xe9sum\xe9 \xc9t\xe9\n\nx\n"
    utf8 = "From: a@example.org\nMessage-ID: <u8@t>\nSubject: Résumé Été\n\nx\n".encode()
    mixed = b"From: \xc3\xa9 <a@example.org>\nMessage-ID: <mx@t>\nSubject: \xc9t\xe9\n\nx\n"
    for i, data in enumerate((latin1, utf8, mixed)):
        put(ws.root, f"{1700000000 + i}.M{i}P1Q{i}.t", data, "S")
    result = ws.run("run", "--once")
    assert result.returncode == 0, result.stderr.decode()
    assert {e.message_id: e.folder for e in scan(ws.root)} == {
        "<l1@t>": "Accents",
        "<u8@t>": "Accents",
        "<mx@t>": "Accents",
    }


def test_explain_reads_broken_files(broken_maildir: Workspace) -> None:
    files = sorted((broken_maildir.root / "new").iterdir())
    result = broken_maildir.run("explain", *map(str, files))
    out = result.stdout.decode("utf-8", "replace")
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert out.count("  result: ") == len(files)
    assert "Subject: 'Été 2024'" in out


def test_control_character_in_config_is_a_config_error(tmp_path: Path) -> None:
    """A stray control character (a paste from a terminal) gets file:line:col, not a traceback."""
    ws = Workspace(tmp_path).setup("  - name: x\n    then: [stop]\n")
    ws.config.write_text(ws.config.read_text().replace("name: x", "name: x\x1b[0m"))
    result = ws.run("check")
    err = result.stderr.decode()
    assert "Traceback" not in err, err
    assert result.returncode == 2
    assert re.search(rf"^{re.escape(str(ws.config))}:\d+:\d+: ", err, re.MULTILINE), err

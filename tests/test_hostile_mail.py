"""A hostile sender: mail built to crash, hang or fool the rules, through the real CLI.

Each test puts a crafted message next to a normal one in a real Maildir (or feeds it to
``deliver`` / ``explain``) and checks what a user notices: no traceback, the run ends in
bounded time, the crafted message is handled as the README says, and the normal message
after it is still processed.
"""

from __future__ import annotations

import base64
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers_maildir import Workspace, cli_env, message, put, scan

NORMAL = "1700009999.M9999P1Q1.normal"
RULES = """\
  - name: orders
    when: {from: orders@acme.example}
    then: [{move: Orders}]
  - name: boss
    when: {from: boss@example.com}
    then: [{move: Boss}]
  - name: dmarc
    when: {header: Authentication-Results, contains: "dmarc=pass"}
    then: [{move: Trusted}]
  - name: normal
    when: {subject: "normal message"}
    then: [{move: Normal}]
"""


def _ws(tmp_path: Path, rules: str = RULES) -> Workspace:
    return Workspace(tmp_path).setup(rules, "    existing: process\n")


def _folders(ws: Workspace) -> dict[str, str]:
    """Message-ID -> folder, for every message in the tree."""
    return {e.message_id or e.filename: e.folder for e in scan(ws.root)}


def _run(ws: Workspace, *extra: str, timeout: float = 60) -> str:
    """run --once; assert a clean exit and no traceback; return stdout + stderr."""
    done = ws.run("run", "--once", *extra, timeout=timeout)
    out = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in out, out[-3000:]
    assert done.returncode == 0, out[-3000:]
    return out


def _explain(ws: Workspace, path: Path) -> str:
    done = ws.run("explain", str(path))
    out = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in out, out[-3000:]
    assert done.returncode == 0, out[-3000:]
    return out


def _deliver(ws: Workspace, data: bytes) -> str:
    done = ws.run("deliver", stdin=data)
    out = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in out, out[-3000:]
    assert done.returncode == 0, out[-3000:]
    return out


def _with_normal(ws: Workspace, name: str, data: bytes) -> Path:
    path = put(ws.root, name, data)
    put(ws.root, NORMAL, message("<normal@test.example>", "normal message"))
    return path


# -- lone surrogates and codecs that are not text charsets ---------------------------------

SURROGATE_SUBJECTS = [
    b"=?utf-7?q?+2AA-?=",
    b"=?unicode_escape?q?=5Cud800?=",
    b"=?raw_unicode_escape?q?=5Cudfff?=",
    b"=?utf-7?b?K2RnQS0=?=",
]


@pytest.mark.parametrize("subject", SURROGATE_SUBJECTS, ids=lambda s: s.split(b"?")[1].decode())
def test_surrogate_subject_is_processed_once(tmp_path: Path, subject: bytes) -> None:
    rules = RULES + "  - name: tag\n    when: {subject: '2A'}\n    then: [{flag: flagged}]\n"
    ws = _ws(tmp_path, rules)
    data = b"From: orders@acme.example\nMessage-ID: <sur@test.example>\nSubject: " + subject
    path = _with_normal(ws, "1700000001.M1P1Q1.sur", data + b"\n\nbody\n")
    explained = _explain(ws, path)
    assert "Subject: '" in explained
    out = _run(ws)
    assert _folders(ws) == {"<sur@test.example>": "Orders", "<normal@test.example>": "Normal"}
    assert "2 new messages" in out, out
    # The state recorded both: a second run has nothing to do.
    again = _run(ws)
    assert "0 new messages" in again, again
    state = ws.run("state")
    assert state.returncode == 0, state.stderr.decode("utf-8", "replace")[-2000:]
    assert b"Traceback" not in state.stdout + state.stderr


def test_surrogate_subject_through_deliver(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    data = b"From: orders@acme.example\nMessage-ID: <d@test.example>\nSubject: =?utf-7?q?+2AA-?="
    _deliver(ws, data + b"\n\nbody\n")
    assert _folders(ws) == {"<d@test.example>": "Orders"}


def test_codec_that_is_not_a_charset_decodes_as_unknown(tmp_path: Path) -> None:
    """rot13 or base64 as a 'charset' is decoded as an unknown charset would be."""
    ws = _ws(tmp_path)
    data = (
        b"From: a@example.org\nMessage-ID: <r@test.example>\n"
        b"Subject: =?rot13?q?abezny_zrffntr?=\n\nbody\n"
    )
    path = put(ws.root, "1700000001.M1P1Q1.rot", data)
    assert "Subject: 'abezny zrffntr'" in _explain(ws, path)


def test_punycode_subject_of_400k_is_quick(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    text = base64.b64encode(b"a" * 200_000 + b"-" + b"z" * 100_000)
    data = b"From: a@example.org\nMessage-ID: <p@test.example>\nSubject: =?punycode?b?" + text
    path = _with_normal(ws, "1700000001.M1P1Q1.puny", data + b"?=\n\nbody\n")
    assert len(text) > 400_000
    started = time.monotonic()
    _explain(ws, path)
    _run(ws)
    assert time.monotonic() - started < 10  # two whole CLI runs; it took minutes before
    assert _folders(ws)["<normal@test.example>"] == "Normal"


# -- header smuggling --------------------------------------------------------------------

SMUGGLERS = ["\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"]


@pytest.mark.parametrize("sep", SMUGGLERS, ids=lambda s: f"U+{ord(s):04X}")
def test_forged_header_inside_another_is_not_seen(tmp_path: Path, sep: str) -> None:
    ws = _ws(tmp_path)
    forged = (
        f"From: stranger@evil.example\nMessage-ID: <s@test.example>\n"
        f"Subject: hello{sep}From: boss@example.com{sep}Authentication-Results: x; dmarc=pass\n"
        f"\nbody\n"
    ).encode()
    path = _with_normal(ws, "1700000001.M1P1Q1.smuggle", forged)
    explained = _explain(ws, path)
    assert "boss@example.com" not in explained.split("Subject:")[0]
    _run(ws)
    assert _folders(ws) == {"<s@test.example>": "INBOX", "<normal@test.example>": "Normal"}
    _deliver(ws, forged.replace(b"<s@", b"<s2@"))
    assert _folders(ws)["<s2@test.example>"] == "INBOX"


def test_crlf_and_lf_are_line_ends(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    crlf = b"From: boss@example.com\r\nMessage-ID: <c@test.example>\r\nSubject: x\r\n\r\nbody\r\n"
    put(ws.root, "1700000001.M1P1Q1.crlf", crlf)
    _run(ws)
    assert _folders(ws) == {"<c@test.example>": "Boss"}


# -- a display name read as an address ------------------------------------------------------

FOOLING_FROMS = [
    "orders@acme.example <evil@phish.example>",
    "evil@x)<orders@acme.example>",
    "orders@acme.example (x) <evil@phish.example>",
    "<evil@phish.example> orders@acme.example",
    '"x" orders@acme.example',
    "orders@acme.example evil@phish.example",
    'orders@acme.example" <evil@phish.example>',
    "(orders@acme.example) evil@phish.example",
    "evil@phish.example (orders@acme.example",
    "orders@acme.example <evil@phish.example",
    "Orders <orders@acme.example@phish.example>",
    "<orders@acme.example <evil@phish.example>>",
]


@pytest.mark.parametrize("sender", FOOLING_FROMS)
def test_display_name_is_never_the_address(tmp_path: Path, sender: str) -> None:
    ws = _ws(tmp_path)
    data = message("<f@test.example>", "invoice", sender=sender)
    path = _with_normal(ws, "1700000001.M1P1Q1.fool", data)
    explained = _explain(ws, path)
    assert "[MATCH] orders" not in explained, explained
    _run(ws)
    assert _folders(ws) == {"<f@test.example>": "INBOX", "<normal@test.example>": "Normal"}
    _deliver(ws, data.replace(b"<f@", b"<f2@"))
    assert _folders(ws)["<f2@test.example>"] == "INBOX"


GENUINE_FROMS = [
    "orders@acme.example",
    "<orders@acme.example>",
    "Acme Orders <orders@acme.example>",
    '"Orders, Acme" <orders@acme.example>',
    '"orders@acme.example" <ORDERS@acme.example>',
    "orders@acme.example (Acme Orders)",
    "=?utf-8?q?Acme_=C3=B6rders?= <orders@acme.example>",
    "someone@else.example, Orders <orders@acme.example>",
    "Acme: orders@acme.example, x@y.example;",
    "Acme (the shop) <orders@acme.example>",
    "Acme\n <orders@acme.example>",
]


@pytest.mark.parametrize("sender", GENUINE_FROMS)
def test_genuine_address_still_matches(tmp_path: Path, sender: str) -> None:
    ws = _ws(tmp_path)
    put(ws.root, "1700000001.M1P1Q1.ok", message("<g@test.example>", "invoice", sender=sender))
    _run(ws)
    assert _folders(ws) == {"<g@test.example>": "Orders"}


# -- ReDoS --------------------------------------------------------------------------------

REDOS_RULES = """\
  - name: bait
    when: {subject: {regex: '(a+)+$'}}
    then: [{move: Bait}]
  - name: overlap
    when: {subject: {regex: '^(a|aa)+$'}}
    then: [{move: Overlap}]
  - name: normal
    when: {subject: "normal message"}
    then: [{move: Normal}]
"""


def test_check_warns_about_nested_quantifiers(tmp_path: Path) -> None:
    ws = _ws(tmp_path, REDOS_RULES)
    done = ws.run("check")
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert f"{ws.config}:7:" in err and "warning" in err and "nested quantifiers" in err, err
    assert "'^(a|aa)+$'" not in err  # no nested quantifier there: the timeout bounds it
    assert b"OK" in done.stdout


def test_redos_bait_does_not_hang_the_run(tmp_path: Path) -> None:
    ws = _ws(tmp_path, REDOS_RULES)
    bait = message("<bait@test.example>", "a" * 40 + "!")
    path = _with_normal(ws, "1700000001.M1P1Q1.bait", bait)
    started = time.monotonic()
    explained = _explain(ws, path)
    assert "gave up after" in explained and "treated as no match" in explained, explained
    out = _run(ws, "-v", timeout=30)
    assert "gave up after" in out, out
    _deliver(ws, bait.replace(b"<bait@", b"<bait2@"))
    assert time.monotonic() - started < 20
    assert _folders(ws) == {
        "<bait@test.example>": "INBOX",
        "<bait2@test.example>": "INBOX",
        "<normal@test.example>": "Normal",
    }


def test_regex_still_matches_and_captures(tmp_path: Path) -> None:
    rules = (
        "  - name: invoices\n"
        "    when: {subject: {regex: 'invoice #?(?P<number>\\d+)'}}\n"
        "    then: [{move: 'Invoices/{match.number}'}]\n"
        "  - name: by regex address\n"
        "    when: {from: '/^boss@example\\.(com|org)$/'}\n"
        "    then: [{move: Boss}]\n"
    )
    ws = _ws(tmp_path, rules)
    put(ws.root, "1700000001.M1P1Q1.inv", message("<i@test.example>", "Your INVOICE #42"))
    put(ws.root, "1700000002.M2P1Q2.boss", message("<b@t.example>", "hi", "boss@example.org"))
    _run(ws)
    assert _folders(ws) == {"<i@test.example>": "Invoices/42", "<b@t.example>": "Boss"}


# -- memory: a huge attachment with a body rule ----------------------------------------------

BODY_RULES = """\
  - name: big attachment
    when: {attachment: {name: "*.bin", larger_than: 10MB}}
    then: [{keyword: Big}]
  - name: body
    when: {body: marker-word}
    then: [{move: Body}]
  - name: normal
    when: {subject: "normal message"}
    then: [{move: Normal}]
"""
PEAK_RSS = """\
import resource, subprocess, sys
with open(sys.argv[1], "rb") as stdin:
    done = subprocess.run(sys.argv[2:], stdin=stdin, capture_output=True)
sys.stdout.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n")
sys.stdout.write(done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace"))
sys.exit(done.returncode)
"""


def big_attachment_message(size: int, msgid: str = "<big@test.example>") -> bytes:
    blob = base64.encodebytes(random.Random(5).randbytes(size))
    return (
        b"From: a@example.org\nSubject: big\nMessage-ID: " + msgid.encode() + b"\n"
        b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XYZ\n\n"
        b"--XYZ\nContent-Type: text/plain; charset=utf-8\n\nthe marker-word is here\n"
        b"--XYZ\nContent-Type: application/octet-stream\n"
        b"Content-Disposition: attachment; filename=big.bin\n"
        b"Content-Transfer-Encoding: base64\n\n" + blob + b"--XYZ--\n"
    )


def peak_rss_mib(ws: Workspace, stdin: Path, *argv: str) -> tuple[float, str]:
    """Run the CLI as the only child of a fresh process: (its peak RSS in MiB, output)."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(stdin), *ws.argv(*argv)],
        capture_output=True,
        env=cli_env(ws.home),
        cwd=ws.base,
        timeout=120,
    )
    first, _, out = done.stdout.decode().partition("\n")
    assert done.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    return int(first) / 1024, out


@pytest.mark.slow
def test_50mb_attachment_with_a_body_rule_costs_about_its_size(tmp_path: Path) -> None:
    ws = _ws(tmp_path, BODY_RULES)
    data = big_attachment_message(50 * 1024 * 1024)
    file_mib = len(data) / 2**20
    path = _with_normal(ws, "1700000001.M1P1Q1.big", data)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    rss, out = peak_rss_mib(ws, empty, "explain", str(path))
    assert "[MATCH] big attachment: attachment 'big.bin'" in out and "52428800 bytes" in out
    assert rss < 2.5 * file_mib, f"explain: peak RSS {rss:.0f} MiB for a {file_mib:.0f} MiB file"
    rss, out = peak_rss_mib(ws, empty, "run", "--once")
    assert rss < 2.5 * file_mib, f"run: peak RSS {rss:.0f} MiB for a {file_mib:.0f} MiB file"
    assert _folders(ws) == {"<big@test.example>": "Body", "<normal@test.example>": "Normal"}
    moved = next(e for e in scan(ws.root) if e.folder == "Body")
    again = tmp_path / "again.eml"
    again.write_bytes(moved.data.replace(b"<big@", b"<big2@"))
    rss, out = peak_rss_mib(ws, again, "deliver")
    assert rss < 2.5 * file_mib, f"deliver: peak RSS {rss:.0f} MiB for a {file_mib:.0f} MiB file"


def test_body_rules_see_the_first_mib_of_text(tmp_path: Path) -> None:
    rules = (
        "  - name: early\n    when: {body: early-word}\n    then: [{flag: flagged}]\n"
        "  - name: late\n    when: {body: late-word}\n    then: [{move: Late}]\n"
    )
    ws = _ws(tmp_path, rules)
    filler = ("x" * 76 + "\n") * (2 * 1024 * 1024 // 77)
    body = f"early-word\n{filler}late-word\n"
    put(ws.root, "1700000001.M1P1Q1.long", message("<long@test.example>", "long", body=body))
    _run(ws)
    assert _folders(ws) == {"<long@test.example>": "INBOX"}
    assert next(e for e in scan(ws.root)).flags == "F"


def test_html_that_never_closes_is_read_in_linear_time(tmp_path: Path) -> None:
    rules = "  - name: seen\n    when: {body: visible-word}\n    then: [{move: Seen}]\n" + RULES
    ws = _ws(tmp_path, rules)
    html = "<p>visible-word</p>" + "<!--" * 100_000 + "<" * 200_000 + "</" * 100_000
    data = message("<html@test.example>", "html", body=html).replace(
        b"Message-ID:", b"Content-Type: text/html; charset=utf-8\nMessage-ID:"
    )
    path = _with_normal(ws, "1700000001.M1P1Q1.html", data)
    started = time.monotonic()
    assert "[MATCH] seen: body contains 'visible-word'" in _explain(ws, path)
    _run(ws, timeout=60)
    assert time.monotonic() - started < 15  # each '<!--' rescanned the whole text: minutes
    assert _folders(ws) == {"<html@test.example>": "Seen", "<normal@test.example>": "Normal"}

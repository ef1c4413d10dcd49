"""The hostile mail corpus (tests/hostile/) through run --once, explain and deliver.

Every crafted message sits in one Maildir with a normal message; the large attacks are
generated here. Asserted: no traceback anywhere, each command ends in bounded time and
memory, no crafted message reaches a folder that a forged header or a display name
would pick, the normal message is still processed, and a second run has nothing to do.
"""

from __future__ import annotations

import base64
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers_maildir import Workspace, cli_env, message, put, scan

CORPUS = Path(__file__).parent / "hostile"
HEAD = (
    b"From: stranger@evil.example\nTo: me@example.com\nX-Hostile: yes\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\n"
)


def _punycode_subject() -> bytes:
    text = base64.b64encode(b"a" * 200_000 + b"-" + b"z" * 100_000)
    return (
        HEAD + b"Message-ID: <puny@hostile.example>\nSubject: =?punycode?b?" + text + b"?=\n\nx\n"
    )


def _huge_attachment() -> bytes:
    blob = base64.encodebytes(random.Random(3).randbytes(50 * 1024 * 1024))
    return (
        HEAD + b"Message-ID: <huge@hostile.example>\nSubject: huge\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\n"
        b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!\n--B\n"
        b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
        b"Content-Disposition: attachment; filename=huge.bin\n\n" + blob + b"--B--\n"
    )


def _deep_nesting() -> bytes:
    depth = 5000
    opening = b"".join(
        b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(depth)
    )
    return (
        HEAD + b"Message-ID: <deep@hostile.example>\nSubject: deep\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=b0\n\n" + opening + b"--b5000\n\ndeep text\n"
    )


def _many_parts() -> bytes:
    parts = b"".join(b"--B\nContent-Type: text/plain\n\npart %d\n" % i for i in range(20_000))
    return (
        HEAD + b"Message-ID: <parts@hostile.example>\nSubject: parts\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=B\n\n" + parts + b"--B--\n"
    )


def _encoded_word_flood() -> bytes:
    words = b" ".join([b"=?utf-8?q?=C3?=", b"=?utf-8?b?qQ==?=", b"=?utf-7?q?+2AA-?="] * 30_000)
    return HEAD + b"Message-ID: <flood@hostile.example>\nSubject: " + words + b"\n\nx\n"


def _html_tags() -> bytes:
    html = b"<div>" * 50_000 + b"<script>" * 2000 + b"&#xD800;&#0;&#x110000;" * 1000
    return (
        HEAD + b"Message-ID: <html@hostile.example>\nSubject: html\n"
        b"Content-Type: text/html; charset=utf-8\n\n" + html + b"\n"
    )


def _html_unclosed() -> bytes:
    html = b"<p>text</p>" + b"<!--" * 200_000 + b"<" * 400_000
    return (
        HEAD + b"Message-ID: <unclosed@hostile.example>\nSubject: unclosed\n"
        b"Content-Type: text/html; charset=utf-8\n\n" + html + b"\n"
    )


def _address_flood() -> bytes:
    cc = b", ".join(b'"x%d, (y" <u%d@evil.example>' % (i, i) for i in range(20_000))
    return HEAD + b"Message-ID: <cc@hostile.example>\nSubject: cc\nCc: " + cc + b"\n\nx\n"


GENERATED: dict[str, Callable[[], bytes]] = {
    "punycode-400k-subject.eml": _punycode_subject,
    "huge-attachment-50mb.eml": _huge_attachment,
    "deep-mime-nesting.eml": _deep_nesting,
    "many-mime-parts.eml": _many_parts,
    "encoded-word-flood.eml": _encoded_word_flood,
    "html-tag-flood.eml": _html_tags,
    "html-unclosed-comments.eml": _html_unclosed,
    "address-flood.eml": _address_flood,
}
RULES = """\
  - name: orders
    when: {from: orders@acme.example}
    then: [{move: Orders}]
  - name: boss
    when: {any: [{from: boss@example.com}, {sender: orders@acme.example}]}
    then: [{move: Boss}]
  - name: dmarc
    when: {header: Authentication-Results, contains: "dmarc=pass"}
    then: [{move: Trusted}]
  - name: bait
    when: {any: [{subject: {regex: '(a+)+$'}}, {body: {regex: '(a|aa)+$'}},
                 {header: X-Spam, regex: '(\\w+\\s?)+$'}]}
    then: [{move: Bait}]
  - name: tag
    when: {header: X-Hostile, exists: true}
    then:
      - {keyword: Hostile}
      - {copy: Seen}
  - name: big
    when: {attachment: {larger_than: 1MB}}
    then: [{flag: flagged}]
  - name: normal
    when: {subject: "normal message"}
    then: [{move: Normal}, {run: ["/bin/sh", "-c", "cat > /dev/null"]}]
"""
FORBIDDEN = {"Orders", "Boss", "Trusted", "Bait"}  # what a forged header or name would pick
PEAK_RSS = """\
import resource, subprocess, sys
with open(sys.argv[1], "rb") as stdin:
    done = subprocess.run(sys.argv[2:], stdin=stdin, capture_output=True)
sys.stdout.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n")
sys.stdout.write(done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace"))
sys.exit(done.returncode)
"""
MAX_RSS_MIB = 250  # the largest message is a 68 MiB file
MAX_SECONDS = 60


def corpus_names() -> list[str]:
    return sorted([p.name for p in CORPUS.glob("*.eml")] + list(GENERATED))


def corpus() -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))}
    files.update({name: make() for name, make in GENERATED.items()})
    return files


def _cli(ws: Workspace, stdin: Path, *argv: str) -> tuple[str, float, float]:
    """(output, seconds, peak RSS in MiB) of one CLI command; asserts a clean exit."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(stdin), *ws.argv(*argv)],
        capture_output=True,
        env=cli_env(ws.home),
        cwd=ws.base,
        timeout=MAX_SECONDS * 3,
    )
    seconds = time.monotonic() - started
    first, _, out = done.stdout.decode("utf-8", "replace").partition("\n")
    assert "Traceback" not in out, f"{argv}: {out[-4000:]}"
    assert done.returncode == 0, f"{argv} exited {done.returncode}: {out[-4000:]}"
    assert seconds < MAX_SECONDS, f"{argv} took {seconds:.1f}s"
    rss = int(first) / 1024
    assert rss < MAX_RSS_MIB, f"{argv}: peak RSS {rss:.0f} MiB"
    return out, seconds, rss


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, dict[str, Path]]:
    ws = Workspace(tmp_path_factory.mktemp("hostile")).setup(RULES, "    existing: process\n")
    copies = ws.base / "corpus"
    copies.mkdir()
    paths = {}
    for i, (name, data) in enumerate(corpus().items()):
        put(ws.root, f"{1700000000 + i}.M{i}P1Q1.{name.removesuffix('.eml')}", data)
        paths[name] = copies / name
        paths[name].write_bytes(data)
    put(ws.root, "1800000000.M1P1Q1.normal", message("<normal@test.example>", "normal message"))
    (ws.base / "empty").write_bytes(b"")
    return ws, paths


def test_the_corpus_covers_the_attacks() -> None:
    names = " ".join(corpus_names())
    for attack in ("surrogate", "punycode", "smuggle", "display-name", "huge-attachment",
                   "deep-mime", "redos", "control-characters", "not-a-charset"):  # fmt: skip
        assert attack in names, attack


@pytest.mark.slow
def test_explain_reads_every_hostile_message(hostile: tuple[Workspace, dict[str, Path]]) -> None:
    ws, paths = hostile
    out, _, _ = _cli(ws, ws.base / "empty", "explain", *map(str, paths.values()))
    assert out.count("  result: ") == len(paths), out[-3000:]
    for forbidden in FORBIDDEN:
        assert f"result: move -> {forbidden}\n" not in out, out


@pytest.mark.slow
def test_run_processes_every_hostile_message_and_the_normal_one(
    hostile: tuple[Workspace, dict[str, Path]],
) -> None:
    ws, paths = hostile
    out, _, _ = _cli(ws, ws.base / "empty", "run", "--once")
    assert f"{len(paths) + 1} new messages" in out, out[-3000:]
    where = {e.message_id: e.folder for e in scan(ws.root) if e.folder == "INBOX" or
             not e.folder.startswith("Seen")}  # fmt: skip
    assert where.pop("<normal@test.example>") == "Normal"
    for mid, folder in where.items():
        assert folder not in FORBIDDEN, f"{mid} was moved to {folder}"
    again, _, _ = _cli(ws, ws.base / "empty", "run", "--once")
    assert "0 new messages" in again, again[-3000:]
    state, _, _ = _cli(ws, ws.base / "empty", "state")
    assert state.strip()


@pytest.mark.slow
@pytest.mark.parametrize("name", corpus_names())
def test_deliver_takes_every_hostile_message(
    hostile: tuple[Workspace, dict[str, Path]], name: str
) -> None:
    ws, paths = hostile
    before = len(scan(ws.root))
    _cli(ws, paths[name], "deliver")
    after = scan(ws.root)
    assert len(after) > before, f"{name} was not delivered"

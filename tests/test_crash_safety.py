"""Never lose mail: kill the real ``mailrules`` CLI at every mailbox/state step and check.

``MAILRULES_CRASH_AFTER=N`` makes the process SIGKILL itself at its N-th step (see
mailrules/failpoints.py). For every N a fresh Maildir is processed, the run is killed,
and we check that every message that no rule expunges is still in some folder. A
clean run afterwards (``run --once``, which relies on the state the killed run left)
must then reach exactly the state an uninterrupted run reaches.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.helpers_maildir import (
    Workspace,
    by_message_id,
    folder_dir,
    make_folder,
    message,
    put,
    scan,
    sweep,
    tmp_files,
)

KILLED = -signal.SIGKILL

# One rule per category, keyed on an X-Cat header. "flagcopy" is seen by two rules.
RULES = """\
  - name: to work
    when: {header: X-Cat, is: work}
    then: [{move: Work}]
  - name: to archive
    when: {header: X-Cat, is: archive}
    then: [{move: Archive/2024}]
  - name: trash
    when: {header: X-Cat, is: trash}
    then: [delete]
  - name: expunge
    when: {header: X-Cat, is: expunge}
    then: [{delete: {expunge: true}}]
  - name: flag it
    when: {header: X-Cat, is: [flag, flagcopy]}
    then: [{flag: flagged}]
  - name: copy it
    when: {header: X-Cat, is: [copy, flagcopy]}
    then: [{copy: Copies/Kept}]
  - name: label it
    when: {header: X-Cat, is: keyword}
    then: [{keyword: $Label}]
  - name: flag and archive
    when: {header: X-Cat, is: flagmove}
    then: [{flag: flagged}, {move: Archive/2024}]
"""
ACCOUNT = "    existing: process\n"

CATEGORIES = (
    "work",
    "archive",
    "trash",
    "expunge",
    "copy",
    "flag",
    "keyword",
    "flagmove",
    "flagcopy",
    "nomatch",
)
# Every 30 messages: two of each acting category and twelve that no rule matches (they
# add no crash points, which keeps the every-step sweep affordable).
CYCLE = CATEGORIES[:9] + ("nomatch",) * 6 + CATEGORIES[:9] + ("nomatch",) * 6
START_FLAGS = (None, "S", "RS")  # None: in new/; else in cur/ with these flags
PRE_EXISTING = "<already-in-work@test.example>"

Place = tuple[str, str, frozenset[str]]  # (folder, system flag letters, keywords)


def _flags(*parts: str | None) -> str:
    return "".join(sorted(set("".join(p or "" for p in parts))))


def expected_places(category: str, start: str | None) -> list[Place]:
    """Where a message of a category ends up after an uninterrupted run, sorted."""
    f, none = _flags(start), frozenset()
    places = {
        "work": [("Work", f, none)],
        "archive": [("Archive/2024", f, none)],
        "trash": [("Trash", f, none)],
        "expunge": [],
        "copy": [("INBOX", f, none), ("Copies/Kept", f, none)],
        "flag": [("INBOX", _flags(f, "F"), none)],
        "keyword": [("INBOX", f, frozenset({"$Label"}))],
        "flagmove": [("Archive/2024", _flags(f, "F"), none)],
        "flagcopy": [("INBOX", _flags(f, "F"), none), ("Copies/Kept", _flags(f, "F"), none)],
        "nomatch": [("INBOX", f, none)],
    }[category]
    return sorted(places, key=repr)


class Corpus:
    """A Maildir of n messages cycling through the categories and start flags."""

    def __init__(self, n: int) -> None:
        self.messages: dict[str, bytes] = {}
        self.expected: dict[str, list[Place]] = {}
        self.files: list[tuple[str, bytes, str | None]] = []
        for i in range(n):
            category = CYCLE[i % len(CYCLE)]
            start = START_FLAGS[(i + i // 15) % len(START_FLAGS)]
            msgid = f"<m{i:04d}.{category}@test.example>"
            data = message(
                msgid,
                subject=f"message {i} ({category})",
                headers={"X-Cat": category},
                body=f"Body of message {i}.\n",
            )
            self.messages[msgid] = data
            self.expected[msgid] = expected_places(category, start)
            # Maildir names start with the delivery time: this fixes the processing order.
            self.files.append((f"{1700000000 + i}.M{i}P4242Q{i}.testhost", data, start))
        self.pre = message(PRE_EXISTING, subject="was here before")
        self.messages[PRE_EXISTING] = self.pre
        self.expected[PRE_EXISTING] = [("Work", "S", frozenset())]

    @property
    def expunged(self) -> set[str]:
        return {m for m, places in self.expected.items() if not places}

    def build(self, base: Path) -> Workspace:
        ws = Workspace(base).setup(RULES, ACCOUNT)
        for unique, data, start in self.files:
            put(ws.root, unique, data, start)
        work = make_folder(folder_dir(ws.root, "Work"), maildirfolder=True)
        put(work, "1600000000.M1P1Q1.testhost", self.pre, "S")
        return ws

    # -- checks -------------------------------------------------------------------------

    def lost_or_damaged(self, root: Path) -> list[str]:
        """The invariant after a crash: nothing lost, no partial or unknown file."""
        problems = []
        found = by_message_id(scan(root))
        for msgid in sorted(set(self.messages) - self.expunged):
            if msgid not in found:
                problems.append(f"{msgid} is in no folder (LOST)")
        for msgid, entries in found.items():
            for e in entries:
                if self.messages.get(msgid) != e.data:
                    problems.append(f"{e.folder}/{e.sub}/{e.filename}: not an original message")
        return problems

    def differences(self, root: Path) -> list[str]:
        """How the Maildir differs from the end state of an uninterrupted run."""
        found = by_message_id(scan(root))
        problems = []
        for msgid in sorted(set(self.expected) | set(found)):
            have = sorted(((e.folder, e.flags, e.keywords) for e in found.get(msgid, [])), key=repr)
            want = self.expected.get(msgid, "(not an original message)")
            if have != want:
                problems.append(f"{msgid}: expected {want}, found {have}")
        return problems


def _crash_then_rerun(corpus: Corpus, base: Path, n: int) -> tuple[int, list[str]]:
    """Crash at step n, check the invariant, run again cleanly, check the end state."""
    ws = corpus.build(base / f"crash-{n:04d}")
    crashed = ws.run("run", "--once", "--all", env={"MAILRULES_CRASH_AFTER": str(n)})
    problems = [f"after a crash at step {n}: {p}" for p in corpus.lost_or_damaged(ws.root)]
    if crashed.returncode not in (KILLED, 0):
        problems.append(
            f"crash at step {n}: exit {crashed.returncode}: {crashed.stderr.decode()[-500:]}"
        )
    # Then what cron runs (the config says existing: process), without the crash: only
    # the state tells it which messages the killed run already handled.
    again = ws.run("run", "--once")
    if again.returncode != 0:
        problems.append(f"re-run after a crash at step {n}: exit {again.returncode}")
    problems += [f"re-run after a crash at step {n}: {p}" for p in corpus.differences(ws.root)]
    shutil.rmtree(ws.base)
    return crashed.returncode, problems


def test_uninterrupted_run_reaches_the_expected_state(tmp_path: Path) -> None:
    corpus = Corpus(30)
    ws = corpus.build(tmp_path)
    done = ws.run("run", "--once", "--all")
    assert done.returncode == 0, done.stderr.decode()
    assert corpus.differences(ws.root) == []
    assert tmp_files(ws.root) == []
    # The same run again changes nothing: copies and moves are not repeated.
    again = ws.run("run", "--once", "--all")
    assert again.returncode == 0, again.stderr.decode()
    assert corpus.differences(ws.root) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_crash_at_every_step_loses_no_mail(tmp_path: Path) -> None:
    corpus = Corpus(30)
    k, results = sweep(lambda n: _crash_then_rerun(corpus, tmp_path, n))
    assert k >= 30, f"only {k} crash points: the failpoints are not being reached"
    not_killed = [n for n in range(1, k + 1) if results[n][0] != KILLED]
    assert not_killed == [], f"runs that were not killed at their crash step: {not_killed}"
    if k > 150:  # many steps: add a few far ones (seeded) to the full sweep
        for n in random.Random(20240611).sample(range(k + 1, k * 3), 3):
            results[n] = _crash_then_rerun(corpus, tmp_path, n)
    problems = [p for n in sorted(results) for p in results[n][1]]
    assert problems == [], f"{len(problems)} problems over {k} crash points:\n" + "\n".join(
        problems[:40]
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_at_random_moments_loses_no_mail(tmp_path: Path) -> None:
    """SIGKILL a run on 400 messages at seeded random moments, twice per Maildir."""
    corpus = Corpus(400)
    rng = random.Random(4004)
    probe = corpus.build(tmp_path / "probe")
    started = time.monotonic()
    assert probe.run("run", "--once", "--all").returncode == 0
    full = time.monotonic() - started
    assert corpus.differences(probe.root) == []
    for i in range(4):
        ws = corpus.build(tmp_path / f"kill-{i}")
        for attempt in range(2):
            # First as run by hand on this Maildir, then as cron runs it, killed again.
            proc = ws.popen("run", "--once", *(["--all"] if attempt == 0 else []))
            time.sleep(rng.uniform(0.2, 1.0) * full)
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode in (KILLED, 0), err.decode()[-500:]
            lost = corpus.lost_or_damaged(ws.root)
            assert lost == [], f"iteration {i}, kill {attempt}: {lost[:20]}"
        done = ws.run("run", "--once")
        assert done.returncode == 0, done.stderr.decode()[-500:]
        assert corpus.differences(ws.root) == [], f"iteration {i}"


# -- focused crash cases ---------------------------------------------------------------


def test_copy_before_flag_is_not_duplicated_by_a_crash(tmp_path: Path) -> None:
    """A copy followed by a flag change, killed before the state is saved, then re-run.

    The copy's name is meant to make a repeated copy find the first one; the flag
    change renames the original, and the repeated copy must still not make a second one.
    """
    data = message("<copy-flag@test.example>", subject="invoice")
    rules = (
        "  - name: keep and flag\n"
        "    when: {subject: invoice}\n"
        "    then: [{copy: Copies}, {flag: flagged}]\n"
    )

    def scenario(n: int) -> tuple[int, list[str]]:
        ws = Workspace(tmp_path / f"n{n}").setup(rules, ACCOUNT)
        put(ws.root, "1700000000.M1P1Q1.testhost", data)
        crashed = ws.run("run", "--once", env={"MAILRULES_CRASH_AFTER": str(n)})
        again = ws.run("run", "--once")
        places = sorted((e.folder, e.flags) for e in scan(ws.root))
        if again.returncode != 0 or places != [("Copies", ""), ("INBOX", "F")]:
            return crashed.returncode, [
                f"crash at step {n}, then a clean run (exit {again.returncode}): expected "
                f"one copy in Copies and the flagged original in INBOX, found {places}"
            ]
        return crashed.returncode, []

    k, results = sweep(scenario)
    assert k >= 3
    problems = [p for n in sorted(results) for p in results[n][1]]
    assert problems == [], "\n".join(problems)


def test_keyword_survives_a_move(tmp_path: Path) -> None:
    """A keyword set by one step must still be the message's keyword after a move."""
    rules = (
        "  - name: label and archive\n"
        "    when: {subject: report}\n"
        "    then: [{keyword: $Label}, {move: Archive}]\n"
    )
    ws = Workspace(tmp_path).setup(rules, ACCOUNT)
    put(ws.root, "1700000000.M1P1Q1.testhost", message("<kw@test.example>", "report"), "S")
    assert ws.run("run", "--once").returncode == 0
    (entry,) = scan(ws.root)
    assert (entry.folder, entry.flags, entry.keywords) == ("Archive", "S", {"$Label"})


# -- deliver ---------------------------------------------------------------------------

INCOMING = (
    b"From: Sender <sender@example.org>\r\n"
    b"To: me@example.com\r\n"
    b"Subject: deliver me\r\n"
    b"Message-ID: <incoming@test.example>\r\n"
    b"\r\n" + bytes(range(256)) * 40 + b"\r\nend\r\n"
)
DELIVER_CASES = {
    "inbox": ("  - name: nothing\n    when: {subject: nomatch}\n    then: [stop]\n", ["INBOX"]),
    "move-new-folder": (
        "  - name: lists\n"
        "    when: {subject: deliver}\n"
        "    then: [{flag: flagged}, {move: Lists/Deliver}]\n",
        ["Lists/Deliver"],
    ),
    "copy-and-inbox": (
        "  - name: keep\n    when: {subject: deliver}\n    then: [{copy: Copies}]\n",
        ["Copies", "INBOX"],
    ),
}


@pytest.mark.parametrize("case", sorted(DELIVER_CASES))
def test_deliver_crash_is_all_or_nothing(tmp_path: Path, case: str) -> None:
    rules, targets = DELIVER_CASES[case]

    def counts(ws: Workspace, n: int, problems: list[str]) -> dict[str, int]:
        entries = scan(ws.root)
        for e in entries:
            if e.data != INCOMING:
                problems.append(f"step {n}: partial or altered file {e.folder}/{e.filename}")
            if e.folder not in targets:
                problems.append(f"step {n}: delivered into {e.folder}, not {targets}")
        return {t: sum(e.folder == t for e in entries) for t in targets}

    def scenario(n: int) -> tuple[int, list[str]]:
        ws = Workspace(tmp_path / f"n{n}").setup(rules)
        r = ws.run("deliver", stdin=INCOMING, env={"MAILRULES_CRASH_AFTER": str(n)})
        problems: list[str] = []
        found = counts(ws, n, problems)
        if r.returncode == 0:
            if found != dict.fromkeys(targets, 1):
                problems.append(f"completed at step {n}, but the folders hold {found}")
            return 0, problems
        # Killed: the MTA sees a failure and keeps its copy; each folder has it once or not.
        if r.returncode != KILLED:
            problems.append(f"step {n}: exit {r.returncode}: {r.stderr.decode()[-300:]}")
        if any(c > 1 for c in found.values()):
            problems.append(f"step {n}: a crashed delivery wrote twice: {found}")
        # The MTA retries: now the message is delivered. One duplicate from the killed
        # attempt is inherent: the MTA cannot know that the earlier write had finished.
        retry = ws.run("deliver", stdin=INCOMING)
        found = counts(ws, n, problems)
        if retry.returncode != 0 or not all(1 <= c <= 2 for c in found.values()):
            problems.append(f"step {n}: retry exited {retry.returncode}, folders hold {found}")
        return r.returncode, problems

    k, results = sweep(scenario, limit=30)
    assert k >= 2, f"only {k} crash points in deliver"
    assert all(results[n][0] == KILLED for n in range(1, k + 1))
    problems = [p for n in sorted(results) for p in results[n][1]]
    assert problems == [], "\n".join(problems)


# -- an action that fails ----------------------------------------------------------------


def test_failed_move_keeps_the_message_and_is_retried(tmp_path: Path) -> None:
    rules = (
        "  - name: archive\n"
        "    when: {subject: archive me}\n"
        "    then: [{move: Archive}]\n"
        "  - name: other\n"
        "    when: {subject: other}\n"
        "    then: [{move: Other}]\n"
    )
    ws = Workspace(tmp_path).setup(rules)
    bad = message("<blocked@test.example>", "archive me")
    good = message("<fine@test.example>", "other")
    put(ws.root, "1700000001.M1P1Q1.testhost", bad)
    put(ws.root, "1700000002.M2P1Q2.testhost", good, "S")
    # A regular file where the Archive folder's directory belongs: it cannot be created
    # (this works as root too, where permissions would not stop anything).
    obstacle = folder_dir(ws.root, "Archive")
    obstacle.write_text("not a folder\n")

    first = ws.run("run", "--once", "--all")
    assert first.returncode == 1, first.stderr.decode()
    output = (first.stdout + first.stderr).decode()
    assert "Archive" in first.stderr.decode() and "cannot create folder" in output, output
    placed = {e.message_id: e.folder for e in scan(ws.root)}
    assert placed == {"<blocked@test.example>": "INBOX", "<fine@test.example>": "Other"}

    obstacle.unlink()
    second = ws.run("run", "--once")  # no --all: only what is not yet done
    assert second.returncode == 0, second.stderr.decode()
    placed = {e.message_id: e.folder for e in scan(ws.root)}
    assert placed == {"<blocked@test.example>": "Archive", "<fine@test.example>": "Other"}
    assert os.path.isdir(obstacle / "cur")

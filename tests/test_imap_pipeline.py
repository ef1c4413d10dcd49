"""IMAP full passes that act on one batch while deciding the next, against a real Dovecot.

A full pass acts on one batch over a second connection while it reads and decides the
next (``runner._Acting``). ``MAILRULES_BATCH=3`` spreads twelve messages over four
batches, so a kill lands while one connection has just moved, copied or flagged a batch
and the other is fetching the next. ``MAILRULES_CRASH_AFTER=N`` SIGKILLs the process at
its N-th mailbox or state step (``mailrules/failpoints.py``): each UID MOVE, COPY, STORE
or EXPUNGE the server confirmed, and each state commit. After every kill no message may
be missing, and the next ordinary run must finish the job.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_imap import config, flow, message, tunnel

pytestmark = pytest.mark.timeout(600)

KILLED = -signal.SIGKILL
RULES = """
- {name: clients, when: {from: "*@client.example"}, then: [{move: Clients}]}
- {name: spam, when: {subject: "[SPAM]"}, then: [delete]}
- {name: boss, when: {from: boss@example.com}, then: [{flag: flagged}, {keyword: Work}]}
- {name: copies, when: {subject: copy}, then: [{copy: Copies}]}
"""
KINDS = {  # prefix -> (sender, subject)
    "c": ("Orders <orders@client.example>", "order"),
    "s": ("x@spam.example", "[SPAM] offer"),
    "b": ("Boss <boss@example.com>", "budget"),
    "p": ("a@b.example", "please copy"),
    "n": ("friend@example.org", "hello"),
}
MIDS = [f"{kind}{i}" for i in range(3) for kind in "csbpn"][:12]


def fill(box) -> None:
    for mid in MIDS:
        sender, subject = KINDS[mid[0]]
        box.append("INBOX", message(mid, sender, f"{subject} {mid}"))


def placed(box) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """Message-ID -> [(folder, flags)] for every copy of every message."""
    out: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for folder in box.folders():
        for m in box.messages(folder):
            mid = (m.message_id or "").strip("<>").removesuffix("@t")
            out.setdefault(mid, []).append((folder, m.flags))
    return out


def expected_problems(box) -> list[str]:
    """Where the finished job differs from what the rules ask (duplicates are allowed)."""
    where = placed(box)
    problems = []
    for mid in MIDS:
        folders = sorted({f for f, _ in where.get(mid, [])})
        want = {"c": ["Clients"], "s": ["Trash"], "b": ["INBOX"], "p": ["Copies", "INBOX"],
                "n": ["INBOX"]}[mid[0]]  # fmt: skip
        if folders != want:
            problems.append(f"{mid} in {folders}, expected {want}")
        if mid[0] == "b" and not all(
            "\\Flagged" in flags and "Work" in flags for _, flags in where.get(mid, [])
        ):
            problems.append(f"{mid} not flagged: {where.get(mid)}")
    return problems


def lost(box) -> list[str]:
    where = placed(box)
    return [mid for mid in MIDS if mid not in where]


def workspace(factory, tmp_path: Path, name: str):
    box = factory()
    box.create("Trash")
    fill(box)
    work = tmp_path / name
    work.mkdir()
    path = config(work, tunnel(box), RULES, extra="existing: process\n")
    return box, ["run", "--once", "-c", str(path), "--state-dir", str(work / "state")]


def test_kill_at_every_step_of_a_pipelined_pass_loses_nothing(
    dovecot_preauth_factory, tmp_path, run_cli
):
    batches = {"MAILRULES_BATCH": "3"}
    box, run = workspace(dovecot_preauth_factory, tmp_path, "probe")
    done = run_cli(*run, extra_env=batches)
    assert done.returncode == 0, done.stderr
    assert expected_problems(box) == []

    n = 0
    while True:
        n += 1
        assert n < 200, "the run never finished without reaching its crash step"
        box, run = workspace(dovecot_preauth_factory, tmp_path, f"kill{n}")
        crashed = run_cli(*run, extra_env={**batches, "MAILRULES_CRASH_AFTER": str(n)})
        if crashed.returncode != KILLED:
            assert crashed.returncode == 0, crashed.stderr
            break
        assert lost(box) == [], f"killed at step {n}: lost {lost(box)}"
        again = run_cli(*run)
        assert again.returncode == 0, f"killed at step {n}, then: {again.stderr}"
        assert expected_problems(box) == [], f"killed at step {n}"
    # Twelve messages in four batches: a MOVE, COPY or STORE per batch and kind, and commits.
    assert n > 12, f"only {n - 1} crash steps: the batches were not acted on one by one"


@pytest.mark.slow
def test_kill_at_random_moments_of_a_pipelined_pass_loses_nothing(
    dovecot_preauth_factory, tmp_path, env
):
    """SIGKILL the run at seeded random moments, wherever the two connections are."""
    rng = random.Random(44)
    box, run = workspace(dovecot_preauth_factory, tmp_path, "probe")
    cli = [sys.executable, "-m", "mailrules.cli"]
    started = time.monotonic()
    probe = subprocess.run([*cli, *run], env={**env, "MAILRULES_BATCH": "2"}, timeout=60)
    assert probe.returncode == 0
    full = time.monotonic() - started
    for i in range(6):
        box, run = workspace(dovecot_preauth_factory, tmp_path, f"random{i}")
        proc = subprocess.Popen([*cli, *run], env={**env, "MAILRULES_BATCH": "2"})
        time.sleep(rng.uniform(0.3, 1.0) * full)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert lost(box) == [], f"iteration {i}: lost {lost(box)}"
        again = subprocess.run([*cli, *run], env=env, capture_output=True, timeout=60)
        assert again.returncode == 0, again.stderr.decode()[-500:]
        assert expected_problems(box) == [], f"iteration {i}"


def test_a_server_that_allows_one_connection_gets_the_actions_on_it(
    dovecot_preauth_factory, tmp_path, run_cli
):
    """The second connection is refused: the pass still acts, batch after batch, on one."""
    box = dovecot_preauth_factory()
    box.create("Trash")
    fill(box)
    once = tmp_path / "once"
    once.write_text(
        "#!/bin/sh\n"
        f'if mkdir "{tmp_path}/connected" 2>/dev/null; then exec {" ".join(box.argv)}; fi\n'
        "echo 'too many connections' >&2; exit 1\n"
    )
    once.chmod(0o755)
    path = config(tmp_path, f"{{tunnel: [{once}]}}", RULES, extra="existing: process\n")
    done = run_cli(
        "run", "--once", "-c", str(path), "--state-dir", str(tmp_path / "state"),
        extra_env={"MAILRULES_BATCH": "3"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "acting on the first connection" in done.stderr
    assert expected_problems(box) == []


def test_run_after_move_reads_each_message_where_it_went(
    dovecot_preauth_factory, tmp_path, run_cli
):
    """The second connection moved the message; the command still gets the whole message."""
    box = dovecot_preauth_factory()
    fill(box)
    out = tmp_path / "out"
    rules = (
        "- {name: clients, when: {from: '*@client.example'}, then: [{move: Clients}, "
        f"{{run: [sh, -c, 'cat >> {out}']}}]}}\n"
    )
    path = config(tmp_path, tunnel(box), rules, extra="existing: process\n")
    done = run_cli(
        "run", "--once", "-c", str(path), "--state-dir", str(tmp_path / "state"),
        extra_env={"MAILRULES_BATCH": "2"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    clients = [m for m in MIDS if m[0] == "c"]
    assert sorted(m.message_id for m in box.messages("Clients")) == sorted(
        f"<{m}@t>" for m in clients
    )
    text = out.read_text()
    for mid in clients:  # headers and body, as read from Clients
        assert f"Message-ID: <{mid}@t>" in text and f"order {mid}" in text
    assert text.count("\nhi\n") == len(clients)


def test_both_connections_share_the_narrowing_search_and_miss_nothing(
    dovecot_server, cutting_proxy, tmp_path, run_cli
):
    """The second connection searches the upper half of the UIDs while the first searches
    the lower: together exactly what one SEARCH finds."""
    server = dovecot_server
    server.create("Trash")
    fill(server)
    proxy = cutting_proxy(server.imap_port, cut_after=None)
    imap = flow(host="127.0.0.1", port=proxy.port, security="plain",
                username=server.username, password=server.password)  # fmt: skip
    path = config(tmp_path, imap, RULES, extra="existing: process\n")
    done = run_cli("run", "--once", "-c", str(path), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    assert expected_problems(server) == []
    searches = [line for line in proxy.lines if b" SEARCH " in line.upper()]
    lower = [s for s in searches if re.search(rb"SEARCH UID 1:(\d+) ", s, re.I)]
    upper = [s for s in searches if re.search(rb"SEARCH UID (\d+):\* ", s, re.I)]
    assert len(lower) == 1 and len(upper) == 1, searches
    last_lower = int(re.search(rb"UID 1:(\d+)", lower[0]).group(1))
    first_upper = int(re.search(rb"UID (\d+):\*", upper[0]).group(1))
    assert first_upper == last_lower + 1

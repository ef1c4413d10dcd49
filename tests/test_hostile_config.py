"""Configs that used to hang, crash or eat memory: each is a FILE:LINE:COL error instead.

`check` and `run` exit 2, `deliver` exits 75 (the MTA keeps the message), quickly and
with bounded memory, and never with a traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

HEAD = "accounts:\n  local:\n    maildir: {root}\nrules:\n"


def _bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def _problems(stderr: str, path: Path) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{path}:")]


CASES = {
    # 9**9 strings once expanded: hours and gigabytes before there was a limit
    "alias bomb": (lambda: _bomb(9) + "accounts: {local: {maildir: /tmp/x}}\n", "alias"),
    "deep nesting": (
        lambda: (
            HEAD.format(root="/tmp/x")
            + "  - name: a\n    when: "
            + "[" * 600
            + "]" * 600
            + "\n    then: [stop]\n"
        ),
        "nested more than",
    ),
    "huge size": (
        lambda: (
            HEAD.format(root="/tmp/x")
            + f"  - name: a\n    when: {{larger_than: '{'9' * 400}.5'}}\n    then: [stop]\n"
        ),
        "too large",
    ),
    "huge integer": (
        lambda: (
            HEAD.format(root="/tmp/x")
            + f"  - name: a\n    when: {{larger_than: {'9' * 5000}}}\n    then: [stop]\n"
        ),
        "too large",
    ),
    "age of 5000 years": (
        lambda: (
            HEAD.format(root="/tmp/x")
            + "  - name: a\n    when: {older_than: 5000y}\n    then: [stop]\n"
        ),
        "too long",
    ),
    "huge duration": (
        lambda: (
            HEAD.format(root="/tmp/x")
            + f"  - name: a\n    when: {{newer_than: '{'9' * 400}d'}}\n    then: [stop]\n"
        ),
        "too long",
    ),
}


def _run_measured(env: dict[str, str], *args: str) -> tuple[int, str, float, int]:
    """Run the CLI; its exit code, stderr, seconds and peak memory (KiB) of that process."""
    started = time.monotonic()
    with open(os.devnull, "rb") as stdin:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailrules.cli", *args],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            assert proc.stderr is not None
            err = proc.stderr.read(1 << 20)  # a bounded error report is part of the promise
            while proc.stderr.read(1 << 16):
                pass
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            proc.returncode = 0  # reaped above
            if proc.stderr:
                proc.stderr.close()
    return (
        os.waitstatus_to_exitcode(status),
        err.decode(),
        time.monotonic() - started,
        (usage.ru_maxrss),
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", ["check", "deliver"])
def test_hostile_config_is_a_positioned_error_fast_and_small(env, tmp_path, case, command):
    text, needle = CASES[case]
    path = tmp_path / "rules.yaml"
    path.write_text(text())
    code, stderr, took, peak_kib = _run_measured(env, command, "-c", str(path))
    assert code == (75 if command == "deliver" else 2), stderr[-2000:]
    assert "Traceback" not in stderr
    found = _problems(stderr, path)
    assert any(re.match(rf"{re.escape(str(path))}:\d+:\d+: .*{needle}", p) for p in found), stderr[
        -2000:
    ]
    assert took < 5, f"{took:.1f}s"
    assert peak_kib < 200 * 1024, f"{peak_kib} KiB"


def test_age_of_5000_years_is_not_a_crash_at_run_time(run_cli, maildir, write_config):
    maildir.add(from_="a@x.example", subject="old")
    config = write_config("- {name: a, when: {older_than: 5000y}, then: [{move: Old}]}\n")
    result = run_cli("run", "--once", "--all", "-c", str(config))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "out of range" not in result.stderr


def test_config_that_is_not_utf8_is_reported_at_the_bad_byte(run_cli, tmp_path):
    path = tmp_path / "rules.yaml"
    text = HEAD.format(root="/tmp/x") + "  - name: a\n    when: {subject: caf\xe9s}\n"
    path.write_bytes(text.encode("latin-1") + b"    then: [stop]\n")
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 2
    # line 6 is "    when: {subject: caf\xe9s}": the byte 0xE9 is its 24th column
    assert f"{path}:6:24: the config is not UTF-8 text: byte 0xe9" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr

"""The audit log (``mailrules state``): bounded rows and a retention the config sets."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

FAILING_RUN = (
    "- {name: hook, when: {from: a@x.example},\n"
    "   then: [{run: [/bin/sh, -c, 'exit 3', sh, '{subject}']}]}\n"
)


def _db(env: dict[str, str]) -> Path:
    return Path(env["XDG_STATE_HOME"]) / "mailrules" / "state.sqlite3"


def _size(env: dict[str, str]) -> int:
    return sum(p.stat().st_size for p in _db(env).parent.iterdir() if p.is_file())


def test_a_huge_subject_failing_every_run_adds_only_a_bounded_row(
    maildir, write_config, run_cli, env
):
    config = write_config(FAILING_RUN)
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0  # the baseline
    maildir.add(from_="a@x.example", subject="S" * (2 << 20))
    first = run_cli("run", "--once", "-c", str(config))
    assert first.returncode == 1, first.stderr[-500:]
    before = _size(env)
    again = run_cli("run", "--once", "-c", str(config))  # failed: tried again, recorded again
    assert again.returncode == 1
    assert _size(env) - before < 64 * 1024, _size(env) - before
    assert len(again.stdout) + len(again.stderr) < 64 * 1024
    with sqlite3.connect(_db(env)) as db:
        rows = db.execute(
            "SELECT length(subject), length(action), length(error), result FROM audit"
        ).fetchall()
    assert len(rows) == 2 and all(r[3] == "failed" for r in rows)
    for subject, action, error, _ in rows:
        assert 100 < subject <= 500 and 100 < action <= 500 and error <= 2000
    shown = run_cli("state").stdout
    assert "S" * 100 in shown and "…" in shown and len(shown) < 16 * 1024


def test_audit_rows_older_than_keep_or_beyond_max_rows_are_pruned(
    maildir, write_config, run_cli, env
):
    config = write_config(
        "- {name: flag, when: {from: a@x.example}, then: [{flag: flagged}]}\n",
    )
    text = config.read_text() + "audit: {keep: 30d, max_rows: 5}\n"
    config.write_text(text)
    assert run_cli("check", "-c", str(config)).returncode == 0
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    for i in range(3):
        maildir.add(from_="a@x.example", subject=f"old {i}")
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    with sqlite3.connect(_db(env)) as db:  # as if they had been written 31 days ago
        db.execute("UPDATE audit SET at = ?", (time.time() - 31 * 86400,))
    for i in range(7):
        maildir.add(from_="a@x.example", subject=f"new {i}")
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    shown = run_cli("state").stdout
    assert "'old" not in shown
    assert [f"new {i}" in shown for i in range(7)] == [False, False] + [True] * 5


def test_audit_retention_is_checked(run_cli, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "accounts: {local: {maildir: /tmp/x}}\naudit: {keep: forever, max_rows: 0, kep: 1}\n"
    )
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 2
    assert f"{path}:2:15: audit.keep: expected a duration" in result.stderr
    assert f"{path}:2:37: audit: unknown key 'kep'; did you mean 'keep'?" in result.stderr
    assert (
        f"{path}:2:34: audit.max_rows: must be greater than or equal to 1, got a number (0)"
        in result.stderr
    )

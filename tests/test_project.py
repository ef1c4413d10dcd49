"""The project as a newcomer meets it: the demo command, lint, the packaged example."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_demo_shows_where_each_message_went(run_cli, tmp_path):
    result = run_cli("demo", "--dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "10 sample messages" in out
    assert "01-client-order.eml" in out and "move -> Clients (rule 'clients')" in out
    assert "delete -> Trash (rule 'spam')" in out
    assert "move -> Lists/dev (rule 'mailing lists')" in out
    assert "08-phish-lookalike.eml" in out and "stays in INBOX (no rule matched)" in out
    assert (tmp_path / "demo" / "Maildir" / ".Clients").is_dir()
    again = run_cli("demo", "--dir", str(tmp_path / "demo"))
    assert again.returncode == 2 and "already exists" in again.stdout


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]])
def test_ruff(args):
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [ruff, *args, "mailrules", "tests"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_commands_match_ci():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    install, test = (
        line for line in readme.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    lines = ci.strip().splitlines()
    assert install.startswith("python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'")
    assert lines[-3:-1] == ["python3 -m venv .venv", ".venv/bin/pip install -q -e '.[test]'"]
    assert test == lines[-1]
    assert "MAILRULES_REQUIRE_SERVERS=1 .venv/bin/pytest" in test

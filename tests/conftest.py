"""Shared fixtures: an isolated environment, the real CLI, and real Maildirs on disk."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

pytest_plugins = ["tests.dovecot", "tests.servers.plugin"]


class MaildirTree:
    """A Maildir++ tree in a temp dir, with helpers to add and inspect messages."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._n = 0
        self.folder("INBOX")

    def folder(self, name: str) -> Path:
        path = self.root if name == "INBOX" else self.root / ("." + name.replace("/", "."))
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        return path

    def add(
        self,
        folder: str = "INBOX",
        *,
        raw: bytes | None = None,
        flags: str | None = None,
        date: datetime | None = None,
        body: str = "Hello.\n",
        **headers: str,
    ) -> str:
        """Deliver a message; headers are given as from_="a@b", subject="...". Returns its id."""
        self._n += 1
        mid = headers.pop("message_id", f"<m{self._n}@test.example>")
        if raw is not None:
            for line in raw.split(b"\n"):
                if line.lower().startswith(b"message-id:"):
                    mid = line.split(b":", 1)[1].strip().decode()
                    break
        else:
            fields = {"Message-ID": mid}
            if date is not None:
                fields["Date"] = format_datetime(date)
            for key, value in headers.items():
                fields[key.rstrip("_").replace("_", "-").title()] = value
            raw = ("".join(f"{k}: {v}\n" for k, v in fields.items()) + "\n" + body).encode()
        name = f"{1700000000 + self._n}.M{self._n}P1.test"
        path = self.folder(folder)
        target = (
            path
            / ("new" if flags is None else "cur")
            / (name if flags is None else f"{name}:2,{flags}")
        )
        target.write_bytes(raw)
        if date is not None:
            os.utime(target, (date.timestamp(), date.timestamp()))
        return mid

    def files(self, folder: str = "INBOX") -> list[Path]:
        path = self.folder_path(folder)
        return sorted(
            p for sub in ("new", "cur") if (path / sub).is_dir() for p in (path / sub).iterdir()
        )

    def folder_path(self, folder: str) -> Path:
        return self.root if folder == "INBOX" else self.root / ("." + folder.replace("/", "."))

    def ids(self, folder: str = "INBOX") -> list[str]:
        out = []
        for path in self.files(folder):
            for line in path.read_bytes().split(b"\n"):
                if line.lower().startswith(b"message-id:"):
                    out.append(line.split(b":", 1)[1].strip().decode())
                    break
        return sorted(out)

    def flags(self, mid: str, folder: str = "INBOX") -> str:
        for path in self.files(folder):
            if mid.encode() in path.read_bytes():
                return path.name.partition(":2,")[2]
        raise AssertionError(f"{mid} not in {folder}")

    def folders(self) -> list[str]:
        names = ["INBOX"] if (self.root / "cur").is_dir() else []
        names += sorted(
            p.name[1:].replace(".", "/") for p in self.root.iterdir() if p.name.startswith(".")
        )
        return names


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment where nothing reaches the real home, config or state."""
    home = tmp_path / "home"
    home.mkdir()
    out = {k: v for k, v in os.environ.items() if not k.startswith(("MAILRULES_", "XDG_"))}
    out.pop("STATE_DIRECTORY", None)
    out.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        PYTHONWARNINGS="error",
    )
    return out


@pytest.fixture
def run_cli(env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(
        *args: str,
        input: str | bytes | None = None,
        extra_env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        data = input.encode() if isinstance(input, str) else input
        done = subprocess.run(
            [sys.executable, "-m", "mailrules.cli", *args],
            input=data,
            capture_output=True,
            env={**env, **(extra_env or {})},
            timeout=timeout,
        )
        return subprocess.CompletedProcess(
            done.args,
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )

    return run


@pytest.fixture
def maildir(tmp_path: Path) -> MaildirTree:
    return MaildirTree(tmp_path / "Mail")


@pytest.fixture
def write_config(tmp_path: Path, maildir: MaildirTree) -> Callable[..., Path]:
    """Write a config for the `maildir` fixture; `rules` is YAML text for the rules list."""

    def write(rules: str, account_extra: str = "", name: str = "rules.yaml") -> Path:
        text = (
            "accounts:\n"
            "  local:\n"
            f"    maildir: {maildir.root}\n"
            + textwrap.indent(textwrap.dedent(account_extra), "    ")
            + "rules:\n"
            + textwrap.indent(textwrap.dedent(rules), "  ")
        )
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


NOW = datetime.now(UTC)

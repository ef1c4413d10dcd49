"""Helpers for tests that drive the real ``mailrules`` CLI against real Maildirs.

Everything here is independent of the code under test: Maildirs are built and read with
plain file operations, and the CLI always runs as a subprocess with HOME, the XDG
directories and the state directory pointed into the test's own tmp_path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

CLI = [sys.executable, "-m", "mailrules.cli"]
SUBDIRS = ("tmp", "new", "cur")
_MSGID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


def cli_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a CLI run: no real home, no inherited mailrules settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MAILRULES_", "XDG_")) and k not in ("STATE_DIRECTORY", "HOME")
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        PYTHONWARNINGS="error",
    )
    env.update(extra or {})
    return env


@dataclass
class Workspace:
    """One test's world: a Maildir root, a config file, a state dir and a fake home."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base / "Mail"

    @property
    def config(self) -> Path:
        return self.base / "rules.yaml"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def home(self) -> Path:
        return self.base / "home"

    def setup(self, rules_yaml: str, account_extra: str = "") -> Workspace:
        self.home.mkdir(parents=True, exist_ok=True)
        make_folder(self.root)
        self.config.write_text(
            f"accounts:\n  local:\n    maildir: {self.root}\n{account_extra}rules:\n{rules_yaml}"
        )
        return self

    def argv(self, command: str, *args: str) -> list[str]:
        return [*CLI, command, "-c", str(self.config), "--state-dir", str(self.state), *args]

    def run(
        self,
        command: str,
        *args: str,
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.argv(command, *args),
            input=stdin,
            capture_output=True,
            env=cli_env(self.home, env),
            cwd=self.base,
            timeout=timeout,
            check=False,
        )

    def popen(self, command: str, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv(command, *args),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=cli_env(self.home),
            cwd=self.base,
        )


def make_folder(path: Path, maildirfolder: bool = False) -> Path:
    for sub in SUBDIRS:
        (path / sub).mkdir(parents=True, exist_ok=True)
    if maildirfolder:
        (path / "maildirfolder").touch()
    return path


def folder_dir(root: Path, name: str) -> Path:
    """Where a folder lives in the (default) Maildir++ layout; ASCII names only."""
    if name.upper() == "INBOX":
        return root
    return root / ("." + name.replace("/", "."))


def put(folder: Path, unique: str, data: bytes, info: str | None = None) -> Path:
    """Place a message file: in new/ when info is None, else in cur/ as unique:2,info."""
    path = folder / "new" / unique if info is None else folder / "cur" / f"{unique}:2,{info}"
    path.write_bytes(data)
    return path


def message(
    msgid: str,
    subject: str = "test",
    sender: str = "someone@example.org",
    headers: dict[str, str] | None = None,
    body: str = "Hello.\n",
) -> bytes:
    lines = [
        f"From: {sender}",
        "To: me@example.com",
        f"Subject: {subject}",
        "Date: Mon, 01 Jan 2024 10:00:00 +0000",
        f"Message-ID: {msgid}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\n".join(lines) + "\n\n" + body).encode()


def message_id_of(data: bytes) -> str | None:
    head = data.split(b"\n\n", 1)[0]
    found = _MSGID.search(head)
    return found.group(1).decode("ascii", "replace") if found else None


@dataclass(frozen=True)
class Entry:
    """One message file found in a folder's new/ or cur/."""

    folder: str
    sub: str
    filename: str
    data: bytes
    keywords: frozenset[str]

    @property
    def unique(self) -> str:
        return self.filename.partition(":2,")[0]

    @property
    def flags(self) -> str:
        """The system flag letters (upper case), sorted."""
        info = self.filename.partition(":2,")[2]
        return "".join(sorted(c for c in info if c.isupper()))

    @property
    def message_id(self) -> str | None:
        return message_id_of(self.data)


def folders(root: Path) -> dict[str, Path]:
    """Every Maildir++ folder under root, by name ('/'-separated), INBOX included."""
    found = {"INBOX": root} if (root / "cur").is_dir() else {}
    for entry in sorted(os.listdir(root)):
        path = root / entry
        if entry.startswith(".") and entry not in (".", "..") and (path / "cur").is_dir():
            found[entry[1:].replace(".", "/")] = path
    return found


def keyword_table(folder: Path) -> dict[str, str]:
    """Dovecot's dovecot-keywords: letter -> keyword name."""
    table = {}
    try:
        text = (folder / "dovecot-keywords").read_text()
    except FileNotFoundError:
        return table
    for line in text.splitlines():
        num, _, name = line.partition(" ")
        if num.isdigit() and name and int(num) < 26:
            table[chr(97 + int(num))] = name
    return table


def scan(root: Path) -> list[Entry]:
    """Every message file in new/ and cur/ of every folder (tmp/ is ignored, as readers do)."""
    out = []
    for name, path in folders(root).items():
        table = keyword_table(path)
        for sub in ("new", "cur"):
            for filename in sorted(os.listdir(path / sub)):
                if filename.startswith(".") or not (path / sub / filename).is_file():
                    continue
                info = filename.partition(":2,")[2]
                words = frozenset(table.get(c, f"?{c}") for c in info if "a" <= c <= "z")
                data = (path / sub / filename).read_bytes()
                out.append(Entry(name, sub, filename, data, words))
    return out


def by_message_id(entries: list[Entry]) -> dict[str, list[Entry]]:
    out: dict[str, list[Entry]] = {}
    for entry in entries:
        out.setdefault(entry.message_id or "(none)", []).append(entry)
    return out


def tmp_files(root: Path) -> list[str]:
    return [
        f"{name}/tmp/{f}" for name, path in folders(root).items() for f in os.listdir(path / "tmp")
    ]


def sweep(
    scenario: Callable[[int], tuple[int, list[str]]], workers: int = 2, limit: int = 400
) -> tuple[int, dict[int, tuple[int, list[str]]]]:
    """Run ``scenario(n)`` (crash at step n) for n = 1, 2, ... until a run completes.

    ``scenario`` returns (the crashed run's exit status, problems found). Runs go
    ``workers`` at a time. Returns K, the number of crash points (the last n whose run
    did not complete), and every result by n.
    """
    results: dict[int, tuple[int, list[str]]] = {}
    with ThreadPoolExecutor(workers) as pool:
        pending: dict[Future[tuple[int, list[str]]], int] = {}
        n = 0
        while n < limit and not any(code == 0 for code, _ in results.values()):
            while len(pending) < workers and n < limit:
                n += 1
                pending[pool.submit(scenario, n)] = n
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                results[pending.pop(future)] = future.result()
        for future, step in pending.items():
            results[step] = future.result()
    completed = [step for step, (code, _) in results.items() if code == 0]
    if not completed:
        raise AssertionError(f"the run never completed within {limit} crash points")
    return min(completed) - 1, results

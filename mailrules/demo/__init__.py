"""``mailrules demo``: the example rules on a demo Maildir made from bundled messages.

Nothing outside the demo directory is touched: the config, the Maildir and the state
all live there, and it is kept afterwards so the user can look around and try
``explain`` and ``check`` on it.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from mailrules.config.load import load_config
from mailrules.message import MessageView
from mailrules.runner import Event, RunOptions, run_once
from mailrules.sources.maildir import Maildir, write_message
from mailrules.state import State


def _make_maildir(root: Path) -> list[tuple[str, str, str]]:
    box = Maildir(str(root))
    inbox = box.ensure_folder("INBOX")
    made = []
    messages = resources.files("mailrules.demo") / "messages"
    for entry in sorted(messages.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".eml"):
            continue
        data = entry.read_bytes()
        view = MessageView.from_bytes(data)
        unique = write_message(inbox, data)
        if view.date:  # the file's time is the arrival time, as a delivery would set it
            stamp = view.date.timestamp()
            os.utime(os.path.join(inbox, "new", unique), (stamp, stamp))
        made.append((unique, entry.name, view.subject))
    return made


def _command_name() -> str:
    """'mailrules' if that is what the shell finds, else the path that was run."""
    running = os.path.realpath(sys.argv[0])
    found = shutil.which("mailrules")
    if found and os.path.realpath(found) == running:
        return "mailrules"
    return os.path.relpath(running) if os.path.basename(running) == "mailrules" else "mailrules"


def run_demo(target: str | None) -> int:
    base = Path(target) if target else Path(tempfile.mkdtemp(prefix="mailrules-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    maildir = base / "Maildir"
    if maildir.exists():
        print(f"{maildir} already exists; choose an empty --dir")
        return 2
    made = _make_maildir(maildir)
    example = (resources.files("mailrules.demo") / "rules.example.yaml").read_text()
    config_path = base / "rules.yaml"
    config_path.write_text(re.sub(r"maildir: ~/Mail", f"maildir: {maildir}", example, count=1))
    config = load_config(config_path)
    state = State(base / "state" / "state.sqlite3")
    events: list[Event] = []
    try:
        report = run_once(config, state, RunOptions(process_all=True, on_event=events.append))
    finally:
        state.close()

    print(f"mailrules demo: {len(made)} sample messages in {maildir}")
    print(f"rules: {config_path} (a copy of rules.example.yaml)\n")
    by_uid: dict[str, list[Event]] = {}
    for event in events:
        by_uid.setdefault(event.uid, []).append(event)
    for unique, filename, subject in made:
        done = by_uid.get(unique, [])
        actions = "; ".join(
            f"{e.action} (rule {e.rule!r})" + ("" if e.result == "ok" else f" [{e.result}]")
            for e in done
        )
        shown = subject if len(subject) <= 38 else subject[:37] + "…"
        print(f"  {filename:26} {shown:39} {actions or 'stays in INBOX (no rule matched)'}")
    print("\nfolders now:")
    box = Maildir(str(maildir))
    for folder in box.folders():
        count = len(box.list_folder(folder).refs)
        print(f"  {folder:22} {count} message{'s' * (count != 1)}")
    me = _command_name()
    print(
        "\nTry:\n"
        f"  {me} explain -c {config_path} "
        f"{resources.files('mailrules.demo') / 'messages' / '08-phish-lookalike.eml'}\n"
        f"  {me} state --state-dir {base / 'state'}\n"
        f"  {me} check -c {config_path}"
    )
    return report.exit_code

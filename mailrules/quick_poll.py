"""The quick poll: a ``run --once`` with nothing new costs one login and one question.

A full run loads and validates the config and compiles the rules, which costs more
than asking a server whether anything arrived. So after a clean run, each IMAP and POP3
account leaves a record in the state database (table ``quick_poll``): a digest of the
config file, the connection settings (never a secret: a password written in the config
is read from it again when needed), and a marker of what the run left behind.

``mailrules run --once`` (not ``--dry-run``, not ``--all``) first asks ``nothing_new``:
when the config file is byte for byte the one recorded, every selected account has a
record, no notification waits in the outbox and no POP3 deletion is due, each account's
checker (``CHECKERS``, by kind) asks its server:

* IMAP (``sources.imap_quick``): one pipelined ``STATUS (UIDNEXT UIDVALIDITY)`` per
  watched folder; nothing is new when each folder's UIDVALIDITY is the one in the state
  and its highest possible UID is at most the last one handled;
* POP3 (``sources.pop3_quick``): one UIDL listing, the same set of UIDLs as recorded.

If every answer is "nothing new", the rules are never loaded. Anything else (new mail,
a changed config, a connection problem, an answer not understood) answers False and the
full run follows, which does the work and reports any error. A quick poll never changes
a mailbox or the state, so being wrong can only cost time, never mail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("mailrules.quick_poll")


@dataclass(frozen=True)
class QuickRecord:
    """What one account's clean run left for the quick poll to compare against."""

    config: str  # the config file's digest
    accounts: str  # JSON list of every account in that config
    settings: str  # JSON: how to connect and log in (never a secret)
    marker: str  # the kind's own marker of what the run left behind
    due_at: float | None = None  # when a full run is due anyway (POP3 delete_after)


@dataclass(frozen=True)
class Question:
    """One account's record, to be compared with what its server says now."""

    account: str
    settings: dict[str, Any]
    marker: str
    db: sqlite3.Connection  # the state database, read-only
    config: Path

    def password(self) -> str | None:
        """The password written in the config, if the record says it is there."""
        where = self.settings.get("password_at")
        if isinstance(where, dict):
            try:
                with open(self.config, "rb") as f:
                    f.seek(where["offset"])
                    return f.read(where["length"]).decode("utf-8")
            except (OSError, UnicodeDecodeError):
                return None  # the login then fails, and the full run reports why
        return inline_password(self.config, where) if where else None


Checker = Callable[[Question], bool]  # True if nothing is new


def _imap(question: Question) -> bool:
    from mailrules.sources.imap_quick import unchanged

    return unchanged(question)


def _pop3(question: Question) -> bool:
    from mailrules.sources.pop3_quick import same_listing

    return same_listing(question)


CHECKERS: dict[str, Checker] = {"imap": _imap, "pop3": _pop3}


def config_digest(path: str | Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def nothing_new(config: Path, state: Path, accounts: list[str] | None) -> bool:
    """True when every selected account is exactly as the last clean run left it."""
    digest = config_digest(config)
    if digest is None or not state.exists():
        return False
    try:
        db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        return _nothing_new(db, digest, accounts, config)
    except sqlite3.Error:
        return False  # an older state database without the table, or none yet
    finally:
        db.close()


def _nothing_new(
    db: sqlite3.Connection, digest: str, accounts: list[str] | None, config: Path
) -> bool:
    rows = db.execute(
        "SELECT account, kind, accounts, settings, marker, due_at FROM quick_poll WHERE config=?",
        (digest,),
    ).fetchall()
    if not rows or _outbox_waiting(db):
        return False  # notifications to send or retry: the full run does that
    records = {row[0]: row for row in rows}
    selected = accounts or json.loads(rows[0][2])
    if any(name not in records for name in selected):
        return False
    now = time.time()
    if any(records[name][5] is not None and records[name][5] <= now for name in selected):
        return False
    for name in selected:
        _, kind, _, settings, marker, _ = records[name]
        checker = CHECKERS.get(kind)
        if checker is None or not checker(Question(name, json.loads(settings), marker, db, config)):
            return False
    for name in selected:
        log.info("%s: nothing new (quick poll; the rules were not loaded)", name)
    return True


def _outbox_waiting(db: sqlite3.Connection) -> bool:
    try:
        found = db.execute("SELECT 1 FROM outbox WHERE state IN ('pending', 'held') LIMIT 1")
        return found.fetchone() is not None
    except sqlite3.Error:
        return False  # no outbox table: nothing was ever queued


def inline_password(config: Path, where: list[str]) -> str | None:
    """A password written in the config itself, at the key path ``where``.

    Read again from the (unchanged) config rather than stored in the state."""
    from mailrules.config.yaml_loader import load_yaml

    try:
        doc = load_yaml(config.read_text(encoding="utf-8"), str(config))
    except (OSError, UnicodeDecodeError):
        return None
    value: Any = doc.data
    for key in where:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, str) else None


def server_settings(
    kind: str, account: str, model: Any, timeout: float, config: str
) -> dict[str, Any]:
    """How the quick poll reaches an account's server, as stored: never a secret.

    ``model`` is the account's ImapModel or Pop3Model, whose settings sit under ``kind``
    in the config file ``config``. A password written in the config is left out;
    ``password_at`` says where the quick poll finds it again: where its text starts in
    the file (the file is byte for byte the same whenever the record is used), or, for a
    password written with escapes, its key path."""
    data = model.model_dump()
    del data["password"]
    settings: dict[str, Any] = {kind: data, "timeout": timeout}
    if model.password is not None:
        secret = model.password.encode("utf-8")
        try:
            offset = Path(config).read_bytes().find(secret)
        except OSError:
            offset = -1
        if offset >= 0:
            settings["password_at"] = {"offset": offset, "length": len(secret)}
        else:
            settings["password_at"] = ["accounts", account, kind, "password"]
    return settings

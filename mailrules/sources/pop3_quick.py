"""The quick poll: a POP3 run with nothing new costs one login and one UIDL listing.

A full ``mailrules run`` loads and validates the config and compiles the rules, which
costs more than the poll itself. After a POP3 session that ended cleanly with every
message on the server handled, the mailbox records in the state database (table
``pop3_poll``): a digest of the config file, the connection settings, a digest of the
set of UIDLs left on the server, and when the next ``delete_after`` deletion is due.

``mailrules run --once`` (not ``--dry-run``, not ``--all``) first asks ``nothing_new``:
when the config file is byte for byte the one recorded, every selected account has a
record, no deletion is due, and each server lists exactly the recorded UIDLs, there is
nothing to do, and the rules are never loaded. Anything else (a new message, a changed
config, a connection problem) answers False, after QUIT without a DELE, and the full
run follows and reports. Accounts whose password is written in the config itself,
and servers without UIDL, get no record: the settings stored here never hold a secret.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

from mailrules.errors import MailrulesError
from mailrules.sources.pop3_connect import Connector

log = logging.getLogger(__name__)


def config_digest(path: str | Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def listing_digest(uidls: Iterable[str]) -> str:
    return hashlib.sha256(b"\n".join(sorted(u.encode() for u in uidls))).hexdigest()


def nothing_new(config: Path, state: Path, accounts: list[str] | None) -> bool:
    """True when every selected POP3 account is exactly as the last clean run left it."""
    digest = config_digest(config)
    if digest is None or not state.exists():
        return False
    try:
        db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT account, accounts, settings, listing, due_at FROM pop3_poll WHERE config=?",
                (digest,),
            ).fetchall()
            if rows and _outbox_waiting(db):
                return False  # notifications to send or retry: the full run does that
        finally:
            db.close()
    except sqlite3.Error:
        return False  # an older state database without the table, or none yet
    records = {row[0]: row for row in rows}
    if not records:
        return False
    selected = accounts or json.loads(rows[0][1])
    if any(name not in records for name in selected):
        return False
    now = time.time()
    for name in selected:
        _, _, settings, listing, due_at = records[name]
        if due_at is not None and due_at <= now:
            return False
        if not _same_listing(name, json.loads(settings), listing):
            return False
    for name in selected:
        log.info("%s: nothing new (quick poll: one UIDL listing; the rules were not loaded)", name)
    return True


def _outbox_waiting(db: sqlite3.Connection) -> bool:
    try:
        found = db.execute("SELECT 1 FROM outbox WHERE state IN ('pending', 'held') LIMIT 1")
        return found.fetchone() is not None
    except sqlite3.Error:
        return False  # no outbox table: nothing was ever queued


def _same_listing(account: str, saved: dict[str, object], listing: str) -> bool:
    settings = SimpleNamespace(**saved["pop3"])  # type: ignore[arg-type]
    connection = Connector(account, settings, float(saved["timeout"]))  # type: ignore[arg-type]
    try:
        with connection._talk("UIDL") as session:
            _, lines, _ = session.uidl()
        pairs = [line.split(None, 1) for line in lines]
        uidls = [p[1].strip() for p in pairs if len(p) == 2]
        if all(u.isascii() for u in uidls):  # as RFC 1939 says they are: skip decoding
            same = hashlib.sha256(b"\n".join(sorted(uidls))).hexdigest() == listing
        else:
            names = (u.decode("ascii", "backslashreplace") for u in uidls)
            same = listing_digest(names) == listing
        with connection._talk("QUIT") as session:
            session.quit()
    except MailrulesError as exc:
        log.debug("%s: quick poll not possible (%s); doing a full run", account, exc)
        return False
    finally:
        connection._drop()
    if not same:
        log.debug("%s: the server's UIDLs changed; doing a full run", account)
    return same

"""The outbox table: notifications waiting to be sent, sent, or given up on.

A row is written in the same transaction that marks its message as handled
(``State.commit(..., outbox=rows)``), with ``INSERT OR IGNORE`` on the unique
(account, folder, validity, uid, rule, action index): a crash and re-run, or
``--all`` over the same mail, never queues a second one. The payload is rendered when
the rule runs and stored as JSON; the dispatcher (``outbox.py``) only sends it.

States: ``pending`` (due at ``next_at``), ``sent``, ``dead`` (gave up; see
``last_error``), ``held`` (over its rate limit, waiting for a digest) and ``folded``
(included in the digest row ``digest_id``). The rate limit is decided as the row is
inserted: if its ``limit_key`` already admitted ``limit_count`` rows in the last
``limit_per`` seconds, it is held.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailrules.errors import StateError
from mailrules.printable import printable
from mailrules.secrets import redact

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    account TEXT NOT NULL,
    folder TEXT NOT NULL,
    validity TEXT NOT NULL,
    uid TEXT NOT NULL,
    rule TEXT NOT NULL,
    idx INTEGER NOT NULL,
    notifier TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    message BLOB,
    limit_key TEXT,
    limit_count INTEGER,
    limit_per REAL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_at REAL NOT NULL,
    sent_at REAL,
    last_error TEXT,
    digest_id INTEGER,
    UNIQUE (account, folder, validity, uid, rule, idx)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_at);
CREATE INDEX IF NOT EXISTS outbox_limit ON outbox (limit_key, created_at)
    WHERE limit_key IS NOT NULL;
"""

# Rows in state pending, sent or dead count against a rate limit; held and folded do not.
INSERT = """
INSERT OR IGNORE INTO outbox (key, account, folder, validity, uid, rule, idx, notifier,
    channel, payload, message, limit_key, limit_count, limit_per, state, created_at, next_at)
SELECT :key, :account, :folder, :validity, :uid, :rule, :idx, :notifier, :channel,
    :payload, :message, :limit_key, :limit_count, :limit_per,
    CASE WHEN :limit_key IS NOT NULL AND (
        SELECT count(*) FROM outbox WHERE limit_key = :limit_key
        AND state IN ('pending', 'sent', 'dead') AND created_at > :now - :limit_per) >= :limit_count
    THEN 'held' ELSE 'pending' END,
    :now, :now
"""


def outbox_key(*identity: object) -> str:
    """The stable id of a notification: its Idempotency-Key and webhook ``id``."""
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class OutboxRow:
    """One notification to insert; ``payload`` is the JSON-ready document."""

    account: str
    folder: str
    validity: str
    uid: str
    rule: str
    idx: int
    notifier: str
    channel: str
    payload: dict[str, Any]
    message: bytes | None = None
    limit_key: str | None = None
    limit_count: int | None = None
    limit_per: float | None = None

    @property
    def key(self) -> str:
        return outbox_key(self.account, self.folder, self.validity, self.uid, self.rule, self.idx)

    def params(self, now: float) -> dict[str, Any]:
        key = self.key
        return {
            "key": key,
            "account": self.account,
            "folder": self.folder,
            "validity": self.validity,
            "uid": self.uid,
            "rule": self.rule,
            "idx": self.idx,
            "notifier": self.notifier,
            "channel": self.channel,
            "payload": json.dumps({"id": key, **self.payload}, ensure_ascii=False),
            "message": self.message,
            "limit_key": self.limit_key,
            "limit_count": self.limit_count,
            "limit_per": self.limit_per,
            "now": now,
        }


@contextmanager
def transaction(db: sqlite3.Connection, path: object) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error; sqlite errors as StateError."""
    try:
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise StateError(f"cannot write the outbox in {path}: {exc}") from None
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def status_lines(db: sqlite3.Connection, limit: int = 20) -> list[str]:
    """For ``mailrules state``: counts by state, then the latest rows not sent, with errors."""
    counts = dict(db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
    if not counts:
        return []
    order = ("sent", "pending", "held", "folded", "dead")
    names = {"held": "held for a digest", "folded": "in digests", "dead": "given up"}
    lines = [
        "notifications: "
        + ", ".join(f"{counts[k]} {names.get(k, k)}" for k in order if counts.get(k))
    ]
    rows = db.execute(
        "SELECT state, notifier, channel, rule, payload, attempts, next_at, last_error, "
        "created_at FROM outbox WHERE state IN ('pending', 'dead', 'held') "
        "ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    for status, notifier, channel, rule, payload, attempts, next_at, error, created in rows:
        doc = json.loads(payload)
        when = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        if status == "pending":
            due = datetime.fromtimestamp(next_at, UTC).strftime("%H:%M:%S")
            status = f"pending (attempt {attempts + 1} at {due} UTC)"
        elif status == "dead":
            status = f"given up after {attempts} attempt{'s' * (attempts != 1)}"
        about = doc.get("message_id") or f"digest of {doc.get('count')}"
        extra = f": {printable(redact(error))}" if error else ""
        lines.append(
            f"  {when} {notifier} ({channel}) rule {rule!r} {printable(about)}: {status}{extra}"
        )
    return lines

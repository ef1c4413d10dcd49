"""SQLite state: which messages each folder has already shown us, and the audit log.

One file in the state directory. Tables:

* ``folders``: per (account, folder) the validity token (IMAP UIDVALIDITY, or
  "maildir") and when the baseline was taken. A folder's first run records every
  message already there as seen and acts on none, unless asked to.
* ``seen``: per (account, folder, validity, uid) the messages handled or baselined.
  Only these rows are compared with a listing, so a run with nothing new parses no mail.
* ``audit``: one row per action on a message: rule, action, result. Texts are cut
  (``AUDIT_TEXT_MAX``, ``AUDIT_ERROR_MAX``) and rows pruned as new ones are written,
  past the config's ``audit: {keep, max_rows}`` (``AuditRetention``).
* ``outbox``: notifications to send, written with the messages that made them
  (``mailrules.notify.store``).
* ``pop3_fetched``: per (account, UIDL) of a POP3 account, when the message was
  delivered locally (fsynced) and whether a rule asked to delete it from the server.
  DELE is decided from these rows alone, so a DELE that a dropped connection undid
  (it takes effect only at QUIT) and ``delete_after`` are done again on a later run.
* ``quick_poll``: per IMAP or POP3 account, what a quick poll compares against after a
  clean run (``mailrules.quick_poll``): the config's digest, the connection settings
  (never a secret), a marker (POP3: a digest of the UIDLs left on the server; IMAP:
  the watched folders), and when the next ``delete_after`` deletion falls due.
* ``service_status``: what the long-running service last did per account, IDLE
  connection and periodic job (last run, last error, next run), for ``mailrules status``.

Writes happen in one ``BEGIN IMMEDIATE`` transaction per batch, after the batch's
actions: a crash before the commit means those messages are handled again (at least
once), never skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mailrules import failpoints
from mailrules.errors import StateError
from mailrules.notify import store as outbox_store
from mailrules.secrets import redact

if TYPE_CHECKING:
    from mailrules.message import MessageView
    from mailrules.quick_poll import QuickRecord

SCHEMA_VERSION = 1
AUDIT_TEXT_MAX = 500  # characters of an audit row's subject, sender, action ...
AUDIT_ERROR_MAX = 2000  # ... and of its error
SEEN_KEEP = 30 * 86400  # seconds a handled IMAP message's Message-ID is remembered
_SCHEMA = """
CREATE TABLE IF NOT EXISTS folders (
    account TEXT NOT NULL,
    folder TEXT NOT NULL,
    validity TEXT NOT NULL,
    baseline_at REAL NOT NULL,
    last_uid INTEGER,
    polled_at REAL,
    PRIMARY KEY (account, folder)
);
CREATE TABLE IF NOT EXISTS seen (
    account TEXT NOT NULL,
    folder TEXT NOT NULL,
    validity TEXT NOT NULL,
    uid TEXT NOT NULL,
    message_id TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (account, folder, validity, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    account TEXT NOT NULL,
    folder TEXT NOT NULL,
    uid TEXT NOT NULL,
    message_id TEXT,
    sender TEXT,
    subject TEXT,
    rule TEXT NOT NULL,
    action TEXT NOT NULL,
    result TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE TABLE IF NOT EXISTS pop3_fetched (
    account TEXT NOT NULL,
    uidl TEXT NOT NULL,
    delivered_at REAL NOT NULL,
    dele INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, uidl)
) WITHOUT ROWID;
DROP TABLE IF EXISTS pop3_poll;
CREATE TABLE IF NOT EXISTS quick_poll (
    account TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    accounts TEXT NOT NULL,
    settings TEXT NOT NULL,
    marker TEXT NOT NULL,
    due_at REAL
);
CREATE TABLE IF NOT EXISTS service_status (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    last_run REAL,
    last_ok REAL,
    last_error TEXT,
    last_error_at REAL,
    failures INTEGER NOT NULL DEFAULT 0,
    next_run REAL,
    detail TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL
);
"""


@dataclass(frozen=True)
class AuditRetention:
    """How long audit rows are kept: ``keep`` seconds, and at most ``max_rows`` rows."""

    keep: float = 90 * 86400
    max_rows: int = 100_000


_retention = AuditRetention()


def use_audit_retention(retention: AuditRetention) -> None:
    """The retention of every State opened from now on (set when a config is loaded)."""
    global _retention
    _retention = retention


def storable(text: str | None) -> str | None:
    """``text`` as SQLite can store it: a lone surrogate (which UTF-8 cannot encode) is
    written as a backslash escape instead of failing the whole transaction."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


_KEY_PREFIX = "\0utf8b:"  # keys that are not UTF-8 text, stored reversibly


def key(uid: str) -> str:
    """A uid (a Maildir file name, a UIDL) as stored: as it is when it is UTF-8 text; else
    (a file name with raw bytes reads as surrogates) an escaped form ``unkey`` reverses,
    so the next listing finds it seen."""
    try:
        uid.encode("utf-8")
    except UnicodeEncodeError:
        return _KEY_PREFIX + uid.encode("utf-8", "surrogatepass").hex()
    return uid


def unkey(stored: str) -> str:
    if stored.startswith(_KEY_PREFIX):
        return bytes.fromhex(stored[len(_KEY_PREFIX) :]).decode("utf-8", "surrogatepass")
    return stored


def bounded(text: str | None, limit: int = AUDIT_TEXT_MAX) -> str | None:
    """``text`` cut to ``limit`` characters (ending in "…" when cut), storable."""
    if text is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return storable(text)


def audit_key(uid: str, message_id: str, action: str) -> tuple[str, str, str]:
    """(uid, Message-ID, action) as an audit row stores them, to compare with one."""
    return (storable(uid) or "", bounded(message_id) or "", bounded(action) or "")


@dataclass(frozen=True)
class Seen:
    uid: str
    message_id: str = ""
    validity: str | None = None  # None: the validity of the folder being committed


LEFT_ALONE = "(existing mail left alone)"  # a seen row's uid: see State.baseline
KEY_FIELDS = ("from", "to", "cc", "date", "subject")  # what names a message without an id


def message_key(view: MessageView) -> str:
    """What the state remembers a handled message by: its Message-ID, or where it has
    none a digest of its From, To, Cc, Date and Subject (the same on any server and
    under any UIDVALIDITY)."""
    if view.message_id:
        return view.message_id
    text = "\n".join(f"{n}:{v}" for n in KEY_FIELDS for v in view.header_all(n))
    return "digest:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class FolderInfo:
    validity: str
    last_uid: int | None
    polled_at: float | None
    baseline_at: float | None = None  # when mailrules first saw the folder


@dataclass(frozen=True)
class AuditRow:
    account: str
    folder: str
    uid: str
    message_id: str
    sender: str
    subject: str
    rule: str
    action: str
    result: str
    error: str | None = None


@dataclass
class ServiceStatus:
    """The service's record of one account, IDLE connection ("account/folder") or job."""

    name: str
    kind: str  # "account", "idle" or "job"
    last_run: float | None = None
    last_ok: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failures: int = 0  # in a row; 0 after a success
    next_run: float | None = None
    detail: str = ""
    updated: float = 0.0


_STATUS_INSERT = (
    "INSERT OR REPLACE INTO service_status (name, kind, last_run, last_ok, last_error, "
    "last_error_at, failures, next_run, detail, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_STATUS_SELECT = (
    "SELECT name, kind, last_run, last_ok, last_error, last_error_at, failures, next_run, "
    "detail, updated FROM service_status ORDER BY kind, name"
)


def state_error(path: object, exc: sqlite3.Error, verb: str) -> StateError:
    """A StateError for an SQLite error: damage (a corrupted file, or not SQLite at all)
    says what to do about it; anything else (locked, read-only, disk full) says what."""
    if type(exc) is sqlite3.DatabaseError:
        return StateError(
            f"the state database {path} is damaged ({exc}); move it away and run again "
            "(the next run records the mail already there as seen, without acting on it), "
            "or restore it from a backup"
        )
    return StateError(f"cannot {verb} the state database {path}: {exc}")


class State:
    """The state database. Use one instance per thread."""

    def __init__(self, path: Path, retention: AuditRetention | None = None) -> None:
        self.path = path
        self.retention = retention or _retention
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.db = sqlite3.connect(str(path), isolation_level=None, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=10000")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"{path} was written by a newer mailrules (schema {version}); upgrade"
                )
            self.db.executescript(_SCHEMA)
            self.db.executescript(outbox_store.SCHEMA)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise state_error(path, exc, "open") from None
        except OSError as exc:
            raise StateError(f"cannot open the state database {path}: {exc}") from None

    def close(self) -> None:
        self.db.close()

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Every row of a SELECT; a damaged or unreadable database as a StateError."""
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise state_error(self.path, exc, "read") from None

    def _write(self, statements: Iterable[tuple[str, Iterable[tuple[object, ...]]]]) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for sql, rows in statements:
                self.db.executemany(sql, rows)
            failpoints.reached()
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise state_error(self.path, exc, "write") from None

    # -- folders and seen messages --------------------------------------------------------

    def folder_validity(self, account: str, folder: str) -> str | None:
        rows = self._query(
            "SELECT validity FROM folders WHERE account=? AND folder=?", (account, folder)
        )
        return rows[0][0] if rows else None

    def folder_info(self, account: str, folder: str) -> FolderInfo | None:
        rows = self._query(
            "SELECT validity, last_uid, polled_at, baseline_at FROM folders "
            "WHERE account=? AND folder=?",
            (account, folder),
        )
        return FolderInfo(*rows[0]) if rows else None

    def seen_message_ids(self, account: str, folder: str) -> set[str]:
        rows = self._query(
            "SELECT message_id FROM seen WHERE account=? AND folder=? AND message_id != ''",
            (account, folder),
        )
        return {r[0] for r in rows}

    def ignored_existing(self, account: str, folder: str) -> bool:
        """Whether the mail found in the folder at first contact was left alone."""
        rows = self._query(
            "SELECT 1 FROM seen WHERE account=? AND folder=? AND uid=? LIMIT 1",
            (account, folder, LEFT_ALONE),
        )
        return bool(rows)

    def set_cursor(self, account: str, folder: str, validity: str, last_uid: int | None) -> None:
        """Record a poll: the highest uid handled; forget old seen rows at or below it."""
        statements: list[tuple[str, Iterable[tuple[object, ...]]]] = [
            (
                "UPDATE folders SET last_uid=coalesce(?, last_uid), polled_at=? "
                "WHERE account=? AND folder=? AND validity=?",
                [(last_uid, time.time(), account, folder, validity)],
            )
        ]
        if last_uid is not None:
            # Rows at or below the cursor, and those of an older UIDVALIDITY, are only kept
            # (for a month) for their Message-ID, which stops a UIDVALIDITY reset from
            # handling a message twice.
            statements.append(
                (
                    "DELETE FROM seen WHERE account=? AND folder=? AND at < ? AND "
                    "(validity != ? OR CAST(uid AS INTEGER) <= ?)",
                    [(account, folder, time.time() - SEEN_KEEP, validity, last_uid)],
                )
            )
        self._write(statements)

    def seen_uids(self, account: str, folder: str, validity: str) -> set[str]:
        rows = self._query(
            "SELECT uid FROM seen WHERE account=? AND folder=? AND validity=?",
            (account, folder, validity),
        )
        return {unkey(str(r[0])) for r in rows}

    def baseline(
        self,
        account: str,
        folder: str,
        validity: str,
        uids: Iterable[str],
        last_uid: int | None = None,
        left_alone: bool = False,
    ) -> None:
        """Record a folder's current messages as seen, replacing any older validity.

        After a UIDVALIDITY reset the older validity's rows are kept (for ``SEEN_KEEP``):
        the Message-IDs of handled messages, so that the next reset still knows them (some
        servers reset with nearly every new message), and the rows of mail found there
        and left alone. ``left_alone``: the mail found at first contact is not acted on
        (``existing: ignore``), which a later reset must know. The folder keeps the time
        mailrules first saw it."""
        now = time.time()
        self._write(
            [
                (
                    "DELETE FROM seen WHERE account=? AND folder=? AND validity != ? AND at < ?",
                    [(account, folder, validity, now - SEEN_KEEP)],
                ),
                (
                    "INSERT OR REPLACE INTO folders (account, folder, validity, baseline_at, "
                    "last_uid, polled_at) VALUES (?, ?, ?, coalesce((SELECT baseline_at FROM "
                    "folders WHERE account=? AND folder=?), ?), ?, ?)",
                    [(account, folder, validity, account, folder, now, last_uid, now)],
                ),
                (
                    "INSERT OR IGNORE INTO seen (account, folder, validity, uid, at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        (account, folder, validity, key(uid), now)
                        for uid in [*uids, *([LEFT_ALONE] if left_alone else [])]
                    ],
                ),
            ]
        )

    def commit(
        self,
        account: str,
        validity: str,
        seen: dict[str, list[Seen]],
        forget: dict[str, list[str]],
        audit: list[AuditRow],
        *,
        outbox: Sequence[outbox_store.OutboxRow] = (),
    ) -> None:
        """One transaction: mark messages seen (per folder), forget gone ones, add audit rows,
        queue the notifications they made (each at most once, ever)."""
        now = time.time()
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO seen (account, folder, validity, uid, message_id, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            account,
                            folder,
                            s.validity or validity,
                            key(s.uid),
                            storable(s.message_id),
                            now,
                        )
                        for folder, rows in seen.items()
                        for s in rows
                    ],
                ),
                (
                    "DELETE FROM seen WHERE account=? AND folder=? AND validity=? AND uid=?",
                    [
                        (account, folder, validity, key(uid))
                        for folder, uids in forget.items()
                        for uid in uids
                    ],
                ),
                (
                    "INSERT INTO audit (at, account, folder, uid, message_id, sender, subject, "
                    "rule, action, result, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            now,
                            a.account,
                            storable(a.folder),
                            storable(a.uid),
                            bounded(a.message_id),
                            bounded(a.sender),
                            bounded(a.subject),
                            bounded(a.rule),
                            bounded(a.action),
                            a.result,
                            bounded(redact(a.error), AUDIT_ERROR_MAX) if a.error else None,
                        )
                        for a in audit
                    ],
                ),
                (outbox_store.INSERT, [row.params(now) for row in outbox]),
                *(self._prune_audit(now) if audit else []),
            ]
        )

    def copies_done(self, account: str, folder: str) -> set[tuple[str, str, str]]:
        """(uid, Message-ID, action) of every copy from this folder the audit log records
        as done."""
        rows = self.db.execute(
            "SELECT uid, message_id, action FROM audit WHERE account=? AND folder=? "
            "AND result='ok' AND action LIKE 'copy %'",
            (account, storable(folder)),
        ).fetchall()
        return {(str(uid), str(mid), str(action)) for uid, mid, action in rows}

    def failures(self, account: str, folder: str, uid: str, action: str) -> int:
        """How often the audit log says ``action`` failed on this message."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM audit WHERE account=? AND folder=? AND uid=? AND action=? "
            "AND result='failed'",
            (account, folder, uid, action),
        ).fetchone()
        return int(row[0])

    def _prune_audit(self, now: float) -> list[tuple[str, Iterable[tuple[object, ...]]]]:
        """Statements that apply the retention: both walk an index, so a prune that finds
        nothing to delete costs two index lookups. Rows are only ever deleted from the
        oldest end, so the newest ``max_rows`` ids are the rows above max(id) - max_rows."""
        return [
            ("DELETE FROM audit WHERE at < ?", [(now - self.retention.keep,)]),
            (
                "DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?",
                [(self.retention.max_rows,)],
            ),
        ]

    def is_known_folder(self, account: str, folder: str) -> bool:
        return self.folder_validity(account, folder) is not None

    # -- the audit log ----------------------------------------------------------------------

    def audit_log(self, limit: int = 50, account: str | None = None) -> list[tuple[object, ...]]:
        sql = (
            "SELECT at, account, folder, uid, message_id, sender, subject, rule, action, result, "
            "error FROM audit"
        )
        args: tuple[object, ...] = ()
        if account:
            sql += " WHERE account=?"
            args = (account,)
        sql += " ORDER BY id DESC LIMIT ?"
        return list(reversed(self._query(sql, (*args, limit))))

    # -- the service's status ------------------------------------------------------------

    def save_status(self, rows: Iterable[ServiceStatus]) -> None:
        now = time.time()
        self._write(
            [
                (
                    _STATUS_INSERT,
                    [
                        (
                            r.name,
                            r.kind,
                            r.last_run,
                            r.last_ok,
                            bounded(r.last_error, AUDIT_ERROR_MAX),
                            r.last_error_at,
                            r.failures,
                            r.next_run,
                            bounded(r.detail, AUDIT_ERROR_MAX),
                            now,
                        )
                        for r in rows
                    ],
                )
            ]
        )

    def service_status(self) -> list[ServiceStatus]:
        rows = self._query(_STATUS_SELECT)
        return [ServiceStatus(*row) for row in rows]

    def keep_status(self, names: Iterable[str]) -> None:
        """Forget the status of accounts, folders and jobs that are no longer configured."""
        keep = set(names)
        names_now = self._query("SELECT name FROM service_status")
        gone = [(n,) for (n,) in names_now if n not in keep]
        self._write([("DELETE FROM service_status WHERE name=?", gone)])

    def summary(self) -> list[tuple[object, ...]]:
        return self._query(
            "SELECT f.account, f.folder, f.validity, f.baseline_at, "
            "(SELECT count(*) FROM seen s WHERE s.account=f.account AND s.folder=f.folder "
            "AND s.validity=f.validity AND s.uid != ?) "
            "FROM folders f ORDER BY f.account, f.folder",
            (LEFT_ALONE,),
        )

    # -- POP3: what was fetched, and what the server may delete ----------------------------

    def pop3_fetched(self, account: str) -> dict[str, tuple[float, bool]]:
        """UIDL -> (delivered_at, a rule asked to delete it) for one POP3 account."""
        rows = self._query(
            "SELECT uidl, delivered_at, dele FROM pop3_fetched WHERE account=?", (account,)
        )
        return {uidl: (at, bool(dele)) for uidl, at, dele in rows}

    def record_pop3(self, account: str, rows: Iterable[tuple[str, float, bool]]) -> None:
        """Record (UIDL, delivered_at, delete wanted) of messages now safely delivered."""
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO pop3_fetched (account, uidl, delivered_at, dele) "
                    "VALUES (?, ?, ?, ?)",
                    [(account, uidl, at, int(dele)) for uidl, at, dele in rows],
                )
            ]
        )

    def forget_pop3(self, account: str, uidls: Iterable[str]) -> None:
        """Forget messages that are no longer on the server."""
        self._write(
            [
                (
                    "DELETE FROM pop3_fetched WHERE account=? AND uidl=?",
                    [(account, uidl) for uidl in uidls],
                )
            ]
        )

    def set_quick_poll(self, account: str, kind: str, record: QuickRecord) -> None:
        """Record what a quick poll of this account may compare against (see quick_poll).

        An identical record is not written again: a steady poll stays read-only."""
        row = (kind, record.config, record.accounts, record.settings, record.marker, record.due_at)
        rows = self._query(
            "SELECT kind, config, accounts, settings, marker, due_at FROM quick_poll "
            "WHERE account=?",
            (account,),
        )
        if rows and rows[0] == row:
            return
        self._write(
            [
                (
                    "INSERT OR REPLACE INTO quick_poll (account, kind, config, accounts, "
                    "settings, marker, due_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(account, *row)],
                )
            ]
        )

    def drop_quick_poll(self, account: str) -> None:
        self._write([("DELETE FROM quick_poll WHERE account=?", [(account,)])])

"""The dispatcher: send the outbox's due rows, retry with backoff, dead-letter, digest.

``dispatch`` runs after the mail work of ``mailrules run --once`` (and after ``deliver``
and ``mailrules notify``), for at most ``budget`` seconds; what is left waits for the
next run. It never sleeps: a failed row gets a ``next_at`` and the loop moves on.

1. **Digests.** For each rate limit whose window has room again, the rows it held are
   folded into one digest row ("37 more from rule 'x'"), or released as themselves
   when only one is held. The digest takes one place in the window.
2. **Claim.** In one transaction, up to a batch of due ``pending`` rows get
   ``attempts + 1`` and a ``next_at`` lease in the future, so a second mailrules
   running at the same time does not send them too; a crash leaves them due again
   once the lease ends.
3. **Send** the batch on a few threads: each channel raises NotifyRetry (connection
   errors, timeouts, 429, 5xx), NotifyError (any other refusal), or returns.
4. **Record**, in one transaction: ``sent``; or ``next_at = now + delay``, where delay
   is full jitter, uniform(0, min(max_backoff, backoff * 2**(attempts-1))), and at least
   the receiver's Retry-After; or ``dead`` after ``attempts`` tries, or at once for
   NotifyError. Errors are stored redacted.

A row whose notifier is gone from the config is dead-lettered with that reason. A crash
after a send and before its record sends it again on the next run, with the same
Idempotency-Key: at least once, and receivers can drop the repeat.
"""

from __future__ import annotations

import importlib
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mailrules.errors import MailrulesError, NotifyError, NotifyRetry
from mailrules.notify.config import Notifier
from mailrules.notify.store import outbox_key, transaction
from mailrules.secrets import redact

log = logging.getLogger(__name__)
BATCH = 128
WORKERS = 4
LEASE_MARGIN = 60.0
DIGEST_SAMPLES = 10
SENDERS = {
    "webhook": "mailrules.notify.webhook",
    "sms": "mailrules.notify.sms",
    "apprise": "mailrules.notify.apprise",
    "command": "mailrules.notify.command",
    "forward": "mailrules.notify.forward",
}


@dataclass
class Job:
    """One claimed row, as a channel sees it."""

    id: int
    key: str
    rule: str
    notifier: str
    channel: str
    payload: dict[str, Any]
    message: bytes | None
    attempts: int


@dataclass
class DispatchReport:
    sent: int = 0
    retrying: int = 0  # failed this time, will be tried again
    dead: int = 0  # given up this time
    digests: int = 0
    waiting: int = 0  # still pending or held when the run ended
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.sent} sent"]
        if self.digests:
            parts.append(f"{self.digests} digest{'s' * (self.digests != 1)} made")
        parts.append(f"{self.retrying} to retry")
        parts.append(f"{self.dead} given up")
        parts.append(f"{self.waiting} waiting")
        return ", ".join(parts)


def dispatch(
    state: Any,
    notifiers: dict[str, Notifier],
    budget: float,
    *,
    workers: int = WORKERS,
    clock: Callable[[], float] = time.time,
) -> DispatchReport:
    """Send what is due within ``budget`` seconds. ``state`` is a mailrules State."""
    db: sqlite3.Connection = state.db
    report = DispatchReport()
    deadline = time.monotonic() + budget
    longest = max(
        (n.connect_timeout + n.read_timeout + n.command_timeout for n in notifiers.values()),
        default=60.0,
    )
    report.digests = _fold(db, state.path, clock())
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="notify") as pool:
        while time.monotonic() < deadline:
            lease = clock() + max(0.0, deadline - time.monotonic()) + longest + LEASE_MARGIN
            jobs = _claim(db, state.path, clock(), lease, BATCH)
            if not jobs:
                break
            outcomes = list(pool.map(lambda job: _attempt(job, notifiers, deadline), jobs))
            _record(db, state.path, jobs, outcomes, notifiers, clock(), report)
    report.waiting = db.execute(
        "SELECT count(*) FROM outbox WHERE state IN ('pending', 'held')"
    ).fetchone()[0]
    return report


# -- claim, send, record ---------------------------------------------------------------


def _claim(db: sqlite3.Connection, path: object, now: float, lease: float, n: int) -> list[Job]:
    with transaction(db, path):
        rows = db.execute(
            "SELECT id, key, rule, notifier, channel, payload, message, attempts FROM outbox "
            "WHERE state = 'pending' AND next_at <= ? ORDER BY next_at, id LIMIT ?",
            (now, n),
        ).fetchall()
        db.executemany(
            "UPDATE outbox SET attempts = attempts + 1, next_at = ? WHERE id = ?",
            [(lease, r[0]) for r in rows],
        )
    return [Job(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7] + 1) for r in rows]


_NOT_TRIED = object()


def _attempt(job: Job, notifiers: dict[str, Notifier], deadline: float) -> object:
    """None when sent; the exception when not; _NOT_TRIED when the budget ran out first."""
    if time.monotonic() >= deadline:
        return _NOT_TRIED
    notifier = notifiers.get(job.notifier)
    if notifier is None:
        return NotifyError(
            f"no notifier named {job.notifier!r} in the config any more; restore it and run "
            "'mailrules notify --retry-dead'"
        )
    if notifier.channel != job.channel:
        return NotifyError(
            f"notifier {job.notifier!r} is now a {notifier.channel}, not a {job.channel}"
        )
    try:
        detail = importlib.import_module(SENDERS[job.channel]).send(notifier, job)
    except MailrulesError as exc:  # NotifyError, NotifyRetry, CredentialError
        return exc
    except Exception as exc:  # a channel bug must not lose the row or stop the others
        log.exception("notify: %s failed unexpectedly", job.notifier)
        return NotifyRetry(f"internal error: {type(exc).__name__}")
    log.info(
        "notify: sent via %s (%s) for rule %r, message %s: %s",
        job.notifier,
        job.channel,
        job.rule,
        job.payload.get("message_id") or "-",
        detail,
    )
    return None


def backoff(notifier: Notifier, attempts: int, retry_after: float | None) -> float:
    """Full jitter: uniform(0, min(max_backoff, backoff * 2**(attempts-1))), >= Retry-After."""
    ceiling = min(notifier.max_backoff, notifier.backoff * 2 ** max(0, attempts - 1))
    delay = random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography
    return max(delay, retry_after or 0.0)


def _record(
    db: sqlite3.Connection,
    path: object,
    jobs: list[Job],
    outcomes: list[object],
    notifiers: dict[str, Notifier],
    now: float,
    report: DispatchReport,
) -> None:
    updates: list[tuple[str, list[tuple[Any, ...]]]] = [
        ("UPDATE outbox SET state = 'sent', sent_at = ?, last_error = NULL WHERE id = ?", []),
        ("UPDATE outbox SET next_at = ?, last_error = ? WHERE id = ?", []),
        ("UPDATE outbox SET state = 'dead', next_at = ?, last_error = ? WHERE id = ?", []),
        ("UPDATE outbox SET attempts = attempts - 1, next_at = ? WHERE id = ?", []),
    ]
    for job, outcome in zip(jobs, outcomes, strict=True):
        if outcome is None:
            updates[0][1].append((now, job.id))
            report.sent += 1
            continue
        if outcome is _NOT_TRIED:
            updates[3][1].append((now, job.id))
            continue
        assert isinstance(outcome, Exception)
        error = redact(str(outcome))
        notifier = notifiers.get(job.notifier)
        limit = notifier.attempts if notifier else 1
        retry = isinstance(outcome, NotifyRetry) or not isinstance(outcome, NotifyError)
        if retry and job.attempts < limit and notifier is not None:
            after = outcome.retry_after if isinstance(outcome, NotifyRetry) else None
            delay = backoff(notifier, job.attempts, after)
            updates[1][1].append((now + delay, error, job.id))
            report.retrying += 1
            log.warning(
                "notify: %s for rule %r, attempt %d of %d failed, next in %.0fs: %s",
                job.notifier,
                job.rule,
                job.attempts,
                limit,
                delay,
                error,
            )
        else:
            updates[2][1].append((now, error, job.id))
            report.dead += 1
            report.errors.append(f"{job.notifier} (rule {job.rule!r}): {error}")
            log.error(
                "notify: %s for rule %r given up after %d attempt%s (dead-letter): %s",
                job.notifier,
                job.rule,
                job.attempts,
                "s" * (job.attempts != 1),
                error,
            )
    with transaction(db, path):
        for sql, rows in updates:
            db.executemany(sql, rows)


# -- digests ---------------------------------------------------------------------------


def _fold(db: sqlite3.Connection, path: object, now: float) -> int:
    """Fold held rows into digests where their rate limit has room again. Returns digests."""
    made = 0
    keys = db.execute("SELECT DISTINCT limit_key FROM outbox WHERE state = 'held'").fetchall()
    for (limit_key,) in keys:
        with transaction(db, path):
            held = db.execute(
                "SELECT id, account, rule, notifier, channel, payload, limit_count, limit_per "
                "FROM outbox WHERE limit_key = ? AND state = 'held' ORDER BY id",
                (limit_key,),
            ).fetchall()
            if not held:
                continue
            count, per = held[-1][6], held[-1][7]
            admitted = db.execute(
                "SELECT count(*) FROM outbox WHERE limit_key = ? "
                "AND state IN ('pending', 'sent', 'dead') "
                "AND created_at > ?",
                (limit_key, now - per),
            ).fetchone()[0]
            if admitted >= count:
                continue
            if len(held) == 1:
                db.execute(
                    "UPDATE outbox SET state = 'pending', created_at = ?, next_at = ? WHERE id = ?",
                    (now, now, held[0][0]),
                )
                continue
            digest_id = _insert_digest(db, limit_key, held, now)
            db.executemany(
                "UPDATE outbox SET state = 'folded', digest_id = ? WHERE id = ?",
                [(digest_id, row[0]) for row in held],
            )
            made += 1
    return made


def _insert_digest(db: sqlite3.Connection, limit_key: str, held: list[Any], now: float) -> int:
    first_id, account, rule, notifier, channel = held[0][:5]
    count, per = held[-1][6], held[-1][7]
    payloads = [json.loads(row[5]) for row in held]
    rules = sorted({row[2] for row in held})
    named = f"rule {rules[0]!r}" if len(rules) == 1 else f"rules {', '.join(map(repr, rules))}"
    latest = payloads[-1]
    text = f"…and {len(held)} more from {named}; latest: {latest.get('text', '')}"
    uid = f"digest:{limit_key}:{first_id}"
    key = outbox_key(account, "", "", uid, rule, -1)
    payload = {
        "id": key,
        "type": "digest",
        "account": account,
        "rule": rule if len(rules) == 1 else None,
        "rules": rules,
        "notifier": notifier,
        "count": len(held),
        "limit": {"count": count, "per": per},
        "text": text,
        "title": f"{len(held)} more notifications",
        "messages": [
            {
                "message_id": p.get("message_id"),
                "from": (p.get("from") or {}).get("address", ""),
                "subject": p.get("subject", ""),
                "date": p.get("date"),
                "folder": p.get("folder"),
            }
            for p in payloads[-DIGEST_SAMPLES:]
        ],
    }
    cursor = db.execute(
        "INSERT INTO outbox (key, account, folder, validity, uid, rule, idx, notifier, channel, "
        "payload, limit_key, limit_count, limit_per, state, created_at, next_at) "
        "VALUES (?, ?, '', '', ?, ?, -1, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
        (
            key,
            account,
            uid,
            rule,
            notifier,
            channel,
            json.dumps(payload, ensure_ascii=False),
            limit_key,
            count,
            per,
            now,
            now,
        ),
    )
    log.info("notify: %d held notifications for %s folded into one digest", len(held), named)
    return int(cursor.lastrowid or 0)


def retry_dead(state: Any) -> int:
    """Queue dead-lettered rows again, with a fresh count of attempts. Returns how many."""
    with transaction(state.db, state.path):
        cursor = state.db.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_at = ? WHERE state = 'dead'",
            (time.time(),),
        )
    return cursor.rowcount

"""Crash points for the crash-safety tests.

Every step that changes a mailbox or the state database calls ``reached()``. When
``MAILRULES_CRASH_AFTER=N`` is set, the process kills itself with SIGKILL at the N-th
step, exactly as a power cut or ``kill -9`` would stop it there. The tests run a
real ``mailrules run`` once per N and check that no message was lost. Unset (always,
outside the tests), this costs one integer comparison.
"""

from __future__ import annotations

import os
import signal

_limit = int(os.environ.get("MAILRULES_CRASH_AFTER", "0") or 0)
_count = 0


def reached() -> None:
    global _count
    if not _limit:
        return
    _count += 1
    if _count >= _limit:
        os.kill(os.getpid(), signal.SIGKILL)


_batch = int(os.environ.get("MAILRULES_BATCH", "0") or 0)


def batch_size(default: int) -> int:
    """Messages decided before acting on them. ``MAILRULES_BATCH`` (tests only) makes a
    handful of messages span several batches, so that the crash tests reach the steps
    where one batch is acted on while the next is decided."""
    return _batch or default

"""One writer per state directory: an flock(2) on ``mailrules.lock`` beside the database.

The service and ``run --once`` hold it for as long as they run; a second one on the
same state directory stops at once with a message naming the holder's pid, instead of
processing the same mail twice. The kernel drops the lock when its holder dies, however
it dies, so a stale lock file never blocks anything. ``holder`` tells ``mailrules
status`` whether a service is running without taking the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from mailrules.errors import MailrulesError

LOCK_NAME = "mailrules.lock"


class LockedError(MailrulesError):
    """Another mailrules process holds the state directory's lock."""


class StateLock:
    """The lock of one state directory. ``acquire`` raises LockedError if it is taken."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, what: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        for attempt in range(3):  # `holder` takes a shared lock for an instant
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < 2:
                    time.sleep(0.05)
        else:
            os.close(fd)
            pid = _read_pid(self.path)
            holder = f" (pid {pid})" if pid else ""
            raise LockedError(
                f"another mailrules{holder} is already running on the state directory "
                f"{self.path.parent}; stop it first, or give this one its own --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {what}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def holder(state_dir: Path) -> tuple[int, str] | None:
    """(pid, what) of the process holding the lock, or None if nobody holds it."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(path)
        text = path.read_text(errors="replace").split(maxsplit=1)
        return (pid or 0, text[1].strip() if len(text) > 1 else "")
    finally:
        os.close(fd)
    return None


def _read_pid(path: Path) -> int | None:
    try:
        first = path.read_text(errors="replace").split()
    except OSError:
        return None
    return int(first[0]) if first and first[0].isdigit() else None

"""Logging setup: lines on stderr, as text or JSON, journald-friendly under systemd.

* ``text`` (default): ``12:03:10 INFO mailrules.actions: account=work folder=INBOX uid=7 …``
* ``json`` (``--log-format json``): one object per line with ``time`` (UTC, ISO 8601),
  ``level``, ``logger``, ``message`` and, where known, ``account``, ``folder`` and
  ``uid``, from the record (``extra={"context": {...}}``) or from ``context()``.
* When stderr is the journal (``$JOURNAL_STREAM`` names its device and inode), lines
  carry no timestamp and start with a ``<N>`` priority that journald turns into the
  entry's PRIORITY.

Every line passes through ``mailrules.secrets.redact``, whatever the format: a token,
password or HMAC key that mailrules has read never reaches the log. Control characters
in a message (from a Subject, a Message-ID) are escaped (``mailrules.printable``), and a
message is cut at LINE_MAX characters.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterator

from mailrules.printable import printable

_JOURNAL_LEVELS = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context")


@contextlib.contextmanager
def context(**fields: str) -> Iterator[None]:
    """Add ``fields`` (account, folder) to every JSON log line logged inside the block."""
    token = _context.set({**_context.get({}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class _JournalFormatter(logging.Formatter):
    """No timestamp (journald adds one); a <N> priority prefix it understands."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_JOURNAL_LEVELS.get(record.levelno, 6)}>{self.inner.format(record)}"


class _JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {}
        if self.timestamps:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            out["time"] = f"{stamp}.{int(record.msecs):03d}Z"
        out["level"] = record.levelname.lower()
        out["logger"] = record.name
        out["message"] = record.getMessage()
        out.update(_context.get({}))
        out.update(getattr(record, "context", None) or {})
        if record.exc_info:  # _Redact has put the redacted traceback in exc_text
            out["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


LINE_MAX = 4000  # characters of one log message: a 10 MiB Subject is not logged whole


class _Redact(logging.Filter):
    """Replace known secrets in the message and any traceback with ***; escape control
    characters (a Subject's ESC or CR) and cut the message to LINE_MAX characters."""

    def filter(self, record: logging.LogRecord) -> bool:
        from mailrules.secrets import redact  # loaded on the first log line, not at start-up

        message = record.getMessage()
        clean = printable(redact(message), LINE_MAX)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_text = "\n".join(printable(line) for line in text.split("\n"))
        return True


def stderr_is_journal() -> bool:
    """True if stderr is the journal stream systemd set up ($JOURNAL_STREAM = dev:inode).

    A program started from a shell inside a service inherits the variable with another
    stderr; comparing device and inode keeps its lines free of priority prefixes.
    """
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def setup(verbosity: int = 0, fmt: str = "text") -> None:
    """0: warnings; 1 (-v): info, with one line per action; 2 (-vv): debug; -1 (-q): errors.

    ``fmt`` is "text" or "json".
    """
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    journal = stderr_is_journal()
    formatter: logging.Formatter
    if fmt == "json":
        formatter = _JsonFormatter(timestamps=not journal)
    elif journal:
        formatter = logging.Formatter("%(name)s: %(message)s")
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handler.setFormatter(_JournalFormatter(formatter) if journal else formatter)
    handler.addFilter(_Redact())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs request paths and queries at debug level: they can hold tokens.
    logging.getLogger("urllib3").setLevel(max(level, logging.INFO))

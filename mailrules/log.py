"""Logging setup: plain lines on stderr, journald-friendly when systemd captures them.

Every line passes through ``mailrules.secrets.redact``: a token, password or HMAC key
that mailrules has read never reaches the log, even inside a library's message.
"""

from __future__ import annotations

import logging
import os
import sys

_JOURNAL_LEVELS = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _JournalFormatter(logging.Formatter):
    """No timestamp (journald adds one); a <N> priority prefix it understands."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_JOURNAL_LEVELS.get(record.levelno, 6)}>{super().format(record)}"


class _Redact(logging.Filter):
    """Replace known secrets in the message and any traceback with ***."""

    def filter(self, record: logging.LogRecord) -> bool:
        from mailrules.secrets import redact  # loaded on the first log line, not at start-up

        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def setup(verbosity: int = 0) -> None:
    """0: warnings; 1 (-v): info, with one line per action; 2 (-vv): debug; -1 (-q): errors."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(_Redact())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs request paths and queries at debug level: they can hold tokens.
    logging.getLogger("urllib3").setLevel(max(level, logging.INFO))

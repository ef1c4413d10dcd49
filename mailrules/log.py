"""Logging setup: plain lines on stderr, journald-friendly when systemd captures them."""

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


_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never let this value reach a log line (passwords, tokens, keys)."""
    if len(value) >= 4:
        _secrets.add(value)


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            text = record.getMessage()
            if any(secret in text for secret in _secrets):
                for secret in _secrets:
                    text = text.replace(secret, "********")
                record.msg, record.args = text, None
            if record.exc_info and record.exc_info[1] is not None:
                shown = str(record.exc_info[1])
                if any(secret in shown for secret in _secrets):
                    record.exc_info = None  # a traceback that quotes a secret is dropped
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

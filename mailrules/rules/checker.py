"""Helpers that validate hand-parsed parts of a config and collect every problem.

Conditions, actions and templates are parsed by their registries rather than by a
single schema, so that each can give its own precise message. They report through a
Checker, which turns a value's path into the file:line:col of the YAML document.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from mailrules.config.yaml_loader import Document, Path
from mailrules.errors import ConfigProblem

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
DURATION_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 7 * 86400,
    "week": 7 * 86400,
    "weeks": 7 * 86400,
    "mo": 30 * 86400,
    "month": 30 * 86400,
    "months": 30 * 86400,
    "y": 365 * 86400,
    "year": 365 * 86400,
    "years": 365 * 86400,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
MAX_DURATION = 100 * 365 * 86400  # 100y: older_than and newer_than count back from today
MAX_SIZE = 2**32 - 1  # IMAP's limit for a SEARCH size (RFC 3501 number), about 4 GiB
SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def did_you_mean(name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}known: {', '.join(known)}"


def describe(value: Any, *, secret: bool = False) -> str:
    """What a value is, for a problem; a ``secret`` one by its kind only, never its value."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean" if secret else f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return "a number" if secret else f"a number ({_short(value)[1:-1]})"
    if isinstance(value, str):
        return "text" if secret else f"text ({_short(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Checker:
    """Collects problems found while parsing one config document."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[ConfigProblem] = []
        self.warnings: list[ConfigProblem] = []  # valid, but probably not what was meant

    def error(self, path: Path, message: str, *, key: bool = False) -> None:
        mark = self.doc.mark(path, key=key)
        self.problems.append(ConfigProblem(self.doc.path, mark.line, mark.col, message))

    def warn(self, path: Path, message: str) -> None:
        mark = self.doc.mark(path)
        self.warnings.append(ConfigProblem(self.doc.path, mark.line, mark.col, message))

    def where(self, path: Path) -> str:
        """A readable name for a path: rules[2].when.from."""
        out = ""
        for part in path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    # -- typed getters: return None (and record a problem) when the value is wrong --

    def text(self, value: Any, path: Path, what: str, *, empty_ok: bool = False) -> str | None:
        if not isinstance(value, str):
            self.error(path, f"{self.where(path)}: expected {what} as text, got {describe(value)}")
            return None
        if not value and not empty_ok:
            self.error(path, f"{self.where(path)}: {what} must not be empty")
            return None
        return value

    def text_list(self, value: Any, path: Path, what: str) -> list[str] | None:
        """A string or a list of strings, as a list."""
        if isinstance(value, str):
            return [value] if self.text(value, path, what) is not None else None
        if not isinstance(value, list) or not value:
            self.error(
                path,
                f"{self.where(path)}: expected {what} as text or a non-empty list, "
                f"got {describe(value)}",
            )
            return None
        out = [self.text(item, (*path, i), what) for i, item in enumerate(value)]
        return None if None in out else out  # type: ignore[return-value]

    def boolean(self, value: Any, path: Path) -> bool | None:
        if not isinstance(value, bool):
            self.error(path, f"{self.where(path)}: expected true or false, got {describe(value)}")
            return None
        return value

    def mapping(
        self, value: Any, path: Path, allowed: Iterable[str], required: Iterable[str] = ()
    ) -> dict[str, Any] | None:
        allowed = list(allowed)
        if not isinstance(value, dict):
            self.error(
                path,
                f"{self.where(path)}: expected a mapping with keys {', '.join(allowed)}, "
                f"got {describe(value)}",
            )
            return None
        ok = True
        for key in value:
            if key not in allowed:
                self.error(
                    (*path, key),
                    f"{self.where(path)}: unknown key '{key}'; {did_you_mean(key, allowed)}",
                    key=True,
                )
                ok = False
        for key in required:
            if key not in value:
                self.error(path, f"{self.where(path)}: missing required key '{key}'")
                ok = False
        return value if ok else None

    def duration(self, value: Any, path: Path) -> float | None:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        found = _DURATION.match(text) if isinstance(text, str) else None
        unit = found.group(2).lower() if found else ""
        if isinstance(value, int) and not isinstance(value, bool):
            self.error(
                path,
                f"{self.where(path)}: a bare number is ambiguous as a duration: "
                f"write it with a unit, e.g. '{value}s', '{value}m', '{value}d'",
            )
            return None
        if not found or unit not in DURATION_UNITS:
            self.error(
                path,
                f"{self.where(path)}: expected a duration such as 90s, 30m, 12h, 7d, 2w, "
                f"6mo or 1y, got {describe(value)}",
            )
            return None
        seconds = float(found.group(1)) * DURATION_UNITS[unit]
        if seconds > MAX_DURATION:
            self.error(
                path,
                f"{self.where(path)}: {_short(text)} is too long: at most 100y",
            )
            return None
        return seconds

    def size(self, value: Any, path: Path) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            if value > MAX_SIZE:
                self.error(path, f"{self.where(path)}: {_short(value)} is too large: at most 4GiB")
                return None
            return value
        found = _SIZE.match(value) if isinstance(value, str) else None
        unit = found.group(2).lower() if found else ""
        if not found or unit not in SIZE_UNITS:
            self.error(
                path,
                f"{self.where(path)}: expected a size such as 500, 100KiB, 2MB or 1GiB, "
                f"got {describe(value)}",
            )
            return None
        size = float(found.group(1)) * SIZE_UNITS[unit]
        if size > MAX_SIZE:
            self.error(path, f"{self.where(path)}: {_short(value)} is too large: at most 4GiB")
            return None
        return int(size)


def _short(value: Any) -> str:
    """A value as a problem quotes it: long ones cut (a number may have 400 digits)."""
    text = str(value)
    return repr(text if len(text) <= 24 else text[:20] + "...")

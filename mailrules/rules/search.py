"""IMAP SEARCH forms of conditions, for narrowing a full pass to the messages that may match.

``to_search`` gives criteria that match a *superset* of what the condition matches
(never fewer messages), so the server can skip everything no rule could want and the
client then decides exactly, on decoded values, for the candidates. A translation is
``exact`` when server and client agree message for message (flags, keywords, sizes);
only exact criteria may be negated. Conditions the server cannot express (regular
expressions, bodies with HTML, attachments, commands) give None: no narrowing.

Dates: SEARCH BEFORE/SINCE are day-granular and use the server's time zone (RFC 3501
s6.4.4), so the day is widened by two either way and the exact age is decided here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mailrules.rules.conditions import (
    AddressCondition,
    AgeCondition,
    AllOf,
    AnyOf,
    Condition,
    FlagCondition,
    HeaderCondition,
    ListCondition,
    Not,
    SizeCondition,
)
from mailrules.rules.text import TextTest

FLAG_KEYS = {"seen": "SEEN", "answered": "ANSWERED", "flagged": "FLAGGED",
             "deleted": "DELETED", "draft": "DRAFT"}  # fmt: skip
ADDRESS_KEYS = {"from": "FROM", "to": "TO", "cc": "CC", "bcc": "BCC"}


@dataclass(frozen=True)
class Search:
    """SEARCH criteria (one parenthesised group; sent by ``sources.imap_search``) and
    whether they are exact. Text values are str when ASCII, UTF-8 bytes otherwise."""

    criteria: list[Any]
    exact: bool


def literal(test: TextTest) -> str | bytes | None:
    """A substring every value the test accepts contains, or None if there is none."""
    if test.op in ("contains", "is"):
        text = test.pattern
    elif test.op == "matches":
        chunks = re.split(r"[*?]|\[[^\]]*\]", test.pattern)
        text = max(chunks, key=len) if chunks else ""
    else:
        return None
    if not text:
        return None
    return text if text.isascii() else text.encode("utf-8")  # non-ASCII goes as a literal


def any_of(parts: list[Search]) -> Search:
    result = parts[0]
    for part in parts[1:]:
        result = Search(["OR", result.criteria, part.criteria], result.exact and part.exact)
    return result


def _address(cond: AddressCondition, now: datetime) -> Search | None:
    key = ADDRESS_KEYS.get(cond.kind)
    if key is None:
        return None
    parts = []
    for test in cond.tests:
        text = literal(test.test)
        if text is None:
            return None
        parts.append(Search([key, text], exact=False))
    return any_of(parts)


def _header(cond: HeaderCondition, now: datetime) -> Search | None:
    name = cond.name.upper()
    if cond.tests is None:
        return Search(["HEADER", name, ""], exact=False)
    parts = []
    for test in cond.tests:
        text = literal(test)
        if text is None:
            return None
        parts.append(Search(["SUBJECT", text] if name == "SUBJECT" else ["HEADER", name, text],
                            exact=False))  # fmt: skip
    return any_of(parts)


def _list(cond: ListCondition, now: datetime) -> Search | None:
    parts = []
    for test in cond.tests:
        text = literal(test)
        if text is None:
            return None
        parts.append(Search(["HEADER", "LIST-ID", text], exact=False))
    return any_of(parts)


def _size(cond: SizeCondition, now: datetime) -> Search | None:
    return Search(["LARGER" if cond.larger else "SMALLER", cond.limit], exact=True)


def _age(cond: AgeCondition, now: datetime) -> Search | None:
    cutoff = (now - timedelta(seconds=cond.seconds)).date()
    if cond.older:
        return Search(["BEFORE", cutoff + timedelta(days=2)], exact=False)
    return Search(["SINCE", cutoff - timedelta(days=2)], exact=False)


def _flags(cond: FlagCondition, now: datetime) -> Search | None:
    if cond.keywords:
        terms: list[Any] = [t for word in sorted(cond.wanted) for t in ("KEYWORD", word)]
    else:
        terms = [FLAG_KEYS[f] for f in sorted(cond.wanted)]
    return Search(terms, exact=True)


def _all(cond: AllOf, now: datetime) -> Search | None:
    parts = [to_search(p, now) for p in cond.parts]
    known = [p for p in parts if p is not None]
    if not known:
        return None
    return Search([p.criteria for p in known], exact=len(known) == len(parts)
                  and all(p.exact for p in known))  # fmt: skip


def _any(cond: AnyOf, now: datetime) -> Search | None:
    parts = [to_search(p, now) for p in cond.parts]
    if any(p is None for p in parts):
        return None
    return any_of(parts)  # type: ignore[arg-type]


def _not(cond: Not, now: datetime) -> Search | None:
    inner = to_search(cond.part, now)
    if inner is None or not inner.exact:
        return None
    return Search(["NOT", inner.criteria], exact=True)


TRANSLATIONS: dict[type, Callable[[Any, datetime], Search | None]] = {
    AddressCondition: _address,
    HeaderCondition: _header,
    ListCondition: _list,
    SizeCondition: _size,
    AgeCondition: _age,
    FlagCondition: _flags,
    AllOf: _all,
    AnyOf: _any,
    Not: _not,
}


def to_search(cond: Condition, now: datetime) -> Search | None:
    translate = TRANSLATIONS.get(type(cond))
    return translate(cond, now) if translate else None

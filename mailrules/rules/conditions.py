"""The condition registry: name -> parser, JSON schema and a one-line summary.

A ``when`` is a mapping of conditions (all must hold), a list of them (all must hold),
or one of ``all`` / ``any`` / ``not`` nesting others to any depth. Each condition
evaluates to an Outcome that says whether it matched and why, with the decoded values
it compared: that is what ``mailrules explain`` prints.

Adding a condition is one ``@condition`` entry in this file.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailrules.commands import CommandFailed, run_command
from mailrules.config.yaml_loader import Path
from mailrules.errors import RuleError
from mailrules.message import MessageView
from mailrules.rules.checker import Checker, describe, did_you_mean
from mailrules.rules.text import (
    REGEX_BUDGET,
    REGEX_TIMEOUT,
    TEXT_OPS,
    AddressTest,
    Captures,
    RegexTimeout,
    TextTest,
    glob_problem,
    parse_address_tests,
    parse_text_tests,
)

log = logging.getLogger(__name__)

STANDARD_FLAGS = ("seen", "answered", "flagged", "deleted", "draft")
FLAG_ALIASES = {"read": "seen", "replied": "answered"}
_KEYWORD = re.compile(r"^[^\s(){%*\"\\\]]+$")


@dataclass
class EvalContext:
    """What conditions may use besides the message: the time and where it is."""

    now: datetime
    account: str
    folder: str
    rule: str = ""
    explain: bool = False  # build the reasons for misses too (mailrules explain)
    regex_left: float = REGEX_BUDGET  # seconds of regex matching this message has left


def _text_match(test: TextTest, value: str, ctx: EvalContext) -> Captures | None:
    """test.match, with a regex bounded by its timeout and by the message's budget."""
    if test.op != "regex":
        return test.match(value)
    if ctx.regex_left <= 0:
        raise RegexTimeout(test.pattern, len(value), 0.0)
    started = time.monotonic()
    try:
        return test.match(value, min(REGEX_TIMEOUT, ctx.regex_left))
    finally:
        ctx.regex_left -= time.monotonic() - started


def _gave_up(msg: MessageView, ctx: EvalContext, label: str, exc: RegexTimeout) -> Outcome:
    """A regex ran out of time: no match, and the log says why."""
    why = f"{label}: {exc}"
    if ctx.regex_left <= 0:
        why += f" (this message used up its {REGEX_BUDGET:g}s of regex time)"
    log.warning("%s/%s: %s: rule %r: %s", ctx.account, ctx.folder, msg.name, ctx.rule, why)
    return Outcome(False, why)


@dataclass
class Outcome:
    matched: bool
    why: str
    captures: Captures = field(default_factory=dict)


class Condition:
    """Base of every condition. ``needs`` names what the message must provide."""

    needs: frozenset[str] = frozenset()

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        raise NotImplementedError

    def headers(self) -> frozenset[str]:
        """Header fields this condition reads (for header-only fetches)."""
        return frozenset()


@dataclass(frozen=True)
class ConditionSpec:
    name: str
    summary: str
    schema: dict[str, Any]
    parse: Callable[[Any, Path, Checker, dict[str, Any]], Condition | None]


CONDITIONS: dict[str, ConditionSpec] = {}
HEADER_MODIFIERS = (*TEXT_OPS, "exists", "case_sensitive")


def condition(
    name: str, summary: str, schema: dict[str, Any]
) -> Callable[[Callable[..., Condition | None]], Callable[..., Condition | None]]:
    def register(fn: Callable[..., Condition | None]) -> Callable[..., Condition | None]:
        CONDITIONS[name] = ConditionSpec(name, summary, schema, fn)
        return fn

    return register


def _q(value: str, limit: int = 80) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _miss(ctx: EvalContext, reason: Callable[[], str]) -> Outcome:
    """A condition that did not match; its reason is built only for explain."""
    return Outcome(False, reason() if ctx.explain else "")


def _wanted(tests: list[TextTest] | list[AddressTest]) -> str:
    return " or ".join(t.describe() for t in tests)


# -- parsing a `when` ------------------------------------------------------------------


def parse_condition(value: Any, path: Path, check: Checker) -> Condition | None:
    """Parse one condition tree; record problems in ``check`` and return None on error."""
    if isinstance(value, list):
        parts = [parse_condition(item, (*path, i), check) for i, item in enumerate(value)]
        return None if None in parts else AllOf(parts)  # type: ignore[arg-type]
    if not isinstance(value, dict) or not value:
        check.error(
            path,
            f"{check.where(path)}: expected a condition such as {{from: alice@example.org}}, "
            f"got {describe(value)}",
        )
        return None
    names = [k for k in value if k in CONDITIONS]
    modifiers = {k: v for k, v in value.items() if k in HEADER_MODIFIERS}
    ok = True
    for key in value:
        if key in CONDITIONS or key in modifiers:
            continue
        known = list(CONDITIONS) + (list(HEADER_MODIFIERS) if "header" in value else [])
        check.error(
            (*path, key),
            f"{check.where(path)}: unknown condition '{key}'; {did_you_mean(key, known)}",
            key=True,
        )
        ok = False
    if modifiers and "header" not in value:
        first = next(iter(modifiers))
        check.error(
            (*path, first),
            f"{check.where(path)}: '{first}' belongs to a header test, "
            f"as in {{header: List-Id, {first}: ...}}; for a subject write "
            f"{{subject: {{{first}: ...}}}}",
            key=True,
        )
        ok = False
    parsed = []
    for name in names:
        inline = modifiers if name == "header" else {}
        cond = CONDITIONS[name].parse(value[name], (*path, name), check, inline)
        if cond is None:
            ok = False
        parsed.append(cond)
    if not ok or not parsed:
        return None
    return parsed[0] if len(parsed) == 1 else AllOf(parsed)  # type: ignore[arg-type]


# -- boolean combinators ----------------------------------------------------------------


@dataclass
class AllOf(Condition):
    parts: list[Condition]

    def __post_init__(self) -> None:
        self.needs = frozenset().union(*(p.needs for p in self.parts))

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        captures: Captures = {}
        whys = []
        for part in self.parts:
            out = part.evaluate(msg, ctx)
            if not out.matched:
                return out
            captures.update(out.captures)
            whys.append(out.why)
        return Outcome(True, "; ".join(whys) or "all: nothing to test", captures)

    def headers(self) -> frozenset[str]:
        return frozenset().union(*(p.headers() for p in self.parts))


@dataclass
class AnyOf(Condition):
    parts: list[Condition]

    def __post_init__(self) -> None:
        self.needs = frozenset().union(*(p.needs for p in self.parts))

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        whys = []
        for part in self.parts:
            out = part.evaluate(msg, ctx)
            if out.matched:
                return out
            whys.append(out.why)
        return Outcome(False, "none matched: " + "; ".join(whys))

    def headers(self) -> frozenset[str]:
        return frozenset().union(*(p.headers() for p in self.parts))


@dataclass
class Not(Condition):
    part: Condition

    def __post_init__(self) -> None:
        self.needs = self.part.needs

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        out = self.part.evaluate(msg, ctx)
        return Outcome(not out.matched, f"not ({out.why})")

    def headers(self) -> frozenset[str]:
        return self.part.headers()


_COND_SCHEMA: dict[str, Any] = {"$ref": "#/$defs/condition"}


@condition("all", "every listed condition holds", {"type": "array", "items": _COND_SCHEMA})
def _all(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
    return _combinator(AllOf, value, path, check)


@condition("any", "at least one listed condition holds", {"type": "array", "items": _COND_SCHEMA})
def _any(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
    return _combinator(AnyOf, value, path, check)


def _combinator(
    kind: type[AllOf] | type[AnyOf], value: Any, path: Path, check: Checker
) -> Condition | None:
    if not isinstance(value, list) or not value:
        check.error(path, f"{check.where(path)}: expected a non-empty list of conditions")
        return None
    parts = [parse_condition(item, (*path, i), check) for i, item in enumerate(value)]
    return None if None in parts else kind(parts)  # type: ignore[arg-type]


@condition("not", "the condition does not hold", _COND_SCHEMA)
def _not(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
    part = parse_condition(value, path, check)
    return Not(part) if part is not None else None


# -- headers ----------------------------------------------------------------------------


@dataclass
class AddressCondition(Condition):
    kind: str
    tests: list[AddressTest]

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        addrs = msg.addresses(self.kind)
        for addr in addrs:
            for test in self.tests:
                try:
                    caps = _text_match(test.test, test.value(addr), ctx)
                except RegexTimeout as exc:
                    return _gave_up(msg, ctx, self.kind, exc)
                if caps is not None:
                    shown = addr.name if test.part == "name" else addr.address
                    return Outcome(True, f"{self.kind} {shown!r} {test.describe()}", caps)
        return _miss(
            ctx,
            lambda: (
                f"{self.kind} "
                + (", ".join(a.address or f"<{a.name}>" for a in addrs) or "(none)")
                + f" does not match: {_wanted(self.tests)}"
            ),
        )

    def headers(self) -> frozenset[str]:
        from mailrules.message import ADDRESS_HEADERS

        return frozenset(ADDRESS_HEADERS[self.kind])


_TEXT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string"},
        {
            "type": "object",
            "properties": {
                **{op: {"type": "string"} for op in TEXT_OPS},
                "case_sensitive": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
    ]
}
_TEXTS_SCHEMA = {"anyOf": [_TEXT_SCHEMA, {"type": "array", "items": _TEXT_SCHEMA}]}
_ADDR_ITEM = {
    "anyOf": [
        {"type": "string", "description": "exact address, glob, @domain or /regex/"},
        {
            "type": "object",
            "properties": {k: _TEXTS_SCHEMA for k in ("address", "domain", "name", "regex")},
            "additionalProperties": False,
        },
    ]
}
_ADDR_SCHEMA = {"anyOf": [_ADDR_ITEM, {"type": "array", "items": _ADDR_ITEM}]}


def _address_condition(kind: str) -> None:
    @condition(kind, f"an address in {kind} matches (addr-spec; name only if asked)", _ADDR_SCHEMA)
    def parse(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
        tests = parse_address_tests(value, path, check)
        return AddressCondition(kind, tests) if tests is not None else None


for _kind in ("from", "to", "cc", "bcc", "recipient", "sender", "reply-to"):
    _address_condition(_kind)


@dataclass
class HeaderCondition(Condition):
    name: str
    tests: list[TextTest] | None  # None: the header only has to exist

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        label = self.name if self.name.lower() != "subject" else "subject"
        if self.tests is None:
            present = msg.has_header(self.name)
            return Outcome(present, f"{label} {'exists' if present else 'is absent'}")
        values = msg.header_all(self.name)
        for value in values:
            for test in self.tests:
                try:
                    caps = _text_match(test, value, ctx)
                except RegexTimeout as exc:
                    return _gave_up(msg, ctx, label, exc)
                if caps is not None:
                    return Outcome(True, f"{label} {_q(value)} {test.describe()}", caps)
        tests = self.tests
        return _miss(
            ctx,
            lambda: (
                f"{label} "
                + (" | ".join(_q(v) for v in values) if values else "(absent)")
                + f" does not match: {_wanted(tests)}"
            ),
        )

    def headers(self) -> frozenset[str]:
        return frozenset({self.name.lower()})


@condition("subject", "the decoded Subject matches (contains by default)", _TEXTS_SCHEMA)
def _subject(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
    tests = parse_text_tests(value, path, check)
    return HeaderCondition("subject", tests) if tests is not None else None


@condition(
    "header",
    "a header (decoded) contains / is / matches / regex / exists",
    {
        "anyOf": [
            {"type": "string", "description": "the header name; add contains/is/... beside it"},
            {"type": "object", "properties": {"name": {"type": "string"}}},
        ]
    },
)
def _header(value: Any, path: Path, check: Checker, inline: dict[str, Any]) -> Condition | None:
    parent = path[:-1]
    if isinstance(value, dict):
        spec = check.mapping(value, path, ("name", *HEADER_MODIFIERS), required=("name",))
        if spec is None:
            return None
        inline, parent, value = {k: v for k, v in spec.items() if k != "name"}, path, spec["name"]
    name = check.text(value, path, "a header name")
    if name is None:
        return None
    if not re.fullmatch(r"[!-9;-~]+", name):
        check.error(path, f"{check.where(path)}: {name!r} is not a valid header name")
        return None
    ops = [k for k in inline if k in (*TEXT_OPS, "exists")]
    if len(ops) != 1:
        check.error(
            path,
            f"{check.where(path)}: say what to test, with exactly one of "
            f"contains, is, matches, regex or exists, e.g. {{header: {name}, contains: text}}",
        )
        return None
    op = ops[0]
    if op == "exists":
        flag = check.boolean(inline[op], (*parent, op))
        if flag is None:
            return None
        cond = HeaderCondition(name, None)
        return cond if flag else Not(cond)
    spec = {op: inline[op]}
    if "case_sensitive" in inline:
        spec["case_sensitive"] = inline["case_sensitive"]
    if isinstance(inline[op], list):
        tests: list[TextTest] = []
        for i, pattern in enumerate(inline[op]):
            one = parse_text_tests({**spec, op: pattern}, (*parent, op, i), check)
            if one is None:
                return None
            tests.extend(one)
        return HeaderCondition(name, tests)
    parsed = parse_text_tests(spec, parent, check)
    return HeaderCondition(name, parsed) if parsed is not None else None


@dataclass
class ListCondition(Condition):
    tests: list[TextTest]

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        list_id = msg.list_id
        for test in self.tests:
            try:
                caps = _text_match(test, list_id, ctx) if list_id else None
            except RegexTimeout as exc:
                return _gave_up(msg, ctx, "list", exc)
            if caps is not None:
                return Outcome(True, f"list {list_id!r} {test.describe()}", caps)
        return _miss(
            ctx,
            lambda: f"list {list_id or '(no List-Id)'!r} does not match: {_wanted(self.tests)}",
        )

    def headers(self) -> frozenset[str]:
        return frozenset({"list-id"})


@condition("list", "the List-Id identifier is (or matches a glob)", _TEXTS_SCHEMA)
def _list(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
    tests = parse_text_tests(value, path, check, default_op="matches")
    return ListCondition(tests) if tests is not None else None


# -- body and attachments ----------------------------------------------------------------


@dataclass
class BodyCondition(Condition):
    tests: list[TextTest]
    needs: frozenset[str] = frozenset({"body"})

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        text = msg.body_text
        for test in self.tests:
            try:
                caps = _text_match(test, text, ctx)
            except RegexTimeout as exc:
                return _gave_up(msg, ctx, "body", exc)
            if caps is not None:
                return Outcome(True, f"body {test.describe()}", caps)
        return _miss(
            ctx,
            lambda: f"body ({len(text)} characters of text) does not match: " + _wanted(self.tests),
        )


@condition("body", "the decoded text parts contain (HTML reduced to text)", _TEXTS_SCHEMA)
def _body(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
    tests = parse_text_tests(value, path, check)
    return BodyCondition(tests) if tests is not None else None


@dataclass
class AttachmentCondition(Condition):
    name: re.Pattern[str] | None = None
    ctype: re.Pattern[str] | None = None
    larger: int | None = None
    smaller: int | None = None
    needs: frozenset[str] = frozenset({"body"})

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        found = msg.attachments
        for att in found:
            if self.name and not self.name.match(att.filename):
                continue
            if self.ctype and not self.ctype.match(att.content_type):
                continue
            if self.larger is not None and att.size <= self.larger:
                continue
            if self.smaller is not None and att.size >= self.smaller:
                continue
            return Outcome(
                True, f"attachment {att.filename!r} ({att.content_type}, {att.size} bytes)"
            )
        return _miss(
            ctx,
            lambda: (
                "no matching attachment among: "
                + (
                    ", ".join(f"{a.filename or '(unnamed)'} ({a.content_type})" for a in found)
                    or "(none)"
                )
            ),
        )


@condition(
    "attachment",
    "has an attachment (any, or by name glob, MIME type glob, size)",
    {
        "anyOf": [
            {"type": "boolean"},
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "type": {"type": "string"},
                    "larger_than": {"type": ["string", "integer"]},
                    "smaller_than": {"type": ["string", "integer"]},
                },
                "additionalProperties": False,
            },
        ]
    },
)
def _attachment(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
    if isinstance(value, bool):
        return AttachmentCondition() if value else Not(AttachmentCondition())
    if isinstance(value, str):
        value = {"name": value}
    spec = check.mapping(value, path, ("name", "type", "larger_than", "smaller_than"))
    if spec is None:
        return None
    cond = AttachmentCondition()
    for key, attr in (("name", "name"), ("type", "ctype")):
        if key in spec:
            text = check.text(spec[key], (*path, key), "a glob")
            if text is None:
                return None
            if problem := glob_problem(text):
                check.error(
                    (*path, key), f"{check.where((*path, key))}: bad glob {text!r}: {problem}"
                )
                return None
            setattr(cond, attr, re.compile(fnmatch.translate(text), re.IGNORECASE))
    for key, attr in (("larger_than", "larger"), ("smaller_than", "smaller")):
        if key in spec:
            size = check.size(spec[key], (*path, key))
            if size is None:
                return None
            setattr(cond, attr, size)
    return cond


# -- size, age, flags ---------------------------------------------------------------------


@dataclass
class SizeCondition(Condition):
    limit: int
    larger: bool
    needs: frozenset[str] = frozenset({"size"})

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        size = msg.size if msg.size is not None else len(msg.raw())
        hit = size > self.limit if self.larger else size < self.limit
        rel = ">" if self.larger else "<"
        return Outcome(hit, f"size {size} {'' if hit else 'not '}{rel} {self.limit} bytes")


def _size_condition(name: str, larger: bool) -> None:
    @condition(
        name,
        f"the message is {'larger' if larger else 'smaller'} than a size (100KiB)",
        {"type": ["string", "integer"]},
    )
    def parse(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
        limit = check.size(value, path)
        return SizeCondition(limit, larger) if limit is not None else None


_size_condition("larger_than", True)
_size_condition("smaller_than", False)


@dataclass
class AgeCondition(Condition):
    seconds: float
    older: bool
    needs: frozenset[str] = frozenset({"date"})

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        when = msg.when
        age = (ctx.now - when).total_seconds()
        hit = age > self.seconds if self.older else age < self.seconds
        word = "older" if self.older else "newer"
        return Outcome(
            hit,
            f"arrived {when.isoformat(timespec='minutes')} "
            f"({_human(age)} ago), {'' if hit else 'not '}{word} than {_human(self.seconds)}",
        )


def _human(seconds: float) -> str:
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _age_condition(name: str, older: bool) -> None:
    @condition(
        name,
        f"the message arrived {'more' if older else 'less'} than a duration ago "
        "(30m, 12h, 7d, 2w, 6mo, 1y)",
        {"type": "string"},
    )
    def parse(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
        seconds = check.duration(value, path)
        return AgeCondition(seconds, older) if seconds is not None else None


_age_condition("older_than", True)
_age_condition("newer_than", False)


@dataclass
class FlagCondition(Condition):
    wanted: frozenset[str]
    keywords: bool
    needs: frozenset[str] = frozenset({"flags"})

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        have = msg.keywords if self.keywords else msg.flags
        hit = self.wanted <= have
        kind = "keywords" if self.keywords else "flags"
        shown = ", ".join(sorted(have)) or "none"
        return Outcome(
            hit,
            f"{kind} [{shown}] {'include' if hit else 'lack'} "
            f"{', '.join(sorted(self.wanted - have) or sorted(self.wanted))}",
        )


def parse_flag_names(value: Any, path: Path, check: Checker) -> frozenset[str] | None:
    names = check.text_list(value, path, "a flag name")
    if names is None:
        return None
    out = set()
    for i, raw in enumerate(names):
        name = FLAG_ALIASES.get(raw.lower().lstrip("\\"), raw.lower().lstrip("\\"))
        if name not in STANDARD_FLAGS:
            here = (*path, i) if isinstance(value, list) else path
            check.error(
                here,
                f"{check.where(here)}: unknown flag {raw!r}; "
                f"{did_you_mean(name, STANDARD_FLAGS)} (use keywords for other labels)",
            )
            return None
        out.add(name)
    return frozenset(out)


def parse_keyword_names(value: Any, path: Path, check: Checker) -> frozenset[str] | None:
    names = check.text_list(value, path, "a keyword")
    if names is None:
        return None
    for i, name in enumerate(names):
        if not _KEYWORD.match(name) or name.startswith("\\"):
            here = (*path, i) if isinstance(value, list) else path
            check.error(
                here,
                f"{check.where(here)}: {name!r} is not a valid keyword "
                "(no spaces, brackets, quotes or leading backslash)",
            )
            return None
    return frozenset(names)


_NAMES_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}


@condition(
    "flags", "every listed flag is set (seen, answered, flagged, deleted, draft)", _NAMES_SCHEMA
)
def _flags(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
    names = parse_flag_names(value, path, check)
    return FlagCondition(names, keywords=False) if names is not None else None


@condition("keywords", "every listed keyword ($Label, Work, ...) is set", _NAMES_SCHEMA)
def _keywords(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
    names = parse_keyword_names(value, path, check)
    return FlagCondition(names, keywords=True) if names is not None else None


# -- external command ---------------------------------------------------------------------


@dataclass
class CommandCondition(Condition):
    argv: list[str]
    timeout: float
    needs: frozenset[str] = frozenset({"raw"})

    def evaluate(self, msg: MessageView, ctx: EvalContext) -> Outcome:
        env = {
            "MAILRULES_ACCOUNT": ctx.account,
            "MAILRULES_FOLDER": ctx.folder,
            "MAILRULES_RULE": ctx.rule,
        }
        try:
            result = run_command(self.argv, msg.raw(), self.timeout, env)
        except CommandFailed as exc:
            raise RuleError(f"condition command {exc}") from None
        hit = result.returncode == 0
        return Outcome(hit, f"command {self.argv[0]!r} exited {result.returncode}")


@condition(
    "command",
    "a command (argv, message on stdin) exits 0",
    {
        "anyOf": [
            {"type": "array", "items": {"type": "string"}},
            {
                "type": "object",
                "properties": {
                    "argv": {"type": "array", "items": {"type": "string"}},
                    "timeout": {"type": "string"},
                },
                "required": ["argv"],
                "additionalProperties": False,
            },
        ]
    },
)
def _command(value: Any, path: Path, check: Checker, _: dict[str, Any]) -> Condition | None:
    parsed = parse_argv(value, path, check, default_timeout=30.0)
    return CommandCondition(*parsed) if parsed is not None else None


def parse_argv(
    value: Any, path: Path, check: Checker, default_timeout: float
) -> tuple[list[str], float] | None:
    """argv as a list, or {argv: [...], timeout: 30s}. A string is refused: no shell."""
    timeout = default_timeout
    argv_path = path
    if isinstance(value, dict):
        spec = check.mapping(value, path, ("argv", "timeout"), required=("argv",))
        if spec is None:
            return None
        if "timeout" in spec:
            parsed = check.duration(spec["timeout"], (*path, "timeout"))
            if parsed is None:
                return None
            timeout = parsed
        value, argv_path = spec["argv"], (*path, "argv")
    if isinstance(value, str):
        check.error(
            argv_path,
            f"{check.where(argv_path)}: commands are run without a shell: give the argv as a "
            f"list, e.g. {value.split()!r}",
        )
        return None
    if not isinstance(value, list) or not value:
        check.error(argv_path, f"{check.where(argv_path)}: expected a non-empty argv list")
        return None
    argv = [
        check.text(a, (*argv_path, i), "an argument", empty_ok=True) for i, a in enumerate(value)
    ]
    if None in argv:
        return None
    return argv, timeout  # type: ignore[return-value]

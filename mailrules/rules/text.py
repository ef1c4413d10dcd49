"""Text and address tests: contains, is, matches (glob) and regex, case-insensitive by default.

A test is written as plain text (the condition's default operator) or as a mapping
with one operator::

    subject: "[SPAM]"                       # contains
    subject: {regex: '^Invoice (\\d+)'}      # regex, with captures for templates
    from: "*@client.example"                # glob on the addr-spec
    from: "@client.example"                 # the domain
    from: {name: "Alice *"}                  # the display name, only when asked

A regex is bounded: one match may take at most REGEX_TIMEOUT seconds, and all the regex
tests on one message together REGEX_BUDGET seconds. A match that runs out of time
raises RegexTimeout, which conditions turn into "no match" with a logged reason, so a
pattern such as '(a+)+$' cannot hang a run on a crafted Subject. ``check`` warns about
such patterns (a repeated group that itself repeats: nested quantifiers).
"""

from __future__ import annotations

import fnmatch
import functools
import re
import re._constants as sre_constants  # the parser's own names for its nodes
import re._parser as sre_parse  # only to warn about nested quantifiers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import regex

from mailrules.config.yaml_loader import Path
from mailrules.message import Address
from mailrules.rules.checker import Checker, describe

Captures = dict[str, str]
TEXT_OPS = ("contains", "is", "matches", "regex")
_GLOB_CHARS = frozenset("*?[")
REGEX_TIMEOUT = 0.25  # seconds one regex match may take
REGEX_BUDGET = 1.0  # seconds all regex matches on one message may take together


class RegexTimeout(Exception):
    """A regex match took too long; its test counts as no match."""

    def __init__(self, pattern: str, length: int, seconds: float) -> None:
        super().__init__(
            f"regex /{pattern}/ gave up after {seconds:.2f}s on {length} characters; "
            "treated as no match"
        )


@dataclass(frozen=True)
class TextTest:
    """One comparison of a text value against a pattern."""

    op: str
    pattern: str  # as written, for messages
    case_sensitive: bool
    compiled: re.Pattern[str] | None  # for a regex: as the stdlib reads it (validated)
    folded: str = ""  # the pattern as compared (casefolded unless case-sensitive)

    def match(self, value: str, timeout: float = REGEX_TIMEOUT) -> Captures | None:
        """Captures (possibly empty) when the value matches, else None. A regex raises
        RegexTimeout after ``timeout`` seconds."""
        if self.compiled is not None:
            if self.op == "regex":
                try:
                    bounded = _bounded(self.pattern, self.compiled.flags & re.IGNORECASE)
                    found = bounded.search(value, timeout=max(timeout, 0.001))
                except TimeoutError:
                    raise RegexTimeout(self.pattern, len(value), timeout) from None
            else:
                found = self.compiled.match(value)
            if not found:
                return None
            caps = {str(i): g or "" for i, g in enumerate(found.groups(), start=1)}
            caps.update({k: v or "" for k, v in found.groupdict().items()})
            return caps
        a, b = (value, self.folded) if self.case_sensitive else (value.casefold(), self.folded)
        hit = (b in a) if self.op == "contains" else (a == b)
        return {} if hit else None

    def describe(self) -> str:
        verb = {"contains": "contains", "is": "is", "matches": "matches", "regex": "matches /"}
        closing = "/" if self.op == "regex" else ""
        quote = "" if self.op == "regex" else "'"
        return f"{verb[self.op]} {quote}{self.pattern}{quote}{closing}"


@functools.cache
def _bounded(pattern: str, ignore_case: int) -> regex.Pattern[str]:
    """The pattern compiled by the regex module, whose matches take a timeout. Imported
    when first needed: it costs 30-70 ms at start-up."""
    import regex

    return regex.compile(pattern, regex.IGNORECASE if ignore_case else 0)


def glob_problem(pattern: str) -> str | None:
    """Why a glob is broken (an unclosed or empty [...] set, a reversed range), or None."""
    i = 0
    while i < len(pattern):
        if pattern[i] != "[":
            i += 1
            continue
        j = i + 1
        if j < len(pattern) and pattern[j] in "!^":
            j += 1
        if j < len(pattern) and pattern[j] == "]":
            j += 1
        end = pattern.find("]", j)
        if end < 0:
            return "unclosed '[' (write [[] for a literal bracket)"
        body = pattern[i + 1 : end].lstrip("!^")
        for a, b in re.findall(r"(.)-(.)", body):
            if a > b:
                return f"reversed range {a}-{b} matches nothing"
        i = end + 1
    return None


def make_test(op: str, pattern: str, case_sensitive: bool = False) -> TextTest:
    """Build a test; raise re.error for a bad regex or glob."""
    if op == "matches" and (problem := glob_problem(pattern)):
        raise re.error(problem)
    flags = 0 if case_sensitive else re.IGNORECASE
    if op == "regex":
        compiled = re.compile(pattern, flags)  # the stdlib's syntax and its error messages
        try:
            _bounded(pattern, flags)
        except Exception as exc:  # regex.error: a pattern only the stdlib accepts
            raise re.error(str(exc)) from None
        return TextTest(op, pattern, case_sensitive, compiled)
    if op == "matches":
        return TextTest(op, pattern, case_sensitive, re.compile(fnmatch.translate(pattern), flags))
    folded = pattern if case_sensitive else pattern.casefold()
    return TextTest(op, pattern, case_sensitive, None, folded)


def nested_quantifier(pattern: str) -> bool:
    """Whether a regex repeats a group that itself repeats ('(a+)+', '(x*y?)*'): the usual
    cause of catastrophic backtracking."""
    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return False
    return _nested(parsed, inside_repeat=False)


def _nested(items: Any, inside_repeat: bool) -> bool:
    for op, arg in items:
        subs: list[Any] = []
        repeats = False
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            if inside_repeat and arg[1] > arg[0]:  # a variable count inside a repetition
                return True
            repeats = arg[1] > 1
            subs = [arg[2]]
        elif op == sre_constants.SUBPATTERN:
            subs = [arg[-1]]
        elif op == sre_constants.BRANCH:
            subs = list(arg[1])
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            subs = [arg[1]]
        elif op in (sre_constants.ATOMIC_GROUP, sre_constants.POSSESSIVE_REPEAT):
            continue  # they never backtrack into what they matched
        if any(_nested(sub, inside_repeat or repeats) for sub in subs):
            return True
    return False


def _compile(check: Checker, path: Path, op: str, pattern: str, cs: bool) -> TextTest | None:
    try:
        test = make_test(op, pattern, cs)
    except re.error as exc:
        kind = "regular expression" if op == "regex" else "glob"
        check.error(path, f"{check.where(path)}: bad {kind} {pattern!r}: {exc}")
        return None
    if op == "regex" and nested_quantifier(pattern):
        check.warn(
            path,
            f"{check.where(path)}: regex {pattern!r} repeats a group that itself repeats "
            "(nested quantifiers): "
            "crafted text can make it backtrack for a very long time. Each match is cut "
            f"off after {REGEX_TIMEOUT}s and then counts as no match; rewrite it without "
            "the inner quantifier if you can, e.g. '(a+)+' as 'a+'",
        )
    return test


def parse_text_tests(
    value: Any, path: Path, check: Checker, default_op: str = "contains"
) -> list[TextTest] | None:
    """Text, a mapping {op: pattern, case_sensitive: bool}, or a list of those (any)."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        check.error(path, f"{check.where(path)}: an empty list matches nothing; remove it")
        return None
    out: list[TextTest] = []
    for i, item in enumerate(items):
        here = (*path, i) if isinstance(value, list) else path
        if isinstance(item, str):
            test = _compile(check, here, default_op, item, False)
        elif isinstance(item, dict):
            spec = check.mapping(item, here, (*TEXT_OPS, "case_sensitive"))
            if spec is None:
                return None
            ops = [k for k in spec if k in TEXT_OPS]
            if len(ops) != 1:
                check.error(here, f"{check.where(here)}: give exactly one of {', '.join(TEXT_OPS)}")
                return None
            cs = check.boolean(spec.get("case_sensitive", False), (*here, "case_sensitive"))
            pattern = check.text(spec[ops[0]], (*here, ops[0]), "a pattern")
            if pattern is None or cs is None:
                return None
            test = _compile(check, (*here, ops[0]), ops[0], pattern, cs)
        else:
            check.error(
                here, f"{check.where(here)}: expected text or a mapping, got {describe(item)}"
            )
            return None
        if test is None:
            return None
        out.append(test)
    return out


@dataclass(frozen=True)
class AddressTest:
    """A test on addresses: on the addr-spec by default, on the display name if asked."""

    part: str  # "address", "domain" or "name"
    test: TextTest

    def value(self, addr: Address) -> str:
        return {"address": addr.address, "domain": addr.domain, "name": addr.name}[self.part]

    def match(self, addr: Address, timeout: float = REGEX_TIMEOUT) -> Captures | None:
        return self.test.match(self.value(addr), timeout)

    def describe(self) -> str:
        return ("" if self.part == "address" else f"{self.part} ") + self.test.describe()


def _address_pattern(pattern: str) -> tuple[str, str, str]:
    """Classify a plain address pattern: (part, op, pattern)."""
    if pattern.startswith("@"):
        return "domain", "is", pattern[1:]
    if len(pattern) > 2 and pattern.startswith("/") and pattern.endswith("/"):
        return "address", "regex", pattern[1:-1]
    if _GLOB_CHARS & set(pattern):
        return "address", "matches", pattern
    return "address", "is", pattern


def parse_address_tests(value: Any, path: Path, check: Checker) -> list[AddressTest] | None:
    """Plain patterns (exact, glob, @domain, /regex/), or mappings naming the part and op."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        check.error(path, f"{check.where(path)}: an empty list matches nothing; remove it")
        return None
    out: list[AddressTest] = []
    for i, item in enumerate(items):
        here = (*path, i) if isinstance(value, list) else path
        if isinstance(item, str):
            if not item.strip():
                check.error(here, f"{check.where(here)}: an address pattern must not be empty")
                return None
            part, op, pattern = _address_pattern(item.strip())
            test = _compile(check, here, op, pattern, False)
            if test is None:
                return None
            out.append(AddressTest(part, test))
            continue
        spec = check.mapping(item, here, ("address", "domain", "name", "regex"))
        if spec is None:
            return None
        if len(spec) != 1:
            check.error(
                here, f"{check.where(here)}: give exactly one of address, domain, name, regex"
            )
            return None
        ((key, pattern),) = spec.items()
        if key == "regex":
            key, pattern = "address", {"regex": pattern}
        tests = parse_text_tests(pattern, (*here, key), check, default_op="matches")
        if tests is None:
            return None
        out.extend(AddressTest(key, t) for t in tests)
    return out

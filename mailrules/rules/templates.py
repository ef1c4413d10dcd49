"""Safe templates for action arguments: ``Archive/{date.year}``, ``{from.address}``.

A template is literal text with ``{field}`` references to a fixed set of message
fields and to the regex captures of the rule that matched (``{match.1}``,
``{match.name}``). Nothing is ever evaluated: an unknown field is a config error, and
``{{`` / ``}}`` stand for literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mailrules.message import MessageView

_REF = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _addr_fields(kind: str) -> dict[str, Callable[[MessageView], str]]:
    def first(msg: MessageView) -> object:
        found = msg.addresses(kind)
        return found[0] if found else None

    return {
        f"{kind}.address": lambda m: getattr(first(m), "address", ""),
        f"{kind}.name": lambda m: getattr(first(m), "name", ""),
        f"{kind}.local": lambda m: getattr(first(m), "local", ""),
        f"{kind}.domain": lambda m: getattr(first(m), "domain", ""),
    }


FIELDS: dict[str, Callable[[MessageView], str]] = {
    **_addr_fields("from"),
    **_addr_fields("to"),
    **_addr_fields("sender"),
    "subject": lambda m: m.subject,
    "message_id": lambda m: m.message_id,
    "list.id": lambda m: m.list_id,
    "date.year": lambda m: f"{m.when.year:04d}",
    "date.month": lambda m: f"{m.when.month:02d}",
    "date.day": lambda m: f"{m.when.day:02d}",
    "date.iso": lambda m: m.when.date().isoformat(),
    "size": lambda m: str(m.size or 0),
}
CONTEXT_FIELDS = ("account", "folder", "rule")


class TemplateError(ValueError):
    """A template refers to a field that does not exist, or has a stray brace."""


@dataclass(frozen=True)
class Template:
    text: str
    parts: tuple[tuple[bool, str], ...]  # (is_field, literal-or-field-name)

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[tuple[bool, str]] = []
        pos = 0
        for found in _REF.finditer(text):
            if found.start() > pos:
                parts.append((False, text[pos : found.start()]))
            token = found.group(0)
            if token in ("{{", "}}"):
                parts.append((False, token[0]))
            elif token in ("{", "}"):
                raise TemplateError(
                    f"stray {token!r} at position {found.start() + 1}: write {token * 2} "
                    "for a literal brace"
                )
            else:
                name = found.group(1).strip()
                if not _known(name):
                    known = ", ".join([*FIELDS, *CONTEXT_FIELDS, "match.N", "match.NAME"])
                    raise TemplateError(f"unknown field {{{name}}}; known: {known}")
                parts.append((True, name))
            pos = found.end()
        if pos < len(text):
            parts.append((False, text[pos:]))
        return cls(text, tuple(parts))

    @property
    def is_static(self) -> bool:
        return not any(is_field for is_field, _ in self.parts)

    def render(
        self,
        msg: MessageView,
        context: dict[str, str],
        captures: dict[str, str],
        clean: Callable[[str], str] = lambda s: s,
    ) -> str:
        """Fill in the fields; each value passes through ``clean`` (literals do not)."""
        out = []
        for is_field, part in self.parts:
            if not is_field:
                out.append(part)
                continue
            if part.startswith("match."):
                value = captures.get(part[6:], "")
            elif part in context:
                value = context[part]
            else:
                value = FIELDS[part](msg)
            out.append(clean(value))
        return "".join(out)


def _known(name: str) -> bool:
    if name in FIELDS or name in CONTEXT_FIELDS:
        return True
    return name.startswith("match.") and bool(re.fullmatch(r"\w+", name[6:]))

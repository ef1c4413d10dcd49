"""YAML loading that keeps a line:col for every node and refuses YAML's traps.

PyYAML implements YAML 1.1, where ``no`` is false, ``1:30`` is 90 and ``010`` is 8,
and where a duplicate key silently replaces the first. Here booleans are only
``true``/``false``, and the YAML 1.1 forms are reported as problems (quote them), so a
folder called ``no`` never turns into ``False`` behind the user's back. Duplicate keys
are problems too. Every value's position is kept in a map from its path
(``("rules", 2, "then", 0)``) to its marks, so later stages can point at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
import yaml.reader
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

Path = tuple[str | int, ...]

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$")
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$")
_YAML11_BOOL = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")
_YAML11_SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_YAML11_OCTAL = re.compile(r"^[-+]?0[0-9_]+$")
MAX_DEPTH = 64  # mappings and lists inside each other; a real config needs about ten
MAX_VALUES = 100_000  # values after aliases are expanded; a real config has hundreds
# Settings whose values are secrets (IMAP/POP3 password; a notifier's url, secret,
# auth_token, password; every header of a webhook): no problem ever quotes their values.
SECRET_KEYS = frozenset({"password", "secret", "auth_token", "url"})
SECRET_PARENTS = frozenset({"headers"})
MAX_DIGITS = 30  # digits of an integer; no setting needs more


class _Resolver(BaseResolver):
    """Only the unsurprising implicit types: null, true/false, decimal ints, floats."""


_Resolver.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])
_Resolver.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])


class _TooDeep(yaml.MarkedYAMLError):
    """Nesting beyond MAX_DEPTH: PyYAML's composer recurses once per level."""


class _Loader(Reader, Scanner, Parser, Composer, _Resolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _TooDeep(
                    problem=f"values are nested more than {MAX_DEPTH} levels deep",
                    problem_mark=self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _TooBig(Exception):
    """More than MAX_VALUES values once aliases are expanded (an "alias bomb")."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node


@dataclass(frozen=True)
class Mark:
    """A 1-based position in a file."""

    line: int
    col: int


@dataclass
class Document:
    """Plain Python data from a YAML file, plus where each value came from."""

    path: str
    data: Any
    value_marks: dict[Path, Mark] = field(default_factory=dict)
    key_marks: dict[Path, Mark] = field(default_factory=dict)
    problems: list[tuple[Mark, str]] = field(default_factory=list)
    secret_paths: set[Path] = field(default_factory=set)
    built: int = 0  # values made so far, aliases counted each time they are used

    def mark(self, path: Path, *, key: bool = False) -> Mark:
        """The mark of the value at ``path`` (or of its key), else of its nearest parent."""
        path = tuple(path)
        while path:
            if key and path in self.key_marks:
                return self.key_marks[path]
            if path in self.value_marks:
                return self.value_marks[path]
            path = path[:-1]
        return self.value_marks.get((), Mark(1, 1))


def _mark(node: Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _scalar(node: ScalarNode, doc: Document, *, secret: bool = False) -> Any:
    value = node.value
    tag = node.tag
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return value.lower() == "true"
    if tag == "tag:yaml.org,2002:int":
        digits = value.replace("_", "").lstrip("+-")
        if len(digits) > MAX_DIGITS:
            doc.problems.append(
                (_mark(node), f"the number {value[:12]}... is too large ({len(digits)} digits)")
            )
            return None
        return int(value.replace("_", ""), 0 if value.startswith("0x") else 10)
    if tag == "tag:yaml.org,2002:float":
        return float(value.replace("_", ""))
    if node.style is None:  # plain (unquoted) scalars only
        hint = None
        if secret and (
            _YAML11_BOOL.match(value)
            or _YAML11_SEXAGESIMAL.match(value)
            or _YAML11_OCTAL.match(value)
        ):
            hint = "YAML 1.1 reads this secret as a number or a boolean: quote it"
        elif _YAML11_BOOL.match(value):
            hint = (
                f"'{value}' is a boolean in YAML 1.1 and ambiguous here: "
                f'write true or false, or quote it ("{value}") if you mean the text'
            )
        elif _YAML11_SEXAGESIMAL.match(value):
            hint = (
                f"'{value}' is read as a base-60 number by YAML 1.1: quote it (\"{value}\"), "
                "or for a duration write it with a unit such as 90s"
            )
        elif _YAML11_OCTAL.match(value):
            hint = (
                f"'{value}' is an octal number in YAML 1.1: quote it (\"{value}\") "
                "or drop the leading zero"
            )
        if hint:
            doc.problems.append((_mark(node), hint))
    if tag not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:merge") and not tag.startswith(
        "tag:yaml.org,2002:"
    ):
        doc.problems.append((_mark(node), f"YAML tags such as '{tag}' are not supported"))
    return value


def _is_secret(path: Path) -> bool:
    return bool(path) and (
        path[-1] in SECRET_KEYS or (len(path) > 1 and path[-2] in SECRET_PARENTS)
    )


def _build(node: Node, path: Path, doc: Document) -> Any:
    doc.built += 1
    if doc.built > MAX_VALUES:
        raise _TooBig(node)
    doc.value_marks[path] = _mark(node)
    secret = _is_secret(path)
    if secret:
        doc.secret_paths.add(path)
    if isinstance(node, ScalarNode):
        return _scalar(node, doc, secret=secret)
    if isinstance(node, SequenceNode):
        return [_build(item, (*path, i), doc) for i, item in enumerate(node.value)]
    if isinstance(node, MappingNode):
        out: dict[Any, Any] = {}
        first_seen: dict[Any, Mark] = {}
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    value = _build(source, (*path, "<<"), doc)
                    if isinstance(value, dict):
                        for k, v in value.items():
                            merged.setdefault(k, v)
                    else:
                        doc.problems.append((_mark(source), "'<<' merges only mappings"))
                continue
            if not isinstance(key_node, ScalarNode):
                doc.problems.append((_mark(key_node), "mapping keys must be plain text"))
                continue
            key = _scalar(key_node, doc)
            if not isinstance(key, str):
                key = str(key) if key is not None else "null"
            if key in first_seen:
                first = first_seen[key]
                doc.problems.append(
                    (
                        _mark(key_node),
                        f"duplicate key '{key}' (first at line {first.line}); "
                        "YAML would silently keep only the last one: remove or merge them",
                    )
                )
                continue
            first_seen[key] = _mark(key_node)
            doc.key_marks[(*path, key)] = _mark(key_node)
            out[key] = _build(value_node, (*path, key), doc)
        for k, v in merged.items():
            out.setdefault(k, v)
        return out
    raise TypeError(f"unexpected YAML node {node!r}")  # pragma: no cover - PyYAML has 3 kinds


def _position(text: str, offset: int) -> Mark:
    before = text[:offset]
    return Mark(before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1)


def load_yaml(text: str, path: str) -> Document:
    """Parse YAML text into a Document. Syntax errors become problems, never exceptions."""
    doc = Document(path=path, data=None)
    loader = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        where = _position(text, exc.position)
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        doc.problems.append((where, f"the file contains the control character {char}, which "
                             "YAML does not allow: remove it"))  # fmt: skip
        return doc
    except _TooDeep as exc:
        mark = exc.problem_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark else Mark(1, 1)
        doc.problems.append((where, f"{exc.problem}: flatten the config"))
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark else Mark(1, 1)
        problem = " ".join((exc.problem or "invalid YAML").split())
        doc.problems.append((where, f"YAML syntax error: {problem}"))
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append((Mark(1, 1), f"YAML error: {' '.join(str(exc).split())}"))
        return doc
    finally:
        if loader is not None:
            loader.dispose()
    if root is None:
        doc.data = {}
        doc.value_marks[()] = Mark(1, 1)
        return doc
    try:
        doc.data = _build(root, (), doc)
    except _TooBig as exc:
        doc.data = None
        doc.value_marks.clear()
        doc.key_marks.clear()
        doc.problems.append(
            (
                _mark(exc.node),
                f"the config expands to more than {MAX_VALUES:,} values, here through YAML "
                "aliases (*name) that repeat other aliases: write the values out, or use "
                "fewer aliases",
            )
        )
    return doc

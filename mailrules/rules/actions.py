"""The action registry: name -> parser, JSON schema, and what the source must support.

A rule's ``then`` is a list of actions, run in order. Each item is a one-key mapping
(``{move: Clients}``) or, for actions without an argument, just the name (``stop``).

``move`` and ``delete`` take the message out of the folder: they end the rule's work on
it (later rules do not see it), and after them a rule may only ``run`` or ``stop``.
Actions that need the source to support something (moving, flags) name it in
``capability``; config validation refuses a rule whose account cannot do it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailrules.config.expand import expand_path
from mailrules.config.yaml_loader import Path
from mailrules.rules.checker import Checker, describe, did_you_mean
from mailrules.rules.conditions import parse_argv, parse_flag_names, parse_keyword_names
from mailrules.rules.templates import Template, TemplateError


@dataclass(frozen=True)
class Action:
    """A parsed action. ``render`` turns it into the Step a plan holds."""

    name: str
    capability: str | None = None
    relocates: bool = False  # the message leaves the folder
    needs_location: bool = True  # it acts on the message where it is in the mailbox
    reads_message: bool = False  # it reads the message's headers or body when it runs


@dataclass(frozen=True)
class FolderAction(Action):
    folder: Template | None = None


@dataclass(frozen=True)
class DeleteAction(Action):
    expunge: bool = False


@dataclass(frozen=True)
class FlagAction(Action):
    add: frozenset[str] = frozenset()
    remove: frozenset[str] = frozenset()
    keywords: bool = False


@dataclass(frozen=True)
class DeliverAction(Action):
    path: Template | None = None
    folder: Template | None = None
    reads_message: bool = True

    @staticmethod
    def clean_target_folder(value: str) -> str:
        """Template values in the folder, cleaned for the target (a Maildir++ tree)."""
        from mailrules.sources.maildir import clean_component

        return clean_component(value, "maildir++")


@dataclass(frozen=True)
class RunAction(Action):
    argv: tuple[Template, ...] = ()
    timeout: float = 60.0
    reads_message: bool = True


@dataclass(frozen=True)
class NotifyAction(Action):
    """Queue a notification through a named notifier (see ``mailrules.notify``).

    ``index`` is the action's place in the rule's ``then``: with the message and the
    rule it makes the outbox key, so a re-run never queues it twice. ``channel`` and
    ``limit_key`` are filled in when the config binds the action to its notifier.
    """

    notifier: str = ""
    text: Template | None = None
    title: Template | None = None
    snippet: int = 0
    limit: tuple[int, float] | None = None  # (count, seconds)
    index: int = 0
    at: Path = ()
    channel: str = ""
    limit_key: str = ""
    reads_message: bool = True


@dataclass(frozen=True)
class ActionSpec:
    name: str
    summary: str
    schema: dict[str, Any]
    parse: Callable[[Any, Path, Checker], Action | None]
    bare: bool = False  # may be written as just the name


ACTIONS: dict[str, ActionSpec] = {}


def action(
    name: str, summary: str, schema: dict[str, Any], *, bare: bool = False
) -> Callable[[Callable[..., Action | None]], Callable[..., Action | None]]:
    def register(fn: Callable[..., Action | None]) -> Callable[..., Action | None]:
        ACTIONS[name] = ActionSpec(name, summary, schema, fn, bare)
        return fn

    return register


def parse_template(value: Any, path: Path, check: Checker, what: str) -> Template | None:
    text = check.text(value, path, what)
    if text is None:
        return None
    try:
        return Template.parse(text)
    except TemplateError as exc:
        check.error(path, f"{check.where(path)}: {exc}")
        return None


def parse_actions(value: Any, path: Path, check: Checker) -> list[Action] | None:
    """Parse a rule's ``then``: a list of actions, or a single one."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        check.error(path, f"{check.where(path)}: a rule needs at least one action")
        return None
    out: list[Action | None] = []
    for i, item in enumerate(items):
        here = (*path, i) if isinstance(value, list) else path
        out.append(_parse_one(item, here, check))
    if None in out:
        return None
    actions: list[Action] = out  # type: ignore[assignment]
    relocated_by = None
    for i, act in enumerate(actions):
        here = (*path, i) if isinstance(value, list) else path
        if relocated_by and act.needs_location:
            check.error(
                here,
                f"{check.where(here)}: '{act.name}' comes after '{relocated_by}', when the "
                f"message has already left the folder; put '{relocated_by}' last",
            )
            return None
        if act.relocates:
            relocated_by = act.name
    return actions


def _parse_one(item: Any, path: Path, check: Checker) -> Action | None:
    if isinstance(item, str):
        spec = ACTIONS.get(item)
        if spec is None:
            check.error(
                path, f"{check.where(path)}: unknown action '{item}'; {did_you_mean(item, ACTIONS)}"
            )
            return None
        if not spec.bare:
            check.error(path, f"{check.where(path)}: '{item}' needs an argument: {{{item}: ...}}")
            return None
        return spec.parse(None, path, check)
    if not isinstance(item, dict) or len(item) != 1:
        shown = f"keys {', '.join(item)}" if isinstance(item, dict) else describe(item)
        check.error(
            path,
            f"{check.where(path)}: each action is one mapping such as {{move: Archive}}, "
            f"or a name such as stop; got {shown}",
        )
        return None
    ((name, arg),) = item.items()
    spec = ACTIONS.get(name)
    if spec is None:
        check.error(
            (*path, name),
            f"{check.where(path)}: unknown action '{name}'; {did_you_mean(name, ACTIONS)}",
            key=True,
        )
        return None
    return spec.parse(arg, (*path, name), check)


_STR = {"type": "string"}


@action("move", "move the message to a folder (created when missing)", _STR)
def _move(value: Any, path: Path, check: Checker) -> Action | None:
    folder = parse_template(value, path, check, "a folder name")
    return FolderAction("move", "move", relocates=True, folder=folder) if folder else None


@action("copy", "copy the message to a folder (created when missing)", _STR)
def _copy(value: Any, path: Path, check: Checker) -> Action | None:
    folder = parse_template(value, path, check, "a folder name")
    return FolderAction("copy", "copy", folder=folder) if folder else None


@action(
    "delete",
    "move the message to the account's Trash; with expunge: true, remove it for good",
    {
        "anyOf": [
            {"type": "null"},
            {"type": "boolean"},
            {
                "type": "object",
                "properties": {"expunge": {"type": "boolean"}},
                "additionalProperties": False,
            },
        ]
    },
    bare=True,
)
def _delete(value: Any, path: Path, check: Checker) -> Action | None:
    expunge: bool | None = False
    if isinstance(value, dict):
        spec = check.mapping(value, path, ("expunge",))
        if spec is None:
            return None
        expunge = check.boolean(spec.get("expunge", False), (*path, "expunge"))
    elif value not in (None, True):
        check.error(path, f"{check.where(path)}: write 'delete' or {{delete: {{expunge: true}}}}")
        return None
    if expunge is None:
        return None
    return DeleteAction("delete", "delete", relocates=True, expunge=expunge)


_NAMES = {"anyOf": [_STR, {"type": "array", "items": _STR}]}


def _flag_action(name: str, add: bool, summary: str) -> None:
    @action(name, summary, _NAMES)
    def parse(value: Any, path: Path, check: Checker) -> Action | None:
        flags = parse_flag_names(value, path, check)
        if flags is None:
            return None
        return FlagAction(
            name, "flags", add=flags if add else frozenset(), remove=frozenset() if add else flags
        )


_flag_action("flag", True, "set flags (seen, answered, flagged, deleted, draft)")
_flag_action("unflag", False, "clear flags")


def _keyword_action(name: str, add: bool, summary: str) -> None:
    @action(name, summary, _NAMES)
    def parse(value: Any, path: Path, check: Checker) -> Action | None:
        words = parse_keyword_names(value, path, check)
        if words is None:
            return None
        return FlagAction(
            name,
            "keywords",
            add=words if add else frozenset(),
            remove=frozenset() if add else words,
            keywords=True,
        )


_keyword_action("keyword", True, "set keywords (labels such as $Important or Work)")
_keyword_action("unkeyword", False, "clear keywords")


def _read_action(name: str, seen: bool) -> None:
    @action(
        name, f"mark the message as {'read' if seen else 'unread'}", {"type": "null"}, bare=True
    )
    def parse(value: Any, path: Path, check: Checker) -> Action | None:
        if value is not None:
            check.error(path, f"{check.where(path)}: '{name}' takes no argument")
            return None
        both = frozenset({"seen"})
        return FlagAction(
            name, "flags", add=both if seen else frozenset(), remove=frozenset() if seen else both
        )


_read_action("mark_read", True)
_read_action("mark_unread", False)


@action(
    "deliver",
    "write a copy into another local Maildir (a path, or {path, folder})",
    {
        "anyOf": [
            _STR,
            {
                "type": "object",
                "properties": {"path": _STR, "folder": _STR},
                "required": ["path"],
                "additionalProperties": False,
            },
        ]
    },
)
def _deliver(value: Any, path: Path, check: Checker) -> Action | None:
    folder_t = None
    path_value, path_at = value, path
    if isinstance(value, dict):
        spec = check.mapping(value, path, ("path", "folder"), required=("path",))
        if spec is None:
            return None
        path_value, path_at = spec["path"], (*path, "path")
        if "folder" in spec:
            folder_t = parse_template(spec["folder"], (*path, "folder"), check, "a folder name")
            if folder_t is None:
                return None
    if isinstance(path_value, str):
        path_value = expand_path(path_value, path_at, check, template=True)
        if path_value is None:
            return None
    target = parse_template(path_value, path_at, check, "a Maildir path")
    if target is None:
        return None
    return DeliverAction("deliver", None, needs_location=False, path=target, folder=folder_t)


@action(
    "run",
    "run a command (argv, never a shell) with the message on stdin",
    {
        "anyOf": [
            {"type": "array", "items": _STR},
            {
                "type": "object",
                "properties": {"argv": {"type": "array", "items": _STR}, "timeout": _STR},
                "required": ["argv"],
                "additionalProperties": False,
            },
        ]
    },
)
def _run(value: Any, path: Path, check: Checker) -> Action | None:
    parsed = parse_argv(value, path, check, default_timeout=60.0)
    if parsed is None:
        return None
    argv, timeout = parsed
    argv_at = (*path, "argv") if isinstance(value, dict) else path
    templates = [
        parse_template(a, (*argv_at, i), check, "an argument") if a else Template("", ())
        for i, a in enumerate(argv)
    ]
    if None in templates:
        return None
    return RunAction("run", None, needs_location=False, argv=tuple(templates), timeout=timeout)  # type: ignore[arg-type]


@action("stop", "stop: later rules do not see this message", {"type": "null"}, bare=True)
def _stop(value: Any, path: Path, check: Checker) -> Action | None:
    if value is not None:
        check.error(path, f"{check.where(path)}: 'stop' takes no argument")
        return None
    return Action("stop", None, needs_location=False)


_NOTIFY_KEYS = ("to", "text", "title", "snippet", "limit")
SNIPPET_DEFAULT = 200


@action(
    "notify",
    "send a notification through a notifier: {notify: NAME} or {notify: {to: NAME, text: ...}}",
    {
        "anyOf": [
            _STR,
            {
                "type": "object",
                "properties": {
                    "to": {**_STR, "description": "a notifier's name (top-level notifiers)"},
                    "text": {**_STR, "description": "a template: '{from.name}: {subject}'"},
                    "title": {**_STR, "description": "a template, for channels with titles"},
                    "snippet": {
                        "anyOf": [{"type": "boolean"}, {"type": "integer", "minimum": 0}],
                        "description": "add the first N characters of the body (true: 200)",
                    },
                    "limit": {
                        "type": "object",
                        "properties": {"count": {"type": "integer", "minimum": 1}, "per": _STR},
                        "required": ["count", "per"],
                        "additionalProperties": False,
                    },
                },
                "required": ["to"],
                "additionalProperties": False,
            },
        ]
    },
)
def _notify(value: Any, path: Path, check: Checker) -> Action | None:
    index = path[-2] if len(path) >= 2 and isinstance(path[-2], int) else 0
    if isinstance(value, str):
        spec: dict[str, Any] | None = {"to": value}
        at = path
    else:
        spec = check.mapping(value, path, _NOTIFY_KEYS, required=("to",))
        at = (*path, "to")
    if spec is None:
        return None
    name = check.text(spec["to"], at, "a notifier's name")
    text = title = None
    if "text" in spec:
        text = parse_template(spec["text"], (*path, "text"), check, "the notification text")
    if "title" in spec:
        title = parse_template(spec["title"], (*path, "title"), check, "the notification title")
    snippet: int | None = 0
    if "snippet" in spec:
        raw = spec["snippet"]
        if raw is True:
            snippet = SNIPPET_DEFAULT
        elif raw is False:
            snippet = 0
        elif isinstance(raw, int) and raw >= 0:
            snippet = raw
        else:
            check.error(
                (*path, "snippet"),
                f"{check.where((*path, 'snippet'))}: expected true or a number of characters, "
                f"got {describe(raw)}",
            )
            snippet = None
    limit = None
    if "limit" in spec:
        lim = check.mapping(spec["limit"], (*path, "limit"), ("count", "per"), ("count", "per"))
        if lim is None:
            return None
        count = lim["count"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            check.error(
                (*path, "limit", "count"),
                f"{check.where((*path, 'limit', 'count'))}: expected a number of at least 1, "
                f"got {describe(count)}",
            )
            return None
        per = check.duration(lim["per"], (*path, "limit", "per"))
        if per is None:
            return None
        limit = (count, per)
    if name is None or snippet is None:
        return None
    if ("text" in spec and text is None) or ("title" in spec and title is None):
        return None
    return NotifyAction(
        "notify",
        None,
        needs_location=False,
        notifier=name,
        text=text,
        title=title,
        snippet=snippet,
        limit=limit,
        index=index,
        at=at,
    )

"""The rule engine: rules in order -> a Decision per message. It never touches a mailbox.

Evaluation order, which the README documents and the tests pin down:

1. Rules are tried in the order they appear in the config, skipping rules that are
   disabled or that name other accounts or folders.
2. When a rule's ``when`` holds (a rule without ``when`` always holds), all its actions
   are added to the plan, in order, with templates filled in from the message and the
   rule's regex captures.
3. After a matching rule that moves or deletes the message, or that says ``stop``, no
   later rule sees the message. Otherwise the next rule is tried: a message can be
   flagged by one rule, copied by another and moved by a third.
4. A message that no rule moves or deletes stays where it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mailrules.interning import Pool
from mailrules.message import MessageView
from mailrules.rules.actions import (
    Action,
    DeleteAction,
    DeliverAction,
    FlagAction,
    FolderAction,
    NotifyAction,
    RunAction,
)
from mailrules.rules.conditions import Condition, EvalContext, Outcome


@dataclass
class Rule:
    name: str
    condition: Condition | None
    actions: list[Action]
    accounts: list[str] | None = None
    folders: list[str] | None = None
    enabled: bool = True

    def applies_to(self, account: str, folder: str) -> bool:
        if not self.enabled:
            return False
        if self.accounts is not None and account not in self.accounts:
            return False
        return self.folders is None or folder in self.folders

    @property
    def needs(self) -> frozenset[str]:
        """What messages must provide: body, size, ... and header:<name> for each header."""
        if not self.condition:
            return frozenset()
        return self.condition.needs | {f"header:{h}" for h in self.condition.headers()}


@dataclass(frozen=True, slots=True)
class Step:
    """One planned action with its arguments filled in; hashable, for batching."""

    rule: str
    action: Action
    args: tuple[str, ...] = ()

    def describe(self) -> str:
        act = self.action
        if isinstance(act, FolderAction):
            return f"{act.name} -> {self.args[0]}"
        if isinstance(act, DeleteAction):
            return "delete (expunge)" if act.expunge else "delete -> Trash"
        if isinstance(act, FlagAction):
            change = [f"+{f}" for f in sorted(act.add)] + [f"-{f}" for f in sorted(act.remove)]
            return f"{act.name} {' '.join(change)}"
        if isinstance(act, DeliverAction):
            return f"deliver -> {self.args[0]}" + (f" [{self.args[1]}]" if self.args[1] else "")
        if isinstance(act, RunAction):
            return "run " + " ".join(self.args)
        if isinstance(act, NotifyAction):
            return f"notify -> {act.notifier}: {self.args[0]!r}"
        return act.name


# A full pass holds thousands of messages' plans, and most share a few steps (those of a
# template differ by their arguments): one object per distinct step.
_shared_steps: Pool[Step] = Pool(4096)


@dataclass
class RuleTrace:
    rule: str
    matched: bool | None  # None: not reached (an earlier rule stopped evaluation)
    why: str
    steps: list[Step] = field(default_factory=list)


@dataclass
class Decision:
    steps: list[Step]
    trace: list[RuleTrace]

    @property
    def final(self) -> str:
        """Where the message ends up, in words."""
        for step in reversed(self.steps):
            if step.action.relocates:
                return step.describe()
        return "stays"


def decide(
    msg: MessageView,
    rules: list[Rule],
    ctx: EvalContext,
    clean_folder: Callable[[str], str] = lambda s: s,
) -> Decision:
    """Evaluate rules in order for one message. Raises RuleError if a condition cannot run."""
    steps: list[Step] = []
    trace: list[RuleTrace] = []
    stopped_by = None
    for rule in rules:
        if not rule.applies_to(ctx.account, ctx.folder):
            continue
        if stopped_by is not None:
            trace.append(RuleTrace(rule.name, None, f"not reached: rule {stopped_by!r} stopped"))
            continue
        ctx.rule = rule.name
        outcome = (
            rule.condition.evaluate(msg, ctx)
            if rule.condition
            else Outcome(True, "no conditions: matches every message")
        )
        entry = RuleTrace(rule.name, outcome.matched, outcome.why)
        trace.append(entry)
        if not outcome.matched:
            continue
        context = {"account": ctx.account, "folder": ctx.folder, "rule": rule.name}
        for act in rule.actions:
            step = _shared_steps(
                Step(rule.name, act, _render(act, msg, context, outcome.captures, clean_folder))
            )
            entry.steps.append(step)
            if act.name != "stop":
                steps.append(step)
            if act.relocates or act.name == "stop":
                stopped_by = rule.name
    return Decision(steps, trace)


def _render(
    act: Action,
    msg: MessageView,
    context: dict[str, str],
    captures: dict[str, str],
    clean_folder: Callable[[str], str],
) -> tuple[str, ...]:
    if isinstance(act, FolderAction) and act.folder is not None:
        return (act.folder.render(msg, context, captures, clean_folder),)
    if isinstance(act, DeliverAction) and act.path is not None:
        # The folder is in the target Maildir: its layout's rules clean the values.
        clean_target = act.clean_target_folder
        folder = act.folder.render(msg, context, captures, clean_target) if act.folder else ""
        return (act.path.render(msg, context, captures, clean_folder), folder)
    if isinstance(act, RunAction):
        return tuple(t.render(msg, context, captures) for t in act.argv)
    if isinstance(act, NotifyAction):
        return notify_args(act, msg, context, captures)
    return ()


def notify_args(
    act: NotifyAction, msg: MessageView, context: dict[str, str], captures: dict[str, str]
) -> tuple[str, str]:
    """(text, title) of a notification; without a text template, "Name: Subject"."""
    if act.text is not None:
        text = act.text.render(msg, context, captures)
    else:
        sender = msg.addresses("from")
        who = (sender[0].name or sender[0].address) if sender else "(no sender)"
        text = f"{who}: {msg.subject or '(no subject)'}"
    title = act.title.render(msg, context, captures) if act.title else ""
    return (text, title)

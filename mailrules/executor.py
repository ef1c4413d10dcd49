"""Apply planned steps to a mailbox, batched per (action, arguments).

Steps run in rounds: round k holds every message's k-th step, so each message's own
order is kept while all messages that go to the same folder move in one batch (one
fsync per directory for Maildir; one ``UID MOVE`` set for IMAP). A message whose step
fails gets no further steps and stays where that step left it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mailrules.commands import CommandFailed, message_env, run_command
from mailrules.message import MessageView, Summary
from mailrules.notify.payload import Notification, build
from mailrules.rules.actions import (
    DeleteAction,
    DeliverAction,
    FlagAction,
    FolderAction,
    NotifyAction,
    RunAction,
)
from mailrules.rules.engine import Step
from mailrules.sources.base import Mailbox, MessageRef, Permanent, Result
from mailrules.sources.maildir import FolderNameError, Maildir, write_message

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Item:
    """One message with its planned steps and, after execution, their results."""

    ref: MessageRef
    view: MessageView | Summary  # a Summary when no step reads the message
    steps: list[Step]
    results: list[tuple[Step, Result]] = field(default_factory=list)
    outbox: list[Notification] = field(default_factory=list)  # recorded with the message
    deadline: float | None = None  # time.monotonic() by which its commands must be done

    @property
    def failed(self) -> bool:
        return any(result is not None for _, result in self.results)

    @property
    def ok(self) -> bool:
        return not self.failed and len(self.results) == len(self.steps)

    @property
    def permanent(self) -> bool:
        """It failed, and no retry can change that: record it once, do not retry."""
        failures = [result for _, result in self.results if result is not None]
        return bool(failures) and all(isinstance(r, Permanent) for r in failures)


Apply = Callable[[Mailbox, Step, list[Item]], list[Result]]


def _folder(box: Mailbox, step: Step, items: list[Item]) -> list[Result]:
    refs = [i.ref for i in items]
    if step.action.name == "move":
        return box.move(refs, step.args[0])
    return box.copy(refs, step.args[0])


def _delete(box: Mailbox, step: Step, items: list[Item]) -> list[Result]:
    assert isinstance(step.action, DeleteAction)
    return box.delete([i.ref for i in items], step.action.expunge)


def _flags(box: Mailbox, step: Step, items: list[Item]) -> list[Result]:
    act = step.action
    assert isinstance(act, FlagAction)
    return box.set_flags([i.ref for i in items], act.add, act.remove, act.keywords)


def _deliver(box: Mailbox, step: Step, items: list[Item]) -> list[Result]:
    batched = getattr(box, "deliver_copies", None)  # POP3: batched, idempotent on retry
    if batched is not None:
        return batched([i.ref for i in items], step.args[0], step.args[1] or "INBOX")
    target = Maildir(step.args[0])
    results: list[Result] = []
    for item in items:
        try:
            folder_dir = target.ensure_folder(step.args[1] or "INBOX")
            write_message(folder_dir, item.view.raw())
            results.append(None)
        except FolderNameError as exc:
            results.append(Permanent(f"cannot deliver to {step.args[0]}: {exc}"))
        except Exception as exc:  # one failed delivery must not stop the others
            results.append(f"cannot deliver to {step.args[0]}: {exc}")
    return results


def _run(box: Mailbox, step: Step, items: list[Item]) -> list[Result]:
    act = step.action
    assert isinstance(act, RunAction)
    results: list[Result] = []
    for item in items:
        env = {  # every message field too, the safe way to pass values (message_env)
            "MAILRULES_RULE": step.rule,
            "MAILRULES_FOLDER": item.ref.folder,
            **message_env(item.view),
        }
        timeout = act.timeout
        if item.deadline is not None:
            timeout = min(timeout, item.deadline - time.monotonic())
            if timeout <= 0:
                results.append("not run: the time allowed for commands after delivery is used up")
                continue
        try:
            done = run_command(list(step.args), item.view.raw(), timeout, env)
        except (CommandFailed, OSError) as exc:
            results.append(str(exc))
            continue
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace").strip().splitlines()
            results.append(
                f"{step.args[0]!r} exited {done.returncode}" + (f": {err[-1][:200]}" if err else "")
            )
        else:
            results.append(None)
    return results


def _notify(box: Mailbox, step: Step, items: list[Item]) -> list[Result]:
    """Attach the notification to the item; it is queued when the item is recorded."""
    results: list[Result] = []
    for item in items:
        try:
            item.outbox.append(build(step, item.view))
            results.append(None)
        except OSError as exc:
            results.append(f"cannot read the message for the notification: {exc.strerror}")
    return results


EXECUTORS: dict[type, Apply] = {
    FolderAction: _folder,
    DeleteAction: _delete,
    FlagAction: _flags,
    DeliverAction: _deliver,
    RunAction: _run,
    NotifyAction: _notify,
}


def execute(box: Mailbox, items: list[Item]) -> None:
    """Run every item's steps, in rounds, batching equal steps. Fills ``item.results``."""
    rounds = max((len(i.steps) for i in items), default=0)
    for k in range(rounds):
        groups: dict[Step, list[Item]] = {}
        for item in items:
            if k < len(item.steps) and len(item.results) == k and not item.failed:
                key = Step("", item.steps[k].action, item.steps[k].args)
                groups.setdefault(key, []).append(item)
        for key, members in groups.items():
            apply = EXECUTORS[type(key.action)]
            try:
                results = apply(box, members[0].steps[k], members)
            except Exception as exc:  # report it; never crash the run
                log.exception("action %s failed", key.describe())
                results = [f"unexpected error: {exc}"] * len(members)
            for item, result in zip(members, results, strict=True):
                item.results.append((item.steps[k], result))

"""What a notification says, decided when the rule runs and stored in the outbox.

The document is the same for every channel (webhook and command send it as JSON; SMS,
Apprise and digests use its ``text``)::

    {"type": "message", "id": "…", "account": "work", "folder": "INBOX",
     "rule": "text me when Alice replies", "notifier": "phone",
     "message_id": "<…>", "from": {"address": "alice@example.org", "name": "Alice"},
     "to": [{"address": "me@example.net", "name": ""}], "subject": "Re: lunch",
     "date": "2026-11-24T09:30:00+00:00", "size": 2310,
     "text": "Alice: Re: lunch", "title": "", "snippet": "Yes, 12:30 …"}

``snippet`` is there only when the action asks for it (``snippet: 200``). ``id`` and
the account and folder are added when the row is recorded. A ``forward`` keeps the
original message's bytes beside the document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailrules.message import MessageView
from mailrules.notify.store import OutboxRow
from mailrules.rules.actions import NotifyAction
from mailrules.rules.engine import Step


@dataclass(frozen=True)
class Notification:
    """A notification planned for one message, not yet tied to its place in the state."""

    rule: str
    action: NotifyAction
    payload: dict[str, Any]
    message: bytes | None = None

    def row(self, account: str, folder: str, validity: str, uid: str) -> OutboxRow:
        act = self.action
        return OutboxRow(
            account=account,
            folder=folder,
            validity=validity,
            uid=uid,
            rule=self.rule,
            idx=act.index,
            notifier=act.notifier,
            channel=act.channel,
            payload={"account": account, "folder": folder, **self.payload},
            message=self.message,
            limit_key=act.limit_key or None,
            limit_count=act.limit[0] if act.limit else None,
            limit_per=act.limit[1] if act.limit else None,
        )


def _address(view: MessageView, kind: str) -> list[dict[str, str]]:
    return [{"address": a.address, "name": a.name} for a in view.addresses(kind)]


def build(step: Step, view: MessageView) -> Notification:
    """The notification ``step`` makes for ``view``. Raises OSError if the message is gone."""
    act = step.action
    assert isinstance(act, NotifyAction)
    text, title = step.args
    sender = _address(view, "from")
    raw = None
    size = view.size
    if size is None or act.channel == "forward":
        raw = view.raw()
        size = len(raw) + raw.count(b"\n") - raw.count(b"\r\n")
    payload: dict[str, Any] = {
        "type": "message",
        "rule": step.rule,
        "notifier": act.notifier,
        "message_id": view.message_id,
        "from": sender[0] if sender else {"address": "", "name": ""},
        "to": _address(view, "to"),
        "subject": view.subject,
        "date": view.date.isoformat() if view.date else None,
        "size": size,
        "text": text,
        "title": title,
    }
    if act.snippet:
        payload["snippet"] = snippet(view.body_text, act.snippet)
    return Notification(
        step.rule, act, _text_only(payload), raw if act.channel == "forward" else None
    )


def _text_only(value: Any) -> Any:
    """``value`` with every lone surrogate (a broken charset's leftovers) as U+FFFD: the
    document must be storable, and sendable as UTF-8 JSON, form fields or SMTP text."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k: _text_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text_only(v) for v in value]
    return value


def snippet(text: str, length: int) -> str:
    """The first ``length`` characters of the body, whitespace collapsed, quotes dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(">")]
    flat = " ".join(" ".join(lines).split())
    return shorten(flat, length)


def shorten(text: str, length: int, ellipsis: str = "…") -> str:
    """``text`` cut to ``length`` characters, ending in ``ellipsis`` when cut."""
    if len(text) <= length:
        return text
    return text[: max(0, length - len(ellipsis))].rstrip() + ellipsis

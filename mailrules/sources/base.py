"""The Mailbox protocol every source implements, and the message reference it hands out.

The engine and the executor talk only to this interface. Every batch operation takes
a list of references and returns, per reference, None on success or an error text;
a failed message stays where it was. Sources declare what they can do in
``capabilities``; config validation refuses rules that need more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from mailrules.message import MessageView

Result = str | None  # None: done; text: why it failed


class Permanent(str):
    """A failed action's result that no retry can change (a folder name that can never
    exist on this mailbox). The message is recorded as handled, its failure kept in the
    audit log, and it is not tried again on every run."""

    def __new__(cls, text: str) -> Permanent:
        return super().__new__(cls, f"{text} (permanent: not retried)")


@dataclass(slots=True)
class MessageRef:
    """One message in one folder. ``uid`` is stable for as long as it stays there.

    ``location`` is the source's handle (a file path for Maildir); actions that move a
    message update it, so later steps (``run``) still find the message.
    """

    folder: str
    uid: str
    location: str = ""
    arrived_in: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    """folder -> (uid, validity) of where actions put copies of it."""
    moved_to: str | None = None
    """The folder a move put it in, when ``location`` alone does not say (IMAP: its uid
    there is in ``arrived_in``, if the server told)."""


@dataclass
class Listing:
    """What a folder holds now: the validity token and every message's uid."""

    validity: str
    refs: dict[str, MessageRef]


@dataclass
class Known:
    """What the state store remembers of a folder, handed to ``Mailbox.scan``."""

    validity: str | None = None
    last_uid: int | None = None
    polled_at: float | None = None
    baseline_at: float | None = None  # when mailrules first saw the folder
    seen: Callable[[str], set[str]] = lambda validity: set()
    seen_message_ids: Callable[[], set[str]] = lambda: set()
    ignored_existing: Callable[[], bool] = lambda: False  # mail there at first contact was skipped


@dataclass
class Scan:
    """The outcome of looking at a folder: what to process and what to remember.

    ``first`` is set when the state had nothing usable for the folder (first contact,
    or the server reset UIDVALIDITY). ``baseline`` lists uids to record as seen
    without processing. ``cursor`` (IMAP) is the highest uid present at scan time;
    the runner stores it once everything up to it is handled. ``forget`` lists uids
    the state remembers that have left the folder.
    """

    validity: str
    refs: list[MessageRef]
    first: bool = False
    baseline: list[str] = field(default_factory=list)
    cursor: int | None = None
    forget: list[str] = field(default_factory=list)
    note: str | None = None


class Mailbox(Protocol):
    capabilities: frozenset[str]
    # Whether copying a message again finds the earlier copy instead of making another
    # (a Maildir copy keeps the unique name); where not, a copy is never repeated.
    repeated_copy_is_harmless: bool

    def clean_component(self, value: str) -> str:
        """Make a template value safe as (part of) one folder name component."""

    def check_folder_name(self, name: str) -> str | None:
        """Why a folder name cannot be used here, or None if it can."""

    def scan(
        self,
        folder: str,
        known: Known,
        process_all: bool,
        process_existing: bool,
        narrow: list[object] | None = None,
    ) -> Scan:
        """Find the messages to process: new ones, or all with ``process_all``.

        ``narrow``: IMAP SEARCH criteria matching a superset of what any rule can
        match, which a full pass may use to skip the rest.
        """

    def folders(self) -> list[str]: ...

    def views(
        self, refs: list[MessageRef], needs: frozenset[str]
    ) -> Iterator[tuple[MessageRef, MessageView]]: ...

    def move(self, refs: list[MessageRef], dest: str) -> list[Result]: ...

    def copy(self, refs: list[MessageRef], dest: str) -> list[Result]: ...

    def delete(self, refs: list[MessageRef], expunge: bool) -> list[Result]: ...

    def set_flags(
        self, refs: list[MessageRef], add: frozenset[str], remove: frozenset[str], keywords: bool
    ) -> list[Result]: ...

    def close(self) -> None: ...

"""One message arriving on stdin (``mailrules deliver``), on its way into a Maildir.

It behaves as a mailbox holding that single message in a virtual INBOX: ``move``
delivers it into a folder, ``copy`` delivers a copy, ``delete`` delivers it to Trash
(or drops it with ``expunge: true``), and flags are remembered until delivery. If no
rule moved or deleted it, ``finish`` delivers it into INBOX. Every write goes through
tmp/, fsync and link, so the MTA's copy is only released once ours is on disk.
"""

from __future__ import annotations

from collections.abc import Iterator

from mailrules.errors import MailrulesError
from mailrules.message import MessageView
from mailrules.sources.base import Listing, MessageRef, Permanent, Result
from mailrules.sources.maildir import (
    FLAG_LETTERS,
    FolderNameError,
    Maildir,
    split_name,
    write_message,
)


class Incoming:
    capabilities = Maildir.capabilities

    def __init__(self, maildir: Maildir, data: bytes) -> None:
        self.maildir = maildir
        self.data = data
        self.flags: set[str] = set()
        self.keywords: set[str] = set()
        self.relocated = False
        self.keep_in_inbox = False  # a rule copied it into INBOX
        self.delivered: list[tuple[str, str]] = []  # (folder, unique)

    def clean_component(self, value: str) -> str:
        return self.maildir.clean_component(value)

    def check_folder_name(self, name: str) -> str | None:
        return self.maildir.check_folder_name(name)

    def list_folder(self, folder: str) -> Listing:
        return Listing("incoming", {"incoming": MessageRef(folder, "incoming")})

    def views(
        self, refs: list[MessageRef], needs: frozenset[str]
    ) -> Iterator[tuple[MessageRef, MessageView]]:
        raise NotImplementedError("the incoming message is read by the caller")

    def _write(self, folder: str) -> Result:
        try:
            self._write_into(folder)
        except (OSError, MailrulesError) as exc:
            text = f"cannot deliver into {folder!r}: {getattr(exc, 'strerror', None) or exc}"
            return Permanent(text) if isinstance(exc, FolderNameError) else text
        return None

    def _write_into(self, folder: str) -> None:
        folder_dir = self.maildir.ensure_folder(folder)
        letters = {FLAG_LETTERS[f] for f in self.flags}
        if self.keywords:
            kw = self.maildir._keyword_letters(folder, frozenset(self.keywords), create=True)
            letters |= set(kw)
        unique = write_message(folder_dir, self.data, "".join(sorted(letters)))
        self.delivered.append((folder, split_name(unique)[0]))

    def move(self, refs: list[MessageRef], dest: str) -> list[Result]:
        result = self._write(dest)
        self.relocated = self.relocated or result is None
        return [result] * len(refs)

    def copy(self, refs: list[MessageRef], dest: str) -> list[Result]:
        if dest.upper() == "INBOX":  # the folder it arrives in: one copy there, at the end
            self.keep_in_inbox = True
            return [None] * len(refs)
        return [self._write(dest)] * len(refs)

    def delete(self, refs: list[MessageRef], expunge: bool) -> list[Result]:
        result = None if expunge else self._write(self.maildir.trash)
        self.relocated = self.relocated or result is None
        return [result] * len(refs)

    def set_flags(
        self, refs: list[MessageRef], add: frozenset[str], remove: frozenset[str], keywords: bool
    ) -> list[Result]:
        target = self.keywords if keywords else self.flags
        target |= add
        target -= remove
        return [None] * len(refs)

    def finish(self) -> None:
        """Deliver into INBOX unless a rule put the message somewhere else (and did not
        also copy it into INBOX), with the flags the rules gave it."""
        if not self.relocated or self.keep_in_inbox:
            self._write_into("INBOX")

    def close(self) -> None:
        return None

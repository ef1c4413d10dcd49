"""POP3 accounts: fetch new messages by UIDL into a local Maildir; delete only what is safe.

A message is new when its UIDL is in neither the state's seen set for (account, INBOX,
validity "pop3") nor its ``pop3_fetched`` table. Servers without UIDL get a stable
identity instead: a digest of the Message-ID, Date, From and Subject headers and the
size from LIST (``digest:<sha256>``, with ``:2``, ``:3`` for identical messages).

Rules decide on headers: ``TOP n 0`` for messages over 64 KiB where the server offers
TOP and honours its line count (a server that sends more is noticed and RETR used for
the rest of the session); smaller messages are fetched whole with RETR, which costs no
more. Bodies come pipelined (RFC 2449 PIPELINING) and are stored byte for byte as
retrieved: dot-unstuffed, CRLF turned into LF, and checked against the octet count of
LIST (a mismatch is logged; after the first one the server's counts are not trusted).

What a rule can do: ``deliver`` (into any Maildir; the message then does not also go
into deliver_to's INBOX), ``delete`` (from the server; the local copy goes to
deliver_to's Trash unless ``expunge: true``), ``run`` and ``stop``. The rest goes into
deliver_to's INBOX (``settle``). Local files are written to tmp/, fsynced, linked
into new/ under a name derived from the account and UIDL (so a retry after a crash
finds its own file instead of adding a second one; a different message with that name
keeps it, and the new one takes another), and new/ is fsynced.

Deletion (RFC 1939 s6: DELE takes effect at QUIT): only when the session ends, and only
for messages whose delivery the state database has recorded: the ones a rule deleted,
all of them with ``delete_after_delivery``, or those delivered longer than
``delete_after`` ago. DELE goes highest message number first, so a server that deletes
(and renumbers) at once instead of at QUIT still deletes the right messages. QUIT is
last; a dropped connection deletes nothing, and what was due is deleted on the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import poplib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from mailrules import failpoints
from mailrules.errors import MailrulesError, SourceError
from mailrules.message import MessageView, Summary, split_header_block
from mailrules.sources.base import Known, MessageRef, Result, Scan
from mailrules.sources.maildir import Maildir, fsync_dir, link_new
from mailrules.sources.pop3_connect import Connector, _text
from mailrules.sources.pop3_session import ProtocolError
from mailrules.state import State

if TYPE_CHECKING:
    from mailrules.config.load import Config
    from mailrules.config.model import AccountModel
    from mailrules.executor import Item

log = logging.getLogger(__name__)

VALIDITY = "pop3"
TOP_ABOVE = 64 * 1024  # smaller messages are fetched whole: TOP would save little
CACHE_UP_TO = 256 * 1024  # bodies fetched for the headers are kept for delivery up to this
CHUNK_BYTES = 32 << 20  # deliver in chunks of about this much mail
CHUNK_MESSAGES = 128
DIGEST_FIELDS = (b"message-id", b"date", b"from", b"subject")


@dataclass
class _Message:
    number: int
    size: int
    identity: str


class Pop3Mailbox(Connector):
    """A POP3 account as a Mailbox that delivers into a local Maildir (``deliver_to``)."""

    repeated_copy_is_harmless = True  # copies are a config error on POP3 accounts
    capabilities = frozenset({"delete"})
    why_not: ClassVar[dict[str, str]] = {
        "move": "POP3 cannot move messages on the server; use deliver (or deliver_to for "
        "the default)",
        "copy": "POP3 has no folders to copy into; use deliver to put a copy into a local Maildir",
        "flags": "POP3 cannot set flags on the server; deliver into a local Maildir and "
        "flag it there",
        "keywords": "POP3 cannot set keywords on the server; deliver into a local Maildir",
    }

    def __init__(
        self,
        account: str,
        settings: AccountModel,
        local: Maildir,
        timeout: float,
        delete_after: float | None,
    ) -> None:
        super().__init__(account, settings.pop3, timeout)
        self.local = local
        self.delete_after = delete_after
        self.delete_after_delivery = settings.delete_after_delivery
        self._state: State | None = None
        self._dry_run = True
        self._messages: dict[str, _Message] = {}  # identity -> message, this session
        self._by_number: dict[int, str] = {}
        self._headers: dict[str, bytes] = {}
        self._bodies: dict[str, bytes] = {}
        self._dele: set[str] = set()  # identities a rule deleted, in this batch
        self._digest_mode = False
        self._config: Config | None = None
        self._sizes_trusted = True
        self._size_mismatches = 0

    # -- the runner's hooks ---------------------------------------------------------------

    def bind_state(self, state: State | None, dry_run: bool, config: Config | None = None) -> None:
        """The state database: what was fetched before, and where to record deliveries.

        ``config`` (its file and account names) lets a clean session leave a record for
        the quick poll (``mailrules.quick_poll``)."""
        self._state = state
        self._dry_run = dry_run
        self._config = config

    def clean_component(self, value: str) -> str:
        return self.local.clean_component(value)

    def check_folder_name(self, name: str) -> str | None:
        return self.local.check_folder_name(name)

    def folders(self) -> list[str]:
        return ["INBOX"]

    def close(self) -> None:
        """Delete what is due (only with a state database, never in a dry run), then QUIT."""
        if self._session is None:
            self._drop()
            return
        try:
            deleted: set[str] = set()
            if self._state is not None and not self._dry_run:
                deleted = self._delete_due()
            with self._talk("QUIT") as session:
                session.quit()
            if self._state is not None and not self._dry_run:
                # Gone from the server, which may give a new message the same UIDL. (Not a
                # digest identity: an identical message still there may now take it.)
                if deleted and not self._digest_mode:
                    self._state.forget_pop3(self.account, deleted)
                    self._state.commit(self.account, VALIDITY, {}, {"INBOX": sorted(deleted)}, [])
                self._remember_poll(deleted)
        except MailrulesError as exc:
            log.error("%s: %s", self.label, exc)
        finally:
            self._drop()

    def _remember_poll(self, deleted: set[str]) -> None:
        """After a clean session, what a quick poll compares against; else no record."""
        from mailrules.quick_poll import QuickRecord, config_digest, server_settings
        from mailrules.sources.pop3_quick import listing_digest

        assert self._state is not None
        state = self._state
        remaining = [i for i in self._messages if i not in deleted]
        config = config_digest(self._config.path) if self._config else None
        if config is None or self._digest_mode:
            state.drop_quick_poll(self.account)
            return
        fetched = state.pop3_fetched(self.account)
        handled = state.seen_uids(self.account, "INBOX", VALIDITY).union(fetched)
        if any(i not in handled for i in remaining):
            state.drop_quick_poll(self.account)
            return
        due = None
        if self.delete_after is not None:
            times = [fetched[i][0] + self.delete_after for i in remaining if i in fetched]
            due = min(times, default=None)
        assert self._config is not None
        settings = server_settings(
            "pop3", self.account, self.settings, self.timeout, self._config.path
        )
        record = QuickRecord(
            config=config,
            accounts=json.dumps(sorted(self._config.accounts)),
            settings=json.dumps(settings),
            marker=listing_digest(remaining),
            due_at=due,
        )
        state.set_quick_poll(self.account, "pop3", record)

    # -- finding new mail -----------------------------------------------------------------

    def scan(
        self,
        folder: str,
        known: Known,
        process_all: bool,
        process_existing: bool,
        narrow: list[object] | None = None,
    ) -> Scan:
        listing = self._list()
        fetched = self._state.pop3_fetched(self.account) if self._state else {}
        seen = known.seen(VALIDITY)
        on_server = set(listing)
        gone = [u for u in fetched if u not in on_server]
        if gone and self._state is not None and not self._dry_run:
            self._state.forget_pop3(self.account, gone)
        forget = sorted(u for u in seen if u not in on_server)
        first = known.validity != VALIDITY
        candidates = [m for m in listing.values() if m.identity not in fetched]
        if first and not process_existing and not process_all:
            note = (
                f"{folder}: first run, {len(candidates)} messages on the server recorded as "
                "seen and left there, none fetched (use --all or existing: process to fetch "
                "them)"
            )
            baseline = [m.identity for m in candidates]
            return Scan(VALIDITY, [], first=True, baseline=baseline, note=note, forget=forget)
        if not process_all and not first:
            candidates = [m for m in candidates if m.identity not in seen]
        refs = [MessageRef("INBOX", m.identity, str(m.number)) for m in candidates]
        return Scan(VALIDITY, refs, first=first, forget=forget)

    def _list(self) -> dict[str, _Message]:
        """identity -> message for everything on the server now."""
        with self._talk("LIST") as session:
            _, lines, _ = session.list()
        sizes = {}
        for line in lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                sizes[int(parts[0])] = int(parts[1])
        names = self._uidls(sizes)
        self._digest_mode = names is None
        if names is None:
            names = self._digests(sizes)
        self._messages = {
            names[n]: _Message(n, size, names[n]) for n, size in sizes.items() if n in names
        }
        self._by_number = {m.number: m.identity for m in self._messages.values()}
        return self._messages

    def _uidls(self, sizes: dict[int, int]) -> dict[int, str] | None:
        assert self._session is not None
        if self._session.caps is not None and not self._session.has("UIDL"):
            log.warning(
                "%s: the server does not offer UIDL; identifying messages by a digest of "
                "their headers and size (every run reads every message's headers)",
                self.label,
            )
            return None
        with self._talk("UIDL") as session:
            try:
                _, lines, _ = session.uidl()
            except ProtocolError:
                raise
            except poplib.error_proto as exc:
                log.warning(
                    "%s: the server refused UIDL (%s); identifying messages by a digest of "
                    "their headers and size (every run reads every message's headers)",
                    self.label,
                    _text(exc),
                )
                return None
        names = {}
        for line in lines:
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0].isdigit():
                names[int(parts[0])] = parts[1].strip().decode("ascii", "backslashreplace")
        return {n: names[n] for n in sizes if n in names}

    def _digests(self, sizes: dict[int, int]) -> dict[int, str]:
        numbers = sorted(sizes)
        blocks = self._fetch_headers(numbers, sizes, cache=False)  # not the whole mailbox
        names: dict[int, str] = {}
        counts: dict[str, int] = {}
        for n in numbers:
            digest = _digest(blocks[n], sizes[n])
            counts[digest] = counts.get(digest, 0) + 1
            names[n] = f"digest:{digest}" + (f":{counts[digest]}" if counts[digest] > 1 else "")
            self._headers[names[n]] = blocks[n]
        return names

    # -- reading --------------------------------------------------------------------------

    def _fetch_headers(
        self, numbers: list[int], sizes: dict[int, int], whole: bool = False, cache: bool = True
    ) -> dict[int, bytes]:
        """Header blocks by message number: TOP n 0 for large messages, else RETR."""
        out: dict[int, bytes] = {}
        pending = []
        for n in numbers:
            use_top = not whole and self._top is not False and sizes.get(n, 0) > TOP_ABOVE
            pending.append((n, f"TOP {n} 0" if use_top else f"RETR {n}"))
        while pending:
            done = 0
            with self._talk(pending[0][1].split()[0]) as session:
                try:
                    answers = session.fetch_many([c for _, c in pending])
                    for (n, command), (_, data) in zip(pending, answers, strict=False):
                        out[n] = self._took(n, command, data, sizes, cache)
                        done += 1
                except ProtocolError:
                    raise
                except poplib.error_proto as exc:
                    # Only a server without CAPA gets a TOP it may not know; it does not
                    # pipeline, so nothing else is in flight.
                    if not (pending[done][1].startswith("TOP") and self._top is None):
                        raise
                    log.warning(
                        "%s: the server refused TOP (%s); using RETR", self.label, _text(exc)
                    )
                    self._top = False
                    pending = [(m, f"RETR {m}") for m, _ in pending[done:]]
                    continue
            pending = []
        return out

    def _took(
        self, number: int, command: str, data: bytes, sizes: dict[int, int], cache: bool
    ) -> bytes:
        block, body_at = split_header_block(data)
        if command.startswith("TOP"):
            self._top = True if self._top is None else self._top
            if body_at is not None and data[body_at:].strip():
                log.warning(
                    "%s: the server's TOP ignores the line count (TOP %d 0 sent %d octets "
                    "after the headers); using RETR for the rest of this session",
                    self.label,
                    number,
                    len(data) - body_at,
                )
                self._top = False
            return block
        self._check_size(number, data, sizes.get(number))
        if cache and len(data) <= CACHE_UP_TO:
            self._bodies[self._by_number[number]] = data
        return block

    def _check_size(self, number: int, data: bytes, listed: int | None) -> None:
        if listed is None or not self._sizes_trusted:
            return
        octets = len(data) + data.count(b"\n")  # as sent: CRLF line ends, before stuffing
        if octets != listed:
            self._sizes_trusted = False
            log.warning(
                "%s: message %d is %d octets but LIST said %d; the server's sizes are not "
                "trusted for the rest of this session (the message is stored as retrieved)",
                self.label,
                number,
                octets,
                listed,
            )

    def views(
        self, refs: list[MessageRef], needs: frozenset[str]
    ) -> Iterator[tuple[MessageRef, MessageView]]:
        whole = bool(needs & {"body", "raw"})
        wanted = [r for r in refs if r.uid not in self._headers]
        if wanted:
            numbers = [self._messages[r.uid].number for r in wanted]
            sizes = {m.number: m.size for m in self._messages.values()}
            blocks = self._fetch_headers(numbers, sizes, whole)
            for ref, n in zip(wanted, numbers, strict=True):
                self._headers[ref.uid] = blocks[n]
        for ref in refs:
            message = self._messages[ref.uid]
            yield (
                ref,
                MessageView(
                    header_block=self._headers.pop(ref.uid),
                    name=f"message {message.number} (UIDL {ref.uid})",
                    size=message.size,
                    load_bytes=lambda ref=ref: self._body(ref),
                ),
            )

    def _body(self, ref: MessageRef) -> bytes:
        if ref.uid not in self._bodies:
            self._prefetch([ref])
        return self._bodies[ref.uid]

    def _prefetch(self, refs: list[MessageRef]) -> None:
        missing = [r for r in refs if r.uid not in self._bodies]
        if not missing:
            return
        numbers = [self._messages[r.uid].number for r in missing]
        with self._talk("RETR") as session:
            fetched = session.fetch_many([f"RETR {n}" for n in numbers])
            for ref, n, (_, data) in zip(missing, numbers, fetched, strict=False):
                self._check_size(n, data, self._messages[ref.uid].size)
                self._bodies[ref.uid] = data

    # -- actions --------------------------------------------------------------------------

    def _refuse(self, refs: list[MessageRef], capability: str) -> list[Result]:
        return [self.why_not[capability]] * len(refs)

    def move(self, refs: list[MessageRef], dest: str) -> list[Result]:
        return self._refuse(refs, "move")

    def copy(self, refs: list[MessageRef], dest: str) -> list[Result]:
        return self._refuse(refs, "copy")

    def set_flags(
        self, refs: list[MessageRef], add: frozenset[str], remove: frozenset[str], keywords: bool
    ) -> list[Result]:
        return self._refuse(refs, "keywords" if keywords else "flags")

    def delete(self, refs: list[MessageRef], expunge: bool) -> list[Result]:
        """Mark for DELE at the end of the session; keep a local copy in Trash unless expunge."""
        if not expunge:
            try:
                self._deliver(refs, self.local.trash)
            except (OSError, MailrulesError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                return [f"cannot keep a copy in {self.local.trash}: {reason}"] * len(refs)
        self._dele.update(r.uid for r in refs)
        return [None] * len(refs)

    def settle(self, items: list[Item], unplanned: list[tuple[MessageRef, Summary]]) -> None:
        """Deliver into INBOX what no rule delivered or deleted; record what is now local.

        Called after the rules' actions and before the runner marks the batch seen. A
        local write that fails raises SourceError: the batch is not recorded, nothing of
        it is deleted from the server, and it is fetched again on the next run.
        """
        from mailrules.rules.actions import DeleteAction, DeliverAction

        placed = (DeliverAction, DeleteAction)
        done = [i for i in items if i.ok]
        inbox = [ref for ref, _ in unplanned]
        inbox += [i.ref for i in done if not any(isinstance(s.action, placed) for s in i.steps)]
        try:
            self._deliver(inbox, "INBOX")
        except (OSError, MailrulesError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise SourceError(
                f"{self.label}: cannot deliver into {self.local.root}: {reason}; nothing of "
                "this batch was recorded or deleted from the server"
            ) from None
        if inbox:
            log.info("%s: delivered %d messages into %s", self.label, len(inbox), self.local.root)
        now = time.time()
        rows = [(ref.uid, now, ref.uid in self._dele) for ref, _ in unplanned]
        rows += [(i.ref.uid, now, i.ref.uid in self._dele) for i in done]
        if self._state is not None and not self._dry_run and rows:
            self._state.record_pop3(self.account, rows)
        self._dele.clear()
        for ref in [r for r, _ in unplanned] + [i.ref for i in items]:
            self._bodies.pop(ref.uid, None)

    def deliver_copies(self, refs: list[MessageRef], path: str, folder: str) -> list[Result]:
        """The ``deliver`` action: batched and fsynced like deliver_to, and named after the
        UIDL, so that a retry after a crash replaces its own copy instead of adding one."""
        try:
            self._deliver(refs, folder, Maildir(path))
        except (OSError, MailrulesError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            return [f"cannot deliver to {path}: {reason}"] * len(refs)
        return [None] * len(refs)

    def _deliver(self, refs: list[MessageRef], folder: str, into: Maildir | None = None) -> None:
        """Write these messages into a folder of deliver_to (or ``into``), in fsynced chunks."""
        if not refs:
            return
        folder_dir = (into or self.local).ensure_folder(folder)
        chunk: list[MessageRef] = []
        size = 0
        for ref in refs:
            chunk.append(ref)
            size += self._messages[ref.uid].size
            if len(chunk) >= CHUNK_MESSAGES or size >= CHUNK_BYTES:
                self._deliver_chunk(chunk, folder_dir)
                chunk, size = [], 0
        if chunk:
            self._deliver_chunk(chunk, folder_dir)

    def _deliver_chunk(self, refs: list[MessageRef], folder_dir: str) -> None:
        self._prefetch(refs)
        bodies = [self._bodies[r.uid] for r in refs]
        names = [_unique(self.account, r.uid, b) for r, b in zip(refs, bodies, strict=True)]
        write_batch(folder_dir, list(zip(names, bodies, strict=True)))

    # -- deleting from the server ---------------------------------------------------------

    def _delete_due(self) -> set[str]:
        """DELE what is due; the identities deleted (at QUIT)."""
        assert self._state is not None
        fetched = self._state.pop3_fetched(self.account)
        cutoff = time.time() - self.delete_after if self.delete_after is not None else None
        due = sorted(
            (
                m
                for identity, m in self._messages.items()
                if identity in fetched
                and (
                    fetched[identity][1]
                    or self.delete_after_delivery
                    or (cutoff is not None and fetched[identity][0] <= cutoff)
                )
            ),
            key=lambda m: m.number,
            reverse=True,  # a server that renumbers at DELE cannot shift what comes next
        )
        if not due:
            return set()
        log.info("%s: deleting %d messages from the server at QUIT", self.label, len(due))
        with self._talk("DELE") as session:
            for message in due:
                session.dele(message.number)
            failpoints.reached()
            _, lines, _ = session.list()
        expected = sorted(set(m.number for m in self._messages.values()) - {m.number for m in due})
        listed = sorted(int(line.split()[0]) for line in lines if line.split()[:1] != [])
        if listed != expected:
            log.warning(
                "%s: the server deleted at DELE instead of at QUIT and renumbered the rest "
                "(RFC 1939 says otherwise); DELE went highest number first, so the right "
                "messages were deleted, but a dropped connection no longer undoes them",
                self.label,
            )
        return {m.identity for m in due}


def write_batch(folder_dir: str, messages: list[tuple[str, bytes]]) -> None:
    """Deliver into a Maildir folder: all to tmp/, fsync each, link into new/, fsync new/.

    Names are given (derived from what the message is), so a retry after a crash finds
    the file it wrote before rather than adding a second copy. A different message that
    already has the name keeps it (a server that reuses a deleted message's UIDL): this
    one takes another name, and nothing is ever renamed onto a file. Writing the
    whole batch before the first fsync lets the file system commit them together.
    """
    tmp_dir, new_dir = os.path.join(folder_dir, "tmp"), os.path.join(folder_dir, "new")
    written: list[tuple[int, str]] = []
    try:
        for unique, data in messages:
            path = os.path.join(tmp_dir, unique)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
            written.append((fd, unique))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        for fd, _ in written:
            os.fsync(fd)
    finally:
        for fd, _ in written:
            os.close(fd)
    failpoints.reached()
    for _, unique in written:
        link_new(os.path.join(tmp_dir, unique), new_dir, unique)
    fsync_dir(new_dir)
    failpoints.reached()


def _unique(account: str, identity: str, data: bytes) -> str:
    digest = hashlib.sha256(f"{account}\0{identity}".encode()).hexdigest()[:24]
    return f"pop3-{digest},S={len(data)}"


def _digest(block: bytes, size: int) -> str:
    """A stable identity for servers without UIDL: chosen headers plus the LIST size."""
    wanted: dict[bytes, bytes] = {}
    name = b""
    for line in block.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t") and name in DIGEST_FIELDS:
            wanted[name] += b" " + line.strip()
            continue
        name, sep, value = line.partition(b":")
        name = name.strip().lower()
        if sep and name in DIGEST_FIELDS and name not in wanted:
            wanted[name] = value.strip()
    h = hashlib.sha256()
    for field in DIGEST_FIELDS:
        h.update(field + b":" + wanted.get(field, b"") + b"\0")
    h.update(str(size).encode())
    return h.hexdigest()[:32]

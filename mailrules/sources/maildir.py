"""Local Maildir: folders are directories, messages are files, every change is a rename.

A message's uid is the unique part of its file name (before ``:2,``), which stays the
same when flags change. Moves link the file into the destination first, fsync that
directory, and only then unlink the source: a crash at any point leaves the message
in its old folder, its new one, or both, never neither. Flag changes are a single
rename. New files are written in ``tmp/``, fsynced, then linked into ``new/`` or
``cur/``.

Folder layouts: ``maildir++`` (Dovecot's and Courier's default: ``Work/Clients`` is
``.Work.Clients``) and ``fs`` (``Work/Clients`` is ``Work/Clients/``, as mbsync's
``SubFolders Verbatim``). Non-ASCII names are stored in modified UTF-7, as Dovecot does.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from mailrules import failpoints
from mailrules.errors import FolderError, SourceError
from mailrules.message import MessageView, read_head
from mailrules.sources import mutf7
from mailrules.sources.base import Known, Listing, MessageRef, Result, Scan

log = logging.getLogger(__name__)

VALIDITY = "maildir"
FLAG_LETTERS = {"draft": "D", "flagged": "F", "answered": "R", "seen": "S", "deleted": "T"}
LETTER_FLAGS = {v: k for k, v in FLAG_LETTERS.items()}
_SIZE_FIELD = re.compile(r",([SW])=(\d+)")
_counter = 0
_counter_lock = threading.Lock()


def split_name(filename: str) -> tuple[str, str]:
    """(unique, info letters) of a Maildir file name."""
    unique, _, info = filename.partition(":2,")
    return unique, info


def new_unique(size: int | None = None) -> str:
    """A fresh unique file name part, in the form Dovecot and maildrop use."""
    global _counter
    with _counter_lock:
        _counter += 1
        counter = _counter
    now = time.time()
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    rand = os.urandom(4).hex()
    name = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{counter}R{rand}.{host}"
    return name + (f",S={size}" if size is not None else "")


def _arrival_order(uid: str) -> tuple[int, str]:
    """Maildir names start with the delivery time in seconds."""
    head = uid.split(".", 1)[0]
    return (int(head) if head.isdigit() else 0, uid)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_message(folder_dir: str, data: bytes, info: str = "", unique: str | None = None) -> str:
    """Deliver bytes into a Maildir folder: tmp/, fsync, link into new/ or cur/, fsync.

    Returns the unique name. If a file with that unique name is already there (a retry
    after a crash), it is kept and nothing is written twice.
    """
    unique = unique or new_unique(len(data))
    sub, name = ("cur", f"{unique}:2,{info}") if info else ("new", unique)
    tmp = os.path.join(folder_dir, "tmp", unique)
    final = os.path.join(folder_dir, sub, name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    failpoints.reached()
    try:
        os.link(tmp, final)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    fsync_dir(os.path.join(folder_dir, sub))
    failpoints.reached()
    return unique


class Maildir:
    """A local Maildir tree as a Mailbox."""

    capabilities = frozenset({"move", "copy", "delete", "flags", "keywords"})

    def __init__(self, root: str, layout: str = "maildir++", trash: str = "Trash") -> None:
        self.root = root
        self.layout = layout
        self.trash = trash

    # -- folders ------------------------------------------------------------------------

    def clean_component(self, value: str) -> str:
        value = value.replace("/", "_").strip()
        if self.layout == "maildir++":
            value = value.replace(".", "_")
        return value if value not in ("", ".", "..") else "_"

    def check_folder_name(self, name: str) -> str | None:
        if name.upper() == "INBOX":
            return None
        parts = name.split("/")
        for part in parts:
            if not part or part in (".", ".."):
                return f"folder name {name!r} has an empty, '.' or '..' part"
            if self.layout == "maildir++" and "." in part:
                return (
                    f"folder name {name!r}: Maildir++ uses '.' to separate folders; "
                    "write 'A/B' for a subfolder, or use '_'"
                )
            if any(ord(c) < 0x20 for c in part):
                return f"folder name {name!r} contains control characters"
        return None

    def folder_dir(self, name: str) -> str:
        if name.upper() == "INBOX":
            return self.root
        problem = self.check_folder_name(name)
        if problem:
            raise FolderError(problem)
        parts = [mutf7.encode(p) for p in name.split("/")]
        if self.layout == "maildir++":
            return os.path.join(self.root, "." + ".".join(parts))
        return os.path.join(self.root, *parts)

    def ensure_folder(self, name: str) -> str:
        path = self.folder_dir(name)
        if os.path.isdir(os.path.join(path, "cur")):
            return path
        try:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
            if self.layout == "maildir++" and path != self.root:
                with open(os.path.join(path, "maildirfolder"), "a"):
                    pass
            fsync_dir(os.path.dirname(path))
        except OSError as exc:
            raise FolderError(f"cannot create folder {name!r} at {path}: {exc.strerror}") from None
        log.info("created folder %s at %s", name, path)
        return path

    def folders(self) -> list[str]:
        """Every folder under the root, as names with '/' separators."""
        found = ["INBOX"] if os.path.isdir(os.path.join(self.root, "cur")) else []
        if self.layout == "maildir++":
            with contextlib.suppress(FileNotFoundError):
                for entry in sorted(os.listdir(self.root)):
                    if (
                        entry.startswith(".")
                        and entry not in (".", "..")
                        and os.path.isdir(os.path.join(self.root, entry, "cur"))
                    ):
                        found.append("/".join(mutf7.decode(p) for p in entry[1:].split(".")))
            return found
        for dirpath, dirnames, _ in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d not in ("cur", "new", "tmp"))
            if dirpath != self.root and os.path.isdir(os.path.join(dirpath, "cur")):
                rel = os.path.relpath(dirpath, self.root)
                found.append("/".join(mutf7.decode(p) for p in rel.split(os.sep)))
        return found

    # -- reading ------------------------------------------------------------------------

    def list_folder(self, folder: str) -> Listing:
        path = self.folder_dir(folder)
        if not os.path.isdir(os.path.join(path, "cur")):
            if folder.upper() == "INBOX":
                raise SourceError(
                    f"no Maildir at {self.root}: it needs cur/, new/ and tmp/ "
                    "(check the account's maildir path)"
                )
            log.warning("folder %s does not exist yet at %s; nothing to do", folder, path)
            return Listing(VALIDITY, {})
        refs: dict[str, MessageRef] = {}
        for sub in ("new", "cur"):
            try:
                with os.scandir(os.path.join(path, sub)) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        unique = split_name(entry.name)[0]
                        refs.setdefault(unique, MessageRef(folder, unique, entry.path))
            except OSError as exc:
                raise SourceError(f"cannot list {path}/{sub}: {exc.strerror}") from None
        return Listing(VALIDITY, refs)

    def scan(
        self,
        folder: str,
        known: Known,
        process_all: bool,
        process_existing: bool,
        narrow: list[object] | None = None,
    ) -> Scan:
        listing = self.list_folder(folder)
        uids = sorted(listing.refs, key=_arrival_order)
        first = known.validity != listing.validity
        if process_all:
            return Scan(listing.validity, [listing.refs[u] for u in uids], first=first)
        if first and not process_existing:
            note = (
                f"{folder}: first run, {len(uids)} messages already there recorded as seen, "
                "none acted on (use --all or existing: process to apply rules)"
            )
            return Scan(listing.validity, [], first=True, baseline=uids, note=note)
        if first:
            return Scan(listing.validity, [listing.refs[u] for u in uids], first=True)
        seen = known.seen(listing.validity)
        new = [listing.refs[u] for u in uids if u not in seen]
        gone = seen - set(listing.refs)
        if gone:
            # A listing can miss a file that another program renames at that moment:
            # forget only what a second listing confirms is gone.
            gone -= set(self.list_folder(folder).refs)
        return Scan(listing.validity, new, forget=sorted(gone))

    def _find(self, ref: MessageRef) -> str | None:
        """The current path of a message whose file was renamed by another program."""
        path = self.folder_dir(ref.folder)
        for sub in ("cur", "new"):
            with contextlib.suppress(OSError), os.scandir(os.path.join(path, sub)) as entries:
                for entry in entries:
                    if split_name(entry.name)[0] == ref.uid:
                        return entry.path
        return None

    def views(
        self, refs: list[MessageRef], needs: frozenset[str]
    ) -> Iterator[tuple[MessageRef, MessageView]]:
        for ref in refs:
            try:
                view = self._view(ref, needs)
            except FileNotFoundError:
                moved = self._find(ref)
                if moved is None:
                    log.info("%s: %s vanished before it was read; skipped", ref.folder, ref.uid)
                    continue
                ref.location = moved
                view = self._view(ref, needs)
            except OSError as exc:
                log.error("%s: cannot read %s: %s", ref.folder, ref.location, exc.strerror)
                continue
            yield ref, view

    def _view(self, ref: MessageRef, needs: frozenset[str]) -> MessageView:
        block, mtime = read_head(ref.location)
        filename = os.path.basename(ref.location)
        unique, info = split_name(filename)
        sizes = dict(_SIZE_FIELD.findall(unique))
        size = int(sizes["W"]) if "W" in sizes else None
        if size is None and "size" in needs:
            data = self._read(ref)
            size = len(data) + data.count(b"\n") - data.count(b"\r\n")
        return MessageView(
            header_block=block,
            name=filename,
            size=size,
            arrived=datetime.fromtimestamp(mtime, UTC),
            flags=frozenset(LETTER_FLAGS[c] for c in info if c in LETTER_FLAGS),
            keywords=self._keywords_of(ref.folder, info),
            load_bytes=lambda: self._read(ref),
        )

    def _read(self, ref: MessageRef) -> bytes:
        try:
            with open(ref.location, "rb") as f:
                return f.read()
        except FileNotFoundError:
            moved = self._find(ref)
            if moved is None:
                raise
            ref.location = moved
            with open(moved, "rb") as f:
                return f.read()

    # -- keywords (Dovecot's dovecot-keywords file: "N name", letter a+N) ------------------

    def _keyword_table(self, folder: str) -> dict[int, str]:
        table: dict[int, str] = {}
        try:
            with open(os.path.join(self.folder_dir(folder), "dovecot-keywords")) as f:
                for line in f:
                    num, _, name = line.rstrip("\n").partition(" ")
                    if num.isdigit() and name:
                        table[int(num)] = name
        except OSError:
            pass
        return table

    def _keywords_of(self, folder: str, info: str) -> frozenset[str]:
        letters = [c for c in info if "a" <= c <= "z"]
        if not letters:
            return frozenset()
        table = self._keyword_table(folder)
        return frozenset(table[ord(c) - 97] for c in letters if ord(c) - 97 in table)

    def _keyword_letters(self, folder: str, words: frozenset[str], create: bool) -> str:
        table = self._keyword_table(folder)
        by_name = {v: k for k, v in table.items()}
        missing = [w for w in sorted(words) if w not in by_name]
        if missing and create:
            free = [i for i in range(26) if i not in table]
            if len(free) < len(missing):
                raise FolderError(f"folder {folder!r} already has 26 keywords, Maildir's limit")
            for word, num in zip(missing, free, strict=False):
                table[num] = word
                by_name[word] = num
            path = os.path.join(self.folder_dir(folder), "dovecot-keywords")
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.writelines(f"{num} {name}\n" for num, name in sorted(table.items()))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return "".join(chr(97 + by_name[w]) for w in words if w in by_name)

    def _translate_keywords(self, folder: str, dest: str, info: str) -> str:
        """Keyword letters index a per-folder table: re-map them for the destination."""
        words = self._keywords_of(folder, info)
        letters = self._keyword_letters(dest, words, create=True) if words else ""
        flags = "".join(c for c in info if not "a" <= c <= "z")
        return "".join(sorted(flags + letters))

    # -- changing -----------------------------------------------------------------------

    def _resolve(self, ref: MessageRef) -> str:
        if os.path.exists(ref.location):
            return ref.location
        moved = self._find(ref)
        if moved is None:
            raise FileNotFoundError(errno.ENOENT, "message vanished", ref.location)
        ref.location = moved
        return moved

    def _uniques(self, folder_dir: str) -> dict[str, str]:
        """unique name -> path, for every message file in a folder."""
        found: dict[str, str] = {}
        for sub in ("cur", "new"):
            with contextlib.suppress(OSError), os.scandir(os.path.join(folder_dir, sub)) as it:
                for entry in it:
                    found.setdefault(split_name(entry.name)[0], entry.path)
        return found

    def _place(self, ref: MessageRef, dest: str, unique: str, present: dict[str, str]) -> str:
        """Link (or copy) the message into folder ``dest`` as ``unique``; return the new path.

        ``present`` lists the destination's messages: if ``unique`` is already there (an
        earlier run put it there before a crash, perhaps with other flags), that file is
        the result and nothing is added.
        """
        if unique in present:
            return present[unique]
        dest_dir = self.folder_dir(dest)
        src = self._resolve(ref)
        sub = os.path.basename(os.path.dirname(src))
        _, info = split_name(os.path.basename(src))
        if any("a" <= c <= "z" for c in info):
            info = self._translate_keywords(ref.folder, dest, info)
        name = f"{unique}:2,{info}" if sub == "cur" else unique
        target = os.path.join(dest_dir, sub, name)
        try:
            os.link(src, target)
        except FileExistsError:
            if not os.path.samefile(src, target):
                return self._place(ref, dest, new_unique(), present)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            with open(src, "rb") as f:
                data = f.read()
            written = write_message(dest_dir, data, info if sub == "cur" else "", unique)
            return os.path.join(dest_dir, sub, f"{written}:2,{info}" if sub == "cur" else written)
        failpoints.reached()
        return target

    def _batch(self, refs: list[MessageRef], one: Callable[[MessageRef], None]) -> list[Result]:
        results: list[Result] = []
        for ref in refs:
            try:
                one(ref)
                results.append(None)
            except (OSError, SourceError) as exc:
                text = getattr(exc, "strerror", None) or str(exc)
                results.append(f"{text} ({ref.location})")
        return results

    def _sync(self, dirs: set[str]) -> None:
        for path in sorted(dirs):
            with contextlib.suppress(FileNotFoundError):
                fsync_dir(path)

    def move(self, refs: list[MessageRef], dest: str) -> list[Result]:
        if not refs:
            return []
        try:
            dest_dir = self.ensure_folder(dest)
        except FolderError as exc:
            return [str(exc)] * len(refs)
        if os.path.realpath(dest_dir) == os.path.realpath(self.folder_dir(refs[0].folder)):
            return [None] * len(refs)
        placed: list[tuple[MessageRef, str, str]] = []
        present = self._uniques(dest_dir)

        def link(ref: MessageRef) -> None:
            placed.append((ref, self._resolve(ref), self._place(ref, dest, ref.uid, present)))

        results = self._batch(refs, link)
        self._sync({os.path.dirname(new) for _, _, new in placed})
        failpoints.reached()
        for ref, old, new in placed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)
            ref.location = new
            ref.arrived_in[dest] = (ref.uid, VALIDITY)
            failpoints.reached()
        self._sync({os.path.dirname(old) for _, old, _ in placed})
        return results

    def copy(self, refs: list[MessageRef], dest: str) -> list[Result]:
        if not refs:
            return []
        try:
            present = self._uniques(self.ensure_folder(dest))
        except FolderError as exc:
            return [str(exc)] * len(refs)
        touched: set[str] = set()

        def one(ref: MessageRef) -> None:
            # The copy's name derives from the original and the destination, so a copy
            # repeated after a crash finds the first one instead of making another.
            digest = hashlib.sha1(f"{ref.uid}\0{dest}".encode()).hexdigest()[:10]  # noqa: S324
            unique = f"{ref.uid.split(',')[0]}.C{digest}"
            new = self._place(ref, dest, unique, present)
            touched.add(os.path.dirname(new))
            ref.arrived_in[dest] = (split_name(os.path.basename(new))[0], VALIDITY)

        results = self._batch(refs, one)
        self._sync(touched)
        return results

    def delete(self, refs: list[MessageRef], expunge: bool) -> list[Result]:
        if not refs:
            return []
        if not expunge:
            if refs[0].folder == self.trash:
                return [None] * len(refs)
            return self.move(refs, self.trash)
        touched: set[str] = set()

        def one(ref: MessageRef) -> None:
            path = self._resolve(ref)
            os.unlink(path)
            touched.add(os.path.dirname(path))
            failpoints.reached()

        results = self._batch(refs, one)
        self._sync(touched)
        return results

    def set_flags(
        self, refs: list[MessageRef], add: frozenset[str], remove: frozenset[str], keywords: bool
    ) -> list[Result]:
        if not refs:
            return []
        folder = refs[0].folder
        try:
            if keywords:
                add_letters = set(self._keyword_letters(folder, add, create=True))
                remove_letters = set(self._keyword_letters(folder, remove, create=False))
            else:
                add_letters = {FLAG_LETTERS[f] for f in add}
                remove_letters = {FLAG_LETTERS[f] for f in remove}
        except (OSError, FolderError) as exc:
            return [str(exc)] * len(refs)
        touched: set[str] = set()

        def one(ref: MessageRef) -> None:
            src = self._resolve(ref)
            unique, info = split_name(os.path.basename(src))
            letters = "".join(sorted((set(info) | add_letters) - remove_letters))
            target = os.path.join(self.folder_dir(folder), "cur", f"{unique}:2,{letters}")
            if target == src:
                return
            os.rename(src, target)
            ref.location = target
            touched.update({os.path.dirname(src), os.path.dirname(target)})
            failpoints.reached()

        results = self._batch(refs, one)
        self._sync(touched)
        return results

    def close(self) -> None:
        return None

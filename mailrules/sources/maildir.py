"""Local Maildir: folders are directories, messages are files, every change is a rename.

A message's uid is the unique part of its file name (before ``:2,``), which stays the
same when flags change. Moves link the file into the destination first, fsync that
directory, and only then unlink the source: a crash at any point leaves the message
in its old folder, its new one, or both, never neither. Flag changes link the file
under its new name, then unlink the old one. New files are written in ``tmp/``,
fsynced, then linked into ``new/`` or ``cur/``.

Folder layouts: ``maildir++`` (Dovecot's and Courier's default: ``Work/Clients`` is
``.Work.Clients``) and ``fs`` (``Work/Clients`` is ``Work/Clients/``, as mbsync's
``SubFolders Verbatim``). Non-ASCII names are stored in modified UTF-7, as Dovecot does.

A name is never trusted alone: two different messages can share a unique name (mail
imported by a tool that numbers per folder, or copied with ``cp``). Before a file with
the wanted name is taken as "the earlier copy", its content is compared (size, then
SHA-256); a different message there makes the new one take another name. Nothing is
ever renamed onto an existing file: links fail on an existing name, and renames are
link-then-unlink. Two different files with one unique name in a folder (``new/X`` and
``cur/X:2,S``) are both listed: the second under ``X.X<12 hex digits of its SHA-256>``,
the name it takes when its flags change. Only regular files are read (``O_NOFOLLOW``,
then ``fstat``): a FIFO, device or symlink in ``new/`` or ``cur/`` is skipped with a
warning, and a folder that is a link to somewhere outside the tree is refused.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from mailrules import failpoints
from mailrules.errors import FolderError, SourceError
from mailrules.message import MAX_HEADER_BYTES, MessageView, split_header_block
from mailrules.sources import mutf7
from mailrules.sources.base import Known, Listing, MessageRef, Permanent, Result, Scan

log = logging.getLogger(__name__)

VALIDITY = "maildir"
FLAG_LETTERS = {"draft": "D", "flagged": "F", "answered": "R", "seen": "S", "deleted": "T"}
LETTER_FLAGS = {v: k for k, v in FLAG_LETTERS.items()}
_SIZE_FIELD = re.compile(r",([SW])=(\d+)")
_counter = 0
_counter_lock = threading.Lock()
SUBDIRS = ("cur", "new", "tmp")
# Files a Maildir keeps next to its folders: in the fs layout a folder must not take
# their names (Dovecot's, Courier's, and the Maildir++ marker).
_OWN_FILES = re.compile(r"(?:dovecot|courier)[-.a-z0-9]*|maildirfolder|subscriptions", re.I)
NAME_MAX = 255  # bytes in one file or directory name, on every common filesystem
COMPONENT_MAX = 120  # bytes a template value may take in a folder name, as stored
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_READ_CHUNK = 64 * 1024
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class FolderNameError(FolderError):
    """A folder name that can never exist in this Maildir: retrying cannot help."""


class NotRegularFile(OSError):
    """A directory entry that is not a plain file (a FIFO, device or symlink)."""


def _open_fd(path: str) -> tuple[int, os.stat_result]:
    """A read descriptor on a regular file, and its stat: never through a symlink, never
    blocking on a FIFO (O_NOFOLLOW, O_NONBLOCK, then fstat)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, "a symbolic link, not followed", path) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_regular(path: str) -> BinaryIO:
    """Open a message file for reading: never through a symlink, never blocking on a FIFO."""
    return os.fdopen(_open_fd(path)[0], "rb")


def read_head(path: str) -> tuple[bytes, float]:
    """The header block of a message file and its modification time, in one open."""
    fd, st = _open_fd(path)
    try:
        data = os.read(fd, _READ_CHUNK)
        while len(data) < MAX_HEADER_BYTES:
            block, body_at = split_header_block(data)
            if body_at is not None:
                return block, st.st_mtime
            more = os.read(fd, max(_READ_CHUNK, len(data)))
            if not more:
                return data, st.st_mtime
            data += more
    finally:
        os.close(fd)
    return split_header_block(data[:MAX_HEADER_BYTES])[0], st.st_mtime


def read_file(path: str) -> bytes:
    with open_regular(path) as f:
        return f.read()


def _digest(path: str) -> str:
    with open_regular(path) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def same_content(a: str, b: str) -> bool:
    """Whether two message files hold the same message: the same file, or equal bytes."""
    try:
        sa, sb = os.lstat(a), os.lstat(b)
        if not (stat.S_ISREG(sa.st_mode) and stat.S_ISREG(sb.st_mode)):
            return False
        if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
            return True
        return sa.st_size == sb.st_size and _digest(a) == _digest(b)
    except OSError:
        return False


def _other_names(unique: str, src: str) -> Iterator[str]:
    """Names to try when ``unique`` is taken by another message: first one derived from
    the content (a retry after a crash finds it again), then fresh ones."""
    base, comma, fields = unique.partition(",")
    yield f"{base}.X{_digest(src)[:12]}{comma}{fields}"
    for _ in range(3):
        yield new_unique(os.lstat(src).st_size)


def clean_component(value: str, layout: str) -> str:
    """A template value made safe as (part of) one folder name component.

    ``/`` (and in Maildir++ ``.``) and control characters become ``_``; surrounding
    space is stripped; a value longer than COMPONENT_MAX bytes as stored (modified
    UTF-7) is cut to fit; in the ``fs`` layout a value ``cur``, ``new`` or ``tmp`` gets a
    ``_`` appended, so that it never names a Maildir's own subdirectory, and so does a
    value that names one of the files a Maildir keeps (``dovecot*``, ``courier*``,
    ``maildirfolder``, ``subscriptions``).
    """
    value = _CONTROL.sub("_", value.replace("/", "_"))
    if layout == "maildir++":
        value = value.replace(".", "_")
    value = value.strip()
    if len(value) > COMPONENT_MAX // 8 and len(mutf7.encode(value)) > COMPONENT_MAX:
        keep = min(len(value), COMPONENT_MAX)
        while len(mutf7.encode(value[:keep])) > COMPONENT_MAX:
            keep -= 1
        value = value[:keep].rstrip()
    if layout == "fs" and (value in SUBDIRS or _OWN_FILES.fullmatch(value)):
        value += "_"
    return value if value not in ("", ".", "..") else "_"


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


def write_message(
    folder_dir: str,
    data: bytes,
    info: str = "",
    unique: str | None = None,
    *,
    seen_before: bool = False,
) -> str:
    """Deliver bytes into a Maildir folder: tmp/, fsync, link into new/ or cur/, fsync.

    A message with flags (or ``seen_before``: one that was in a ``cur/``) goes into
    ``cur/``. Returns the unique name. If a file with that name and the same content is
    already there (a retry after a crash), it is kept and nothing is written twice; if
    another message has that name, FileExistsError when ``unique`` was given, else a
    fresh name is taken.
    """
    chosen = unique
    unique = unique or new_unique(len(data))
    in_cur = bool(info) or seen_before
    sub, name = ("cur", f"{unique}:2,{info}") if in_cur else ("new", unique)
    tmp = os.path.join(folder_dir, "tmp", unique)
    final = os.path.join(folder_dir, sub, name)
    fd = _create_tmp(tmp)
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
        if not same_content(tmp, final):  # another message has that name
            os.unlink(tmp)
            if chosen is not None:
                raise
            return write_message(folder_dir, data, info, seen_before=seen_before)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(os.path.join(folder_dir, sub))
    failpoints.reached()
    return unique


def _create_tmp(tmp: str) -> int:
    """Create ``tmp/<unique>``. A file already there is a leftover of an earlier attempt
    at this very message that was killed before it finished: it is replaced."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(tmp, flags, 0o600)
    except FileExistsError:
        if stat.S_ISDIR(os.lstat(tmp).st_mode):
            raise
        log.info("replacing %s, left behind by an interrupted earlier run", tmp)
        os.unlink(tmp)
        return os.open(tmp, flags, 0o600)


class Maildir:
    """A local Maildir tree as a Mailbox."""

    repeated_copy_is_harmless = True  # a copy keeps the unique name; a repeat finds it

    capabilities = frozenset({"move", "copy", "delete", "flags", "keywords"})

    def __init__(self, root: str, layout: str = "maildir++", trash: str = "Trash") -> None:
        self.root = root
        self.layout = layout
        self.trash = trash
        self._inside: set[str] = set()  # folder paths found to stay inside the tree

    # -- folders ------------------------------------------------------------------------

    def clean_component(self, value: str) -> str:
        return clean_component(value, self.layout)

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
            if _CONTROL.search(part):
                return f"folder name {name!r} contains control characters"
            if self.layout == "fs" and part in SUBDIRS:
                return (
                    f"folder name {name!r}: {part!r} is a Maildir's own subdirectory "
                    "(cur, new, tmp), where no mail reader would see the folder; rename it"
                )
            if self.layout == "fs" and _OWN_FILES.fullmatch(part):
                return (
                    f"folder name {name!r}: {part!r} is the name of a file Maildir "
                    "programs keep next to the folders; rename it"
                )
        encoded = [len(mutf7.encode(p).encode()) for p in parts]
        longest = 1 + sum(encoded) + len(parts) - 1 if self.layout == "maildir++" else max(encoded)
        if longest > NAME_MAX:
            return (
                f"folder name {name[:60]!r}... is too long: {longest} bytes on disk, "
                f"at most {NAME_MAX} in one directory name"
            )
        return None

    def folder_dir(self, name: str) -> str:
        if name.upper() == "INBOX":
            return self.root
        problem = self.check_folder_name(name)
        if problem:
            raise FolderNameError(problem)
        parts = [mutf7.encode(p) for p in name.split("/")]
        if self.layout == "maildir++":
            return os.path.join(self.root, "." + ".".join(parts))
        return os.path.join(self.root, *parts)

    def _within_tree(self, name: str, path: str) -> None:
        """Refuse a folder (or its cur/new/tmp) that is a link to outside the tree."""
        if path in self._inside:
            return
        root = os.path.realpath(self.root)
        for sub in ("", *SUBDIRS):
            real = os.path.realpath(os.path.join(path, sub))
            if real != root and not real.startswith(root + os.sep):
                raise FolderError(
                    f"folder {name!r} at {os.path.join(path, sub)} leads outside the Maildir "
                    f"{self.root} (to {real}); links out of the tree are not followed"
                )
        self._inside.add(path)

    def ensure_folder(self, name: str) -> str:
        path = self.folder_dir(name)
        if os.path.isdir(os.path.join(path, "cur")):
            self._within_tree(name, path)
            return path
        self._within_tree(name, path)
        try:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
            self._inside.discard(path)
            self._within_tree(name, path)
            if self.layout == "maildir++" and path != self.root:
                marker = os.path.join(path, "maildirfolder")
                os.close(os.open(marker, _CREATE | os.O_NONBLOCK | os.O_APPEND, 0o600))
            fsync_dir(os.path.dirname(path))
        except OSError as exc:
            # Too long, or not valid on this filesystem. (A file in the folder's place
            # is the user's to remove: that failure is tried again.)
            lasting = exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ)
            error = FolderNameError if lasting else FolderError
            raise error(f"cannot create folder {name!r} at {path}: {exc.strerror}") from None
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
                        and not os.path.islink(os.path.join(self.root, entry))
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
        self._within_tree(folder, path)
        refs: dict[str, MessageRef] = {}
        for sub in ("new", "cur"):
            try:
                with os.scandir(os.path.join(path, sub)) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        if not entry.is_file(follow_symlinks=False):  # d_type: no syscall
                            _skip(entry)
                            continue
                        unique = split_name(entry.name)[0]
                        if unique not in refs:
                            refs[unique] = MessageRef(folder, unique, entry.path)
                        else:
                            _add_namesake(refs, folder, unique, entry.path)
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
        namesake = _NAMESAKE.fullmatch(ref.uid)
        for sub in ("cur", "new"):
            with contextlib.suppress(OSError), os.scandir(os.path.join(path, sub)) as entries:
                for entry in entries:
                    unique = split_name(entry.name)[0]
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    if unique == ref.uid:
                        return entry.path
                    if namesake and unique == namesake[1]:
                        with contextlib.suppress(OSError):
                            if _digest(entry.path)[:12] == namesake[2]:
                                return entry.path
        return None

    def views(
        self, refs: list[MessageRef], needs: frozenset[str]
    ) -> Iterator[tuple[MessageRef, MessageView]]:
        for ref in refs:
            view = self._view_or_skip(ref, needs)
            if view is not None:
                yield ref, view

    def _view_or_skip(self, ref: MessageRef, needs: frozenset[str]) -> MessageView | None:
        """The message's view; None (logged) when it cannot be read: one unreadable file
        never stops the others."""
        try:
            try:
                return self._view(ref, needs)
            except FileNotFoundError:
                moved = self._find(ref)
                if moved is None:
                    log.info("%s: %s vanished before it was read; skipped", ref.folder, ref.uid)
                    return None
                ref.location = moved
                return self._view(ref, needs)
        except NotRegularFile as exc:
            log.warning("%s: skipped %s: %s", ref.folder, ref.location, exc.strerror)
        except OSError as exc:
            log.error("%s: cannot read %s: %s", ref.folder, ref.location, exc.strerror)
        return None

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
            return read_file(ref.location)
        except FileNotFoundError:
            moved = self._find(ref)
            if moved is None:
                raise
            ref.location = moved
            return read_file(moved)

    # -- keywords (Dovecot's dovecot-keywords file: "N name", letter a+N) ------------------

    def _keyword_table(self, folder: str) -> dict[int, str]:
        table: dict[int, str] = {}
        try:
            data = read_file(os.path.join(self.folder_dir(folder), "dovecot-keywords"))
        except OSError:
            return table
        for line in data.decode("utf-8", "replace").splitlines():
            num, _, name = line.partition(" ")
            if num.isdigit() and name:
                table[int(num)] = name
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
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # an earlier run's, with the same pid
            with os.fdopen(os.open(tmp, _CREATE | os.O_EXCL, 0o600), "w") as f:
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

        ``present`` lists the destination's messages: if ``unique`` is already there with
        the same content (an earlier run put it there before a crash, perhaps with other
        flags), that file is the result and nothing is added. A different message with
        that name keeps it, and this one takes another name.
        """
        dest_dir = self.folder_dir(dest)
        src = self._resolve(ref)
        sub = os.path.basename(os.path.dirname(src))
        _, info = split_name(os.path.basename(src))
        if any("a" <= c <= "z" for c in info):
            info = self._translate_keywords(ref.folder, dest, info)
        for name in _candidates(unique, src):
            existing = present.get(name)
            if existing is not None:
                if same_content(src, existing):
                    with contextlib.suppress(OSError):  # left by a copy killed half-way
                        os.unlink(os.path.join(dest_dir, "tmp", name))
                    return existing
                continue
            placed = self._put(src, dest_dir, sub, name, info)
            if placed is not None:
                present[name] = placed
                return placed
        raise FolderError(f"no free file name for the message in {dest!r}")  # pragma: no cover

    def _put(self, src: str, dest_dir: str, sub: str, unique: str, info: str) -> str | None:
        """Link src into dest_dir/sub as unique (copy it across filesystems); the new path,
        or None when another message already has that name."""
        target = os.path.join(dest_dir, sub, f"{unique}:2,{info}" if sub == "cur" else unique)
        try:
            os.link(src, target, follow_symlinks=False)
        except FileExistsError:
            return target if same_content(src, target) else None
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            try:
                data = read_file(src)
                write_message(dest_dir, data, info, unique, seen_before=sub == "cur")
            except FileExistsError:
                return None
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
                results.append(_failure(exc, f"{text} ({ref.location})"))
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
            return [_failure(exc, str(exc))] * len(refs)
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
            ref.arrived_in[dest] = (split_name(os.path.basename(new))[0], VALIDITY)
            failpoints.reached()
        self._sync({os.path.dirname(old) for _, old, _ in placed})
        return results

    def copy(self, refs: list[MessageRef], dest: str) -> list[Result]:
        if not refs:
            return []
        try:
            dest_dir = self.ensure_folder(dest)
        except FolderError as exc:
            return [_failure(exc, str(exc))] * len(refs)
        source = refs[0].folder
        if os.path.realpath(dest_dir) == os.path.realpath(self.folder_dir(source)):
            # A copy next to itself would be new mail on the next run, copied again.
            log.warning("copy into %s, the folder the message is in: nothing to do", dest)
            return [None] * len(refs)
        present = self._uniques(dest_dir)
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
        cur = os.path.join(self.folder_dir(folder), "cur")

        def one(ref: MessageRef) -> None:
            src = self._resolve(ref)
            unique, info = split_name(os.path.basename(src))
            letters = "".join(sorted((set(info) | add_letters) - remove_letters))
            if os.path.join(cur, f"{unique}:2,{letters}") == src:
                return
            if _NAMESAKE.fullmatch(ref.uid) and unique != ref.uid:
                unique = ref.uid  # the file takes the distinct name its ref already has
            target = _rename_noreplace(src, cur, unique, letters)
            ref.location = target
            ref.uid = split_name(os.path.basename(target))[0]
            touched.update({os.path.dirname(src), cur})
            failpoints.reached()

        results = self._batch(refs, one)
        self._sync(touched)
        return results

    def close(self) -> None:
        return None


# The ref of a second file with a unique name already listed: the name plus the start of
# its content's SHA-256, as _other_names would rename it (see _add_namesake).
_NAMESAKE = re.compile(r"(.+)\.X([0-9a-f]{12})")


def _add_namesake(refs: dict[str, MessageRef], folder: str, unique: str, path: str) -> None:
    """A second file whose unique name is already listed (``new/X`` and ``cur/X:2,S``):
    another message, or the same one linked twice. Another message is listed under a ref
    of its own, derived from its content so that it is the same on every run; the file
    listed first (new/ before cur/, then by name) keeps the plain name. This reads the
    file, so it costs something only when names collide."""
    first = refs[unique]
    if same_content(first.location, path):
        return
    keep, other = first.location, path
    if os.path.dirname(keep) == os.path.dirname(other) and other < keep:  # same sub: by name
        keep, other = other, keep
        refs[unique] = MessageRef(folder, unique, keep)
    try:
        uid = f"{unique}.X{_digest(other)[:12]}"
    except OSError:
        return  # vanished or unreadable now: listed again on the next run
    if uid not in refs:
        refs[uid] = MessageRef(folder, uid, other)
        log.info("%s: %s and %s share a unique name; the second is %s", folder, keep, other, uid)


def _candidates(unique: str, src: str) -> Iterator[str]:
    yield unique
    yield from _other_names(unique, src)


def _rename_noreplace(src: str, cur: str, unique: str, letters: str) -> str:
    """Give a message new flags: link under the new name, then unlink the old one.

    A link never replaces a file, so another message that already has the wanted name
    keeps it and this one takes another unique name; the same message there (a rename
    killed between the two steps) is simply the result.
    """
    for name in _candidates(unique, src):
        target = os.path.join(cur, f"{name}:2,{letters}")
        try:
            os.link(src, target, follow_symlinks=False)
        except FileExistsError:
            if not same_content(src, target):
                continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV):
                raise
            if os.path.lexists(target):  # no hard links here: check, then rename
                continue
            os.rename(src, target)
            return target
        os.unlink(src)
        return target
    raise FileExistsError(errno.EEXIST, "no free file name for the message", src)


def link_new(tmp: str, new_dir: str, unique: str) -> str:
    """Put a written and fsynced ``tmp`` file into ``new_dir`` as ``unique`` (or, when
    another message has that name, as a name derived from its content, then a fresh
    one); unlink ``tmp``; return the name used. Never replaces a file: the same message
    already there (a retry after a crash) is the result and nothing is added."""
    try:
        for name in _candidates(unique, tmp):
            target = os.path.join(new_dir, name)
            try:
                os.link(tmp, target, follow_symlinks=False)
            except FileExistsError:
                if not same_content(tmp, target):
                    continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV):
                    raise
                if os.path.lexists(target):  # no hard links here: check, then rename
                    if same_content(tmp, target):
                        return name
                    continue
                os.rename(tmp, target)
            return name
        raise FileExistsError(errno.EEXIST, "no free file name for the message", tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _failure(exc: Exception, text: str) -> Result:
    """A failed action's result; permanent when retrying can never help."""
    return Permanent(text) if isinstance(exc, FolderNameError) else text


def _skip(entry: os.DirEntry[str]) -> None:
    if entry.is_symlink():
        what = "a symbolic link, not followed"
    elif entry.is_dir(follow_symlinks=False):
        what = "a directory"
    else:
        what = "not a regular file (a FIFO, socket or device)"
    log.warning("skipped %s: %s", entry.path, what)

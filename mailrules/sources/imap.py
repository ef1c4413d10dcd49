"""IMAP accounts: incremental by UID, header-only fetches, batched actions that lose nothing.

New mail (RFC 3501, RFC 9051): ``STATUS (UIDNEXT UIDVALIDITY)`` tells whether anything
arrived since the last handled UID; only then is the folder selected and
``UID SEARCH UID last+1:*`` asked for the new UIDs (dropping the UID <= last that ``n:*``
always returns). A poll with nothing new sends no SELECT, SEARCH or FETCH. Headers
come in bulk, chunked, for just the fields the rules read; bodies only when a rule
needs one.

Actions are batched per destination as UID sets. ``UID MOVE`` (RFC 6851) where offered;
otherwise ``UID COPY``, then ``UID STORE +FLAGS.SILENT (\\Deleted)``, then
``UID EXPUNGE`` of exactly those UIDs (RFC 4315). Without UIDPLUS the messages keep
``\\Deleted`` and a warning says so: mailrules never sends a plain ``EXPUNGE``, which
would also remove what other clients marked deleted. Each step only starts when the
previous one succeeded, so a dropped connection leaves a message in its old folder,
its new one, or both.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import imaplib
import json
import logging
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientError, LoginError

from mailrules import failpoints
from mailrules.auth import SecretSource
from mailrules.config.model import ImapModel
from mailrules.errors import CredentialError, FolderError, SourceError
from mailrules.interning import Pool
from mailrules.message import MessageView, Summary
from mailrules.secrets import remember_login, remember_oauth
from mailrules.sources.base import Known, MessageRef, Result, Scan
from mailrules.sources.imap_fetch import FetchError, fetch_stream
from mailrules.sources.imap_search import SearchRefused, encode_search, run_search
from mailrules.state import KEY_FIELDS, SEEN_KEEP, message_key
from mailrules.transport.tcp import set_keepalive
from mailrules.transport.tls import TLSError, check_fingerprint, make_context, untrusted
from mailrules.transport.tunnel import Tunnel

if TYPE_CHECKING:
    from mailrules.state import State

T = TypeVar("T")
log = logging.getLogger(__name__)
logging.getLogger("imapclient").setLevel(logging.WARNING)  # its debug log shows protocol data

CHUNK = 500  # UIDs per FETCH
MAX_FETCH_FAILURES = 24  # failed FETCHes one batch may isolate before the account fails
SET_CHARS = 8000  # a UID set's length in one command: well under servers' line limits
FLAG_NAMES = {
    "seen": b"\\Seen",
    "answered": b"\\Answered",
    "flagged": b"\\Flagged",
    "deleted": b"\\Deleted",
    "draft": b"\\Draft",
}
NAME_FLAGS = {v.lower(): k for k, v in FLAG_NAMES.items()}
# Fields every fetch includes: what logs, templates and the audit log show.
BASE_FIELDS = ("FROM", "TO", "CC", "SENDER", "SUBJECT", "DATE", "MESSAGE-ID", "LIST-ID")
_NETWORK_ERRORS = (OSError, imaplib.IMAP4.abort, socket.timeout)


class _TunnelIMAP4(imaplib.IMAP4):
    """imaplib over a tunnel's socket: a real socket, so timeouts and IDLE work."""

    def __init__(self, tunnel: Tunnel) -> None:
        self._tunnel = tunnel
        super().__init__("tunnel", 0)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return self._tunnel.sock


class _TunnelClient(IMAPClient):
    def __init__(self, tunnel: Tunnel, timeout: SocketTimeout) -> None:
        self._tunnel = tunnel
        super().__init__("tunnel", ssl=False, timeout=timeout)

    def _create_IMAP4(self) -> imaplib.IMAP4:  # IMAPClient's hook for making the connection
        return _TunnelIMAP4(self._tunnel)


def server_text(exc: Exception) -> str:
    """What the server said, from an imaplib/IMAPClient error: decoded, not ``b'...'``."""
    text = str(exc)
    match = re.fullmatch(r"""b(['"])(.*)\1""", text, re.DOTALL)
    if match:
        try:
            raw = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(raw, bytes):
            return raw.decode("utf-8", "replace")
    return text


def _runs(uids: list[int]) -> Iterator[tuple[int, int]]:
    """(first, last) of each run of consecutive UIDs, in order."""
    ordered = sorted(set(uids))
    if not ordered:
        return
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid != prev + 1:
            yield start, prev
            start = uid
        prev = uid
    yield start, prev


def _part(first: int, last: int) -> str:
    return f"{first}:{last}" if last > first else str(first)


def uid_set(uids: list[int]) -> str:
    """1,2,3,5 -> '1:3,5': compact sets, since IMAPClient sends every UID."""
    return ",".join(_part(first, last) for first, last in _runs(uids))


def uid_groups(uids: list[int]) -> list[list[int]]:
    """Sorted UIDs in groups whose compact set (uid_set) is at most about SET_CHARS long:
    one command each, as few as the request size cap allows."""
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for first, last in _runs(uids):
        part = len(_part(first, last))
        if current and size + part >= SET_CHARS:
            groups.append(current)
            current, size = [], 0
        current.extend(range(first, last + 1))
        size += part + 1
    if current:
        groups.append(current)
    return groups


def uid_sets(uids: list[int]) -> list[str]:
    """Compact UID sets of at most about SET_CHARS characters, one per command."""
    return [uid_set(group) for group in uid_groups(uids)]


def parse_uid_set(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        a, b = int(low), int(high or low)
        out.extend(range(min(a, b), max(a, b) + 1))
    return out


class ImapMailbox:
    """An IMAP account as a Mailbox. Connects on first use; ``close`` logs out."""

    repeated_copy_is_harmless = False  # every UID COPY makes a new message
    marks_mail_left_alone = True  # see State.ignored_existing and _revalidated
    capabilities = frozenset({"move", "copy", "delete", "flags", "keywords"})
    # A full pass reads and decides 500 messages at a time, and acts (over a second
    # connection) on everything decided meanwhile, up to action_batch messages a round
    # (see runner._Acting): each round costs Dovecot about 1 s at 50k messages whatever
    # its size, and deciding 500 takes about 0.15 s. A decided message is kept as a
    # Summary (about 1 KB with its plan), so a 50k-message pass peaks near 56 MiB.
    batch_size = 500
    action_batch = 6000

    def __init__(self, account: str, settings: ImapModel, trash: str | None, timeout: float):
        self.account = account
        self.settings = settings
        self.timeout = timeout
        self._trash = trash
        self._client: IMAPClient | None = None
        self._tunnel: Tunnel | None = None
        self._caps: set[bytes] = set()
        self._utf8 = False  # UTF8=ACCEPT enabled on this connection
        self._delimiter = "/"
        self._personal = ""  # the personal namespace's prefix (RFC 2342), e.g. Courier's "INBOX."
        self._other_prefixes: tuple[str, ...] = ()  # other users' and shared namespaces
        self._selected: str | None = None
        self._readonly = False  # the selected folder was EXAMINEd (an IDLE watcher's)
        self.uidnext_seen: dict[str, int] = {}  # folder -> UIDNEXT its last scan went up to
        self._warned_uidplus = False
        self._warned_self_copy: set[str] = set()  # folders a copy into itself was skipped in
        self._fetches = 0  # streamed FETCHes so far: their tags
        self._searches = 0  # narrowing SEARCHes so far: their tags
        # (folder, uid, reason) of messages the server could not send (see _fetch_isolating)
        self.unreadable: list[tuple[str, str, str]] = []
        self._partner: ImapMailbox | None = None  # the latest actor() handed out
        self.ready = threading.Event()  # set once open() has ended

    # -- connection -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection from an earlier call is open (it may have gone stale)."""
        return self._client is not None

    @property
    def label(self) -> str:
        if self.settings.tunnel:
            return f"{self.account} (tunnel {self.settings.tunnel[0]})"
        return f"{self.account} ({self.settings.host})"

    def open(self, folder: str | None = None) -> None:
        """Connect and log in now (it happens on first use otherwise), and SELECT ``folder``
        if given; SourceError if not. ``ready`` is set when it has ended, either way."""
        try:
            self._conn()
            if folder is not None:
                self._select(folder, write=True)
        finally:
            self.ready.set()

    def _conn(self) -> IMAPClient:
        if self._client is None:
            try:
                self._client = self._connect()
            except SourceError:
                self.close()
                raise
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise untrusted(self.label, exc, self.settings.ca_file) from None
            except (*_NETWORK_ERRORS, ssl.SSLError, IMAPClientError) as exc:
                self.close()
                raise SourceError(f"{self.label}: cannot connect: {exc}") from None
        return self._client

    def _connect(self) -> IMAPClient:
        s = self.settings
        timeout = SocketTimeout(self.timeout, self.timeout)
        # Loading the system's CA store costs about 50 ms: only where TLS is used.
        tls = not s.tunnel and s.security != "plain"
        context = make_context(s.ca_file, s.fingerprint) if tls else None
        if s.tunnel:
            self._tunnel = Tunnel(list(s.tunnel), self.label)
            client: IMAPClient = _TunnelClient(self._tunnel, timeout)
        elif s.security == "tls":
            client = IMAPClient(
                s.host, s.port or 993, ssl=True, ssl_context=context, timeout=timeout
            )
            check_fingerprint(client.socket(), s.fingerprint)
        else:
            client = IMAPClient(s.host, s.port or 143, ssl=False, timeout=timeout)
        client.normalise_times = False
        preauth = client.welcome.upper().startswith(b"* PREAUTH")
        if preauth and not s.tunnel:
            # An attacker in the path can inject PREAUTH to block the STARTTLS upgrade.
            raise SourceError(
                f"{self.label}: the server greeted with PREAUTH on a network connection; "
                "refusing (PREAUTH is only accepted from a configured tunnel)"
            )
        if not s.tunnel and s.security == "starttls":
            if b"STARTTLS" not in client.capabilities():
                raise TLSError(
                    f"{self.label}: security is starttls but the server does not offer "
                    "STARTTLS; refusing to continue in plaintext"
                )
            assert context is not None
            try:
                client.starttls(context)
            except ssl.SSLCertVerificationError:
                raise
            except (IMAPClientError, ssl.SSLError, OSError) as exc:
                raise TLSError(f"{self.label}: STARTTLS failed ({exc}); refusing") from None
            check_fingerprint(client.socket(), s.fingerprint)
        if not preauth:
            self._login(client)
        self._caps = set(client.capabilities())
        self._utf8 = self._enable_utf8(client)
        self._delimiter = self._find_delimiter(client)
        self._read_namespace(client)
        return client

    def _enable_utf8(self, client: IMAPClient) -> bool:
        """ENABLE UTF8=ACCEPT (RFC 6855) where offered: folder names go as UTF-8 then.

        Both layers must switch together: IMAPClient stops encoding names as modified
        UTF-7 and imaplib sends commands as UTF-8 (its own ENABLE would do the latter)."""
        if b"UTF8=ACCEPT" not in self._caps:
            return False
        try:
            enabled = client.enable("UTF8=ACCEPT")
        except IMAPClientError as exc:
            log.info(
                "%s: ENABLE UTF8=ACCEPT refused (%s); names stay modified UTF-7", self.label, exc
            )
            return False
        if not any(e.upper() == b"UTF8=ACCEPT" for e in enabled):
            return False
        client.folder_encode = False
        client._imap._mode_utf8()
        return True

    def _login(self, client: IMAPClient) -> None:
        s = self.settings
        user = s.username or ""
        try:
            if s.oauth2_token_command:
                token = SecretSource(command=tuple(s.oauth2_token_command)).read(
                    f"{self.account}: oauth2_token_command"
                )
                remember_oauth(user, token)  # XOAUTH2 and OAUTHBEARER: base64 on the wire
                if s.oauth2_mechanism == "oauthbearer":
                    client.oauthbearer_login(user, token)
                else:
                    client.oauth2_login(user, token)
                return
            source = SecretSource.password_of(s)
            password = source.read(f"{self.account}: password from {source.describe()}")
            remember_login(user, password)
            client.login(user, password)
        except CredentialError as exc:
            raise SourceError(str(exc)) from None
        except LoginError as exc:
            reason = server_text(exc)
            reason = reason.replace(user, "…") if user else reason
            raise SourceError(f"{self.label}: login as {user!r} refused: {reason}") from None

    def _find_delimiter(self, client: IMAPClient) -> str:
        try:
            for _flags, delim, _name in client.list_folders("", "INBOX"):
                if delim:
                    return delim.decode() if isinstance(delim, bytes) else delim
        except IMAPClientError:
            pass
        return "/"

    def _read_namespace(self, client: IMAPClient) -> None:
        """NAMESPACE (RFC 2342) where offered: the personal prefix and its separator.

        Courier keeps every folder under ``INBOX.`` (separator ``.``); a name the user
        writes without it goes there (see ``server_name``)."""
        if b"NAMESPACE" not in self._caps:
            return
        try:
            personal, other, shared = self._run("NAMESPACE", client.namespace)
        except (IMAPClientError, ValueError, TypeError) as exc:
            log.info("%s: NAMESPACE failed (%s); names are used as written", self.label, exc)
            return

        def text(value: object) -> str:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

        if personal:
            prefix, sep = personal[0][0], personal[0][1]
            if sep:
                self._delimiter = text(sep)
            self._personal = text(prefix or "")
        self._other_prefixes = tuple(
            text(entry[0]) for entry in (*(other or ()), *(shared or ())) if entry and entry[0]
        )

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.logout()
            except Exception:  # the connection is gone already: still close the socket
                with contextlib.suppress(Exception):
                    self._client.shutdown()
        self._client = None
        self._selected = None
        self._readonly = False
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None

    def _run(self, what: str, fn: Callable[..., T], *args: object) -> T:
        """Call the server; turn a dropped connection into a SourceError for the account."""
        try:
            return fn(*args)
        except _NETWORK_ERRORS as exc:
            self.close()
            raise SourceError(f"{self.label}: connection lost during {what}: {exc}") from None

    # -- folders --------------------------------------------------------------------------

    def server_name(self, folder: str) -> str:
        """A folder as the user writes it ('/' between levels) -> its name on the server.

        Levels are joined with the server's separator, and a name outside every namespace
        goes under the personal one (``Alice`` -> ``INBOX.Alice`` on Courier; ``INBOX/Alice``
        means the same). FolderError if a level holds the separator itself: it would make
        another folder (``Release v1.2`` -> ``Release v1`` / ``2``)."""
        if folder.upper() == "INBOX":
            return "INBOX"
        sep = self._delimiter
        parts = folder.split("/")
        if sep != "/" and any(sep in part for part in parts):
            raise FolderError(
                f"{self.label}: folder {folder!r} cannot be used on this server: it contains "
                f"{sep!r}, the server's folder separator, so it would name another folder; "
                "rename it (levels are separated by '/')"
            )
        name = sep.join(parts)
        prefix = self._personal
        qualified = name.upper().startswith(prefix.upper()) or any(
            name.startswith(other) for other in self._other_prefixes
        )
        return name if qualified else prefix + name

    def user_name(self, name: str, sep: str) -> str:
        """A server's folder name as the user writes it: no personal prefix, '/' levels."""
        prefix = self._personal
        if prefix and name.upper().startswith(prefix.upper()) and len(name) > len(prefix):
            name = name[len(prefix) :]
        return name.replace(sep, "/") if sep != "/" else name

    def clean_component(self, value: str) -> str:
        value = value.replace("/", "_").replace(self._delimiter, "_").strip()
        return value or "_"

    def check_folder_name(self, name: str) -> str | None:
        if any(not part.strip() for part in name.split("/")):
            return f"folder name {name!r} has an empty part"
        return None

    def folders(self) -> list[str]:
        return [name for name, _ in self.folder_details()]

    def folder_details(self) -> list[tuple[str, list[str]]]:
        """(name with '/' separators, special-use and other attributes) for every folder."""
        client = self._conn()
        out = []
        for flags, delim, raw in self._run("LIST", client.list_folders):
            # With UTF8=ACCEPT the names come as UTF-8 bytes; else IMAPClient decoded them.
            name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            sep = delim.decode() if isinstance(delim, bytes) else (delim or "/")
            attrs = [_attribute(f.decode() if isinstance(f, bytes) else str(f)) for f in flags]
            out.append((self.user_name(name, sep), attrs))
        return sorted(out, key=lambda item: (item[0].upper() != "INBOX", item[0]))

    def _trash_folder(self) -> str:
        if self._trash:
            return self._trash
        for name, attrs in self.folder_details():
            if "\\Trash" in attrs:
                self._trash = name
                return name
        self._trash = "Trash"
        return self._trash

    def _select(self, folder: str, fresh: bool = False, write: bool = False) -> dict[bytes, object]:
        """SELECT ``folder`` unless it is selected already (or ``fresh``, or it was only
        EXAMINEd and ``write`` access is needed); its SELECT data, or {}."""
        if self._selected == folder and not fresh and not (write and self._readonly):
            return {}
        return self._open_folder(folder, readonly=False)

    def examine(self, folder: str) -> dict[bytes, object]:
        """EXAMINE ``folder`` (read-only): for a watcher, whose reads stay cheap this way."""
        return self._open_folder(folder, readonly=True)

    def _open_folder(self, folder: str, readonly: bool) -> dict[bytes, object]:
        client = self._conn()
        verb = "EXAMINE" if readonly else "SELECT"
        try:
            info = self._run(verb, client.select_folder, self.server_name(folder), readonly)
        except IMAPClientError as exc:
            raise SourceError(f"{self.label}: cannot open folder {folder!r}: {exc}") from None
        self._selected, self._readonly = folder, readonly
        return info

    def _folder_exists(self, folder: str) -> bool:
        """Whether LIST shows the folder; True when LIST itself fails (nothing is created).

        A refused COPY or MOVE without ``[TRYCREATE]`` is asked about this: RFC 3501 only
        says SHOULD for that code, and Twisted 26 answers a COPY into a missing folder with
        ``BAD Server error: sequence item 2 ...`` (its "No such mailbox" reply fails to be
        built), so the folder would never be created there."""
        client = self._conn()
        try:
            return bool(self._run("LIST", client.list_folders, "", self.server_name(folder)))
        except IMAPClientError:
            return True

    def _create(self, folder: str) -> None:
        client = self._conn()
        name = self.server_name(folder)
        try:
            self._run("CREATE", client.create_folder, name)
        except IMAPClientError as exc:
            if "ALREADYEXISTS" not in str(exc).upper():
                raise FolderError(f"{self.label}: cannot create folder {folder!r}: {exc}") from None
        try:
            self._run("SUBSCRIBE", client.subscribe_folder, name)
        except IMAPClientError:
            log.warning("%s: created %s but could not subscribe to it", self.label, folder)
        log.info("%s: created folder %s", self.label, folder)

    def remember_poll(
        self, state: State, config_path: str, accounts: list[str], folders: list[str]
    ) -> None:
        """After a run that read every watched folder: what a quick poll compares against.

        The folders' cursors are in the state already; the record adds how to connect
        and each folder's name on the server (see ``mailrules.quick_poll``)."""
        from mailrules.quick_poll import QuickRecord, config_digest, server_settings

        digest = config_digest(config_path)
        if digest is None or self._client is None:
            state.drop_quick_poll(self.account)
            return
        settings = server_settings("imap", self.account, self.settings, self.timeout, config_path)
        record = QuickRecord(
            config=digest,
            accounts=json.dumps(sorted(accounts)),
            settings=json.dumps(settings),
            marker=json.dumps({folder: self.server_name(folder) for folder in folders}),
        )
        state.set_quick_poll(self.account, "imap", record)

    def actor(self) -> ImapMailbox:
        """A second connection to this account, to act on one batch while this one reads
        and decides the next (a full pass of many messages; see ``runner``). The caller
        opens it (in its worker), hands it each batch's views (``adopt``) and closes it.
        Until it first acts, a full pass's narrowing SEARCH may share the folder with it."""
        self._partner = ImapMailbox(self.account, self.settings, self._trash, self.timeout)
        return self._partner

    def adopt(self, pairs: list[tuple[MessageRef, MessageView | Summary]]) -> None:
        """Read these messages' bodies (for ``run``, ``deliver`` or a notification) through
        this connection from now on: the one that made the views is busy with the next
        batch."""
        for ref, view in pairs:
            if isinstance(view, MessageView):  # not a Summary: some action reads it
                view.load_bytes = functools.partial(self._body, ref)

    # -- finding new mail -----------------------------------------------------------------

    def scan(
        self,
        folder: str,
        known: Known,
        process_all: bool,
        process_existing: bool,
        narrow: list[object] | None = None,
    ) -> Scan:
        client = self._conn()
        if self._selected == folder:
            # A connection kept from an earlier run: STATUS and SEARCH on the selected folder
            # answer from this session's last view of it (Dovecot does), so sync it first.
            # Much cheaper than a new SELECT of a large folder.
            self._run("NOOP", client.noop)
        try:
            status = self._run(
                "STATUS",
                client.folder_status,
                self.server_name(folder),
                [b"UIDNEXT", b"UIDVALIDITY"],
            )
        except IMAPClientError as exc:
            if folder.upper() == "INBOX":
                raise SourceError(f"{self.label}: cannot read INBOX: {exc}") from None
            log.warning("%s: folder %s cannot be read (%s); nothing to do", self.label, folder, exc)
            return Scan(known.validity or "", [])
        if not status.get(b"UIDVALIDITY"):
            # 0 is no UIDVALIDITY (RFC 3501: nz-number). Dovecot answers it for a Maildir no
            # session has opened yet; a SELECT makes it assign the real one.
            self._selected = None
            status = self._select(folder, fresh=True)
        validity = str(status[b"UIDVALIDITY"])
        top = int(status[b"UIDNEXT"]) - 1  # the highest UID the folder can hold now
        self.uidnext_seen[folder] = top + 1
        first = known.validity != validity
        last = known.last_uid
        if not process_all and not first and last is not None and top <= last:
            return Scan(validity, [], cursor=last)
        if first and known.validity is None and not process_existing and not process_all:
            note = (
                f"{folder}: first run, mail already there recorded as seen (up to UID "
                f"{top}), none acted on (use --all or existing: process to apply rules)"
            )
            return Scan(validity, [], first=True, cursor=top, note=note)
        self._select(folder)  # if it was selected already, the NOOP above synced its view
        note = None
        if process_all or (first and known.validity is None):
            uids = self._every(narrow)
        elif not first and last is None:
            # A first pass over the existing mail that was stopped (or killed) part way:
            # what it recorded is done; the rest is processed now.
            seen = known.seen(validity)
            uids = [u for u in self._every(narrow) if str(u) not in seen]
        elif first:
            uids = self._revalidated(known, narrow)
            note = (
                f"{folder}: the server reset UIDVALIDITY ({known.validity} -> {validity}); "
                f"state rebuilt, {len(uids)} unhandled messages will be processed"
            )
        else:
            assert last is not None
            uids = [u for u in self._search(["UID", f"{last + 1}:*"]) if u > last]
            seen = known.seen(validity)
            uids = [u for u in uids if str(u) not in seen]
        cursor = max([top, *uids]) if uids or top >= 0 else None
        refs = [MessageRef(folder, u, u) for u in map(str, sorted(uids))]
        return Scan(validity, refs, first=first, cursor=cursor, note=note)

    def _every(self, narrow: list[object] | None) -> list[int]:
        """Every message some rule may act on: the narrowing SEARCH's, or all.

        Without UIDPLUS, messages marked ``\\Deleted`` are left out: the originals of what
        mailrules moved stay so marked there (nothing may expunge just them), and a later
        full pass must not copy them again. With UIDPLUS they are kept: a pass that was
        cut between STORE and UID EXPUNGE is finished by the next one."""
        skip_deleted = b"UIDPLUS" not in self._caps
        uids = None
        if narrow and self.settings.server_search:
            uids = self._narrowed_shared(["UNDELETED", *narrow] if skip_deleted else narrow)
        return self._search(["UNDELETED" if skip_deleted else "ALL"]) if uids is None else uids

    def _search(self, criteria: list[str]) -> list[int]:
        client = self._conn()
        try:
            return [int(u) for u in self._run("SEARCH", client.search, criteria)]
        except IMAPClientError as exc:
            raise SourceError(f"{self.label}: SEARCH failed: {exc}") from None

    def _narrowed_shared(self, criteria: list[object]) -> list[int] | None:
        """The narrowing SEARCH, its upper half of UIDs searched by the actor's connection
        at the same time where one is open (see ``actor``): without a header index the
        server reads every message for it, the longest wait of a first pass, and two
        sessions read in parallel. Each half is exactly ``UID lo:hi`` of the same SEARCH,
        so together they give what one SEARCH would."""
        partner, self._partner = self._partner, None  # from here on it acts, in its worker
        if partner is None or not partner.ready.wait(self.timeout) or not partner.connected:
            return self._narrowed(criteria)
        every = self._search(["ALL"])  # the index alone: 40 ms at 50k messages
        if len(every) < 2:
            return self._narrowed(criteria)
        middle = sorted(every)[len(every) // 2]
        upper: list[list[int] | None] = [None]
        helper = threading.Thread(
            target=lambda: upper.__setitem__(
                0, partner._narrowed(["UID", f"{middle}:*", *criteria], quiet=True)
            ),
            name="mailrules-search",
        )
        helper.start()
        try:
            lower = self._narrowed(["UID", f"1:{middle - 1}", *criteria])
        finally:
            helper.join()
        if lower is None or upper[0] is None:
            return lower if lower is None else self._narrowed(criteria)
        return sorted(set(lower) | {u for u in upper[0] if u >= middle})

    def _narrowed(self, criteria: list[object], quiet: bool = False) -> list[int] | None:
        """UIDs the server says may match; None if the server refused to search that.

        The command's bytes are built here (see imap_search): nested groups, literals and
        LITERAL+ exactly as the server can take them."""
        client = self._conn()
        self._searches += 1
        segments = encode_search(
            b"MS%d" % self._searches, criteria, utf8_mode=self._utf8, capabilities=self._caps
        )
        try:
            return self._run("SEARCH", run_search, client._imap, segments)
        except SearchRefused as exc:
            if not quiet:
                log.warning("%s: the server refused the narrowing SEARCH (%s); deciding every "
                            "message here instead", self.label, exc.answer)  # fmt: skip
            return None
        except FetchError as exc:
            self.close()
            if quiet:  # the helper's connection: the caller searches on its own
                return None
            raise SourceError(f"{self.label}: SEARCH failed: {exc}") from None
        except SourceError:
            if quiet:
                return None
            raise

    def _revalidated(self, known: Known, narrow: list[object] | None) -> list[int]:
        """After a UIDVALIDITY reset: every message mailrules has not handled.

        The new UIDs say nothing, so a message is known by its Message-ID, or where it has
        none by a digest of its header fields (``state.message_key``); the state keeps
        them across resets for ``SEEN_KEEP``. The messages are those a full pass would
        look at (the narrowing SEARCH, without ``\\Deleted`` ones when there is no
        UIDPLUS), and no date decides what is new: Mailutils 3.15 resets with nearly
        every new message and gives a Maildir message its Date header as INTERNALDATE.
        Dates are used only where the state cannot know: messages dated before the
        ``SEEN_KEEP`` it remembers handled ones for, and, where the mail found at first
        contact was left alone (``existing: ignore``), messages dated before that contact
        (less ten minutes of clock difference), are left alone."""
        candidates = self._every(narrow)
        first_seen = known.baseline_at or 0.0
        floor = time.time() - SEEN_KEEP if first_seen < time.time() - SEEN_KEEP else None
        if known.ignored_existing():
            floor = max(floor or 0.0, first_seen - 600)
        if floor is not None and candidates:
            dates = self._fetch(candidates, [b"INTERNALDATE"])
            candidates = [
                uid
                for uid, data in dates.items()
                if not isinstance(arrived := data.get(b"INTERNALDATE"), datetime)
                or arrived.timestamp() >= floor
            ]
        handled = known.seen_message_ids()
        fields = " ".join(f.upper() for f in (*KEY_FIELDS, "message-id"))
        out = []
        for uid, data in self._fetch(
            sorted(candidates), [f"BODY.PEEK[HEADER.FIELDS ({fields})]".encode()]
        ).items():
            if message_key(MessageView(header_block=_header_bytes(data))) not in handled:
                out.append(uid)
        return out

    def _fetch(self, uids: list[int], items: list[bytes]) -> dict[int, dict[bytes, object]]:
        client = self._conn()
        out: dict[int, dict[bytes, object]] = {}
        for start in range(0, len(uids), CHUNK):
            chunk = uids[start : start + CHUNK]
            try:
                out.update(self._run("FETCH", client.fetch, chunk, items))
            except IMAPClientError as exc:
                raise SourceError(f"{self.label}: FETCH failed: {exc}") from None
        return out

    def views(
        self, refs: list[MessageRef], needs: frozenset[str]
    ) -> Iterator[tuple[MessageRef, MessageView]]:
        """Header views, streamed: the rules decide on each while the server sends the rest.

        When a rule reads bodies, every header is read first, since a body is fetched on
        the same connection."""
        if not refs:
            return
        folder = refs[0].folder
        self._select(folder)
        headers = sorted({*BASE_FIELDS, *(n[7:].upper() for n in needs if n.startswith("header:"))})
        items = f"UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS ({' '.join(headers)})]"
        by_uid = {int(r.uid): r for r in refs}
        stream = self._fetch_isolating(folder, sorted(by_uid), items)
        if needs & {"body", "raw"}:
            stream = iter(list(stream))
        got: set[int] = set()
        for uid, item in stream:
            ref = by_uid.get(uid)
            if ref is None or uid in got:
                continue
            got.add(uid)
            yield ref, self._view(ref, uid, item)
        for uid in sorted(set(by_uid) - got):
            log.info("%s/%s: UID %d vanished before it was read", self.account, folder, uid)

    def _fetch_isolating(
        self, folder: str, uids: list[int], items: str
    ) -> Iterator[tuple[int, dict[bytes, object]]]:
        """``_fetch_stream``, but one message the server cannot send does not stop the rest.

        Twisted's server drops the connection while sending the header fields of a message
        with a raw 8-bit header; every run would stop there. When a FETCH fails part way,
        this reconnects and splits what is left in halves until the one message is found;
        that one is read whole (``BODY.PEEK[]``, its header taken from it) or, if even that
        fails, skipped with a logged reason and listed in ``unreadable`` (the runner
        retries it on later runs, a bounded number of times). A server that cannot be
        reached again, or that keeps failing, fails the account as before."""
        pending = [uids]
        failures = 0
        while pending:
            group = pending.pop(0)
            got: set[int] = set()
            try:
                for uid, item in self._fetch_stream(group, items):
                    got.add(uid)
                    yield uid, item
                continue
            except SourceError as exc:
                failures += 1
                if failures > MAX_FETCH_FAILURES:
                    raise
                reason = str(exc).removeprefix(f"{self.label}: ")
            rest = [uid for uid in group if uid not in got]
            self._select(folder)  # reconnects: the failed FETCH closed the connection
            if len(rest) > 1:
                middle = len(rest) // 2
                pending[:0] = [rest[:middle], rest[middle:]]
            elif rest:
                whole = self._fetch_whole(folder, rest[0], reason)
                if whole is not None:
                    yield rest[0], whole

    def _fetch_whole(self, folder: str, uid: int, reason: str) -> dict[bytes, object] | None:
        """One message the server could not send the header fields of, read whole."""
        items = "UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[]"
        try:
            for got, item in list(self._fetch_stream([uid], items)):  # all of it: the tagged OK
                body = item.pop(b"BODY[]", None)
                if got == uid and isinstance(body, bytes):
                    log.warning(
                        "%s/%s: UID %d: reading its header fields failed (%s); read it whole",
                        self.account, folder, uid, reason,
                    )  # fmt: skip
                    item[b"BODY[HEADER]"] = _header_of(body)
                    return item
            why = "the server sent no body"
        except SourceError as exc:
            why = str(exc).removeprefix(f"{self.label}: ")
            self._select(folder)  # reconnect for the rest
        log.warning(
            "%s/%s: UID %d skipped: the server cannot send it (%s; then %s); it is tried "
            "again on later runs",
            self.account, folder, uid, reason, why,
        )  # fmt: skip
        self.unreadable.append((folder, str(uid), f"{reason}; then {why}"))
        return None

    def _fetch_stream(
        self, uids: list[int], items: str
    ) -> Iterator[tuple[int, dict[bytes, object]]]:
        """FETCH responses as they arrive (see imap_fetch); a failure drops the connection."""
        client = self._conn()
        self._fetches += 1
        finished = False
        try:
            yield from fetch_stream(client._imap, uid_sets(uids), items, b"MR%d." % self._fetches)
            finished = True
        except FetchError as exc:
            raise SourceError(f"{self.label}: FETCH failed: {exc}") from None
        except _NETWORK_ERRORS as exc:
            raise SourceError(f"{self.label}: connection lost during FETCH: {exc}") from None
        finally:
            if not finished:  # responses may be left unread: the connection is unusable
                self.close()

    def _view(self, ref: MessageRef, uid: int, item: dict[bytes, object]) -> MessageView:
        raw_flags = [f if isinstance(f, bytes) else str(f).encode() for f in item.get(b"FLAGS", ())]  # type: ignore[union-attr]
        arrived = item.get(b"INTERNALDATE")
        size = item.get(b"RFC822.SIZE")
        return MessageView(
            header_block=_header_bytes(item),
            name=f"UID {uid}",
            size=size if isinstance(size, int) else None,
            arrived=arrived if isinstance(arrived, datetime) else None,
            flags=_shared(
                frozenset(NAME_FLAGS[f.lower()] for f in raw_flags if f.lower() in NAME_FLAGS)
            ),
            keywords=_shared(
                frozenset(
                    f.decode("utf-8", "replace") for f in raw_flags if not f.startswith(b"\\")
                )
            ),
            load_bytes=functools.partial(self._body, ref),
        )

    def _body(self, ref: MessageRef) -> bytes:
        folder, uid = ref.folder, ref.location
        if ref.moved_to is not None:
            if ref.moved_to not in ref.arrived_in:
                raise SourceError(
                    f"{self.label}: {ref.folder} UID {ref.location} was moved and the server did "
                    "not say where (no UIDPLUS); put 'run' before 'move' in the rule"
                )
            folder, uid = ref.moved_to, ref.arrived_in[ref.moved_to][0]
        self._select(folder)
        item = self._fetch([int(uid)], [b"BODY.PEEK[]"]).get(int(uid), {})
        body = item.get(b"BODY[]")
        if not isinstance(body, bytes):
            raise SourceError(f"{self.label}: {folder} UID {uid} has no body")
        return body

    # -- actions ----------------------------------------------------------------------------

    def _chunks(self, refs: list[MessageRef]) -> Iterator[tuple[list[MessageRef], str]]:
        """UID sets for one command each, as few as the request size cap allows.

        On Dovecot every MOVE or EXPUNGE costs time in proportion to the folder's size, so
        a destination's messages go in one command when the set fits in SET_CHARS.
        """
        by_uid: dict[int, list[MessageRef]] = {}
        for ref in refs:
            by_uid.setdefault(int(ref.location), []).append(ref)
        for group in uid_groups(list(by_uid)):
            yield [ref for uid in group for ref in by_uid[uid]], uid_set(group)

    def _each_chunk(
        self, refs: list[MessageRef], act: Callable[[list[MessageRef], str], Result]
    ) -> list[Result]:
        """Run ``act`` once per UID set; one result per message, in the order given."""
        outcome: dict[int, Result] = {}
        for chunk, uids in self._chunks(refs):
            result = act(chunk, uids)
            outcome.update((id(ref), result) for ref in chunk)
        return [outcome[id(ref)] for ref in refs]

    def _uid_command(self, name: str, *args: object) -> None:
        client = self._conn()
        typ, data = self._run(name, client._imap.uid, name, *args)
        if typ != "OK":
            text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
            raise IMAPClientError(f"UID {name} failed: {text}")
        failpoints.reached()  # done on the server, not yet recorded: the crash tests stop here

    def _transfer(self, refs: list[MessageRef], dest: str, verb: str) -> list[Result]:
        """UID COPY or UID MOVE into dest (created on TRYCREATE); record where copies went."""
        if not refs:
            return []
        self._select(refs[0].folder, write=verb == "MOVE")
        client = self._conn()
        try:
            target = client._normalise_folder(self.server_name(dest))
        except FolderError as exc:
            return [f"{verb.lower()} to {dest!r}: {exc}"] * len(refs)

        def one(chunk: list[MessageRef], uids: str) -> Result:
            client._imap.untagged_responses.pop("COPYUID", None)
            try:
                try:
                    self._uid_command(verb, uids, target)
                except IMAPClientError as exc:
                    if "TRYCREATE" not in str(exc).upper() and self._folder_exists(dest):
                        raise
                    self._create(dest)
                    self._uid_command(verb, uids, target)
            except (IMAPClientError, FolderError) as exc:
                return f"{verb.lower()} to {dest!r}: {exc}"
            self._note_copyuid(chunk, dest)
            return None

        return self._each_chunk(refs, one)

    def _note_copyuid(self, chunk: list[MessageRef], dest: str) -> None:
        client = self._conn()
        for raw in client._imap.untagged_responses.pop("COPYUID", None) or []:
            try:
                validity, src, dst = raw.decode().split()
                mapping = dict(zip(parse_uid_set(src), parse_uid_set(dst), strict=True))
            except (ValueError, UnicodeDecodeError):
                continue
            for ref in chunk:
                new = mapping.get(int(ref.location))
                if new is not None:
                    ref.arrived_in[dest] = (str(new), validity)

    def move(self, refs: list[MessageRef], dest: str) -> list[Result]:
        if not refs or dest == refs[0].folder:
            return [None] * len(refs)
        if b"MOVE" in self._caps:
            results = self._transfer(refs, dest, "MOVE")
        else:
            copied_results = self._transfer(refs, dest, "COPY")
            copied = [r for r, res in zip(refs, copied_results, strict=True) if res is None]
            removed = dict(zip((id(r) for r in copied), self._expunge(copied), strict=True))
            results = [
                res if res is not None else removed[id(r)]
                for r, res in zip(refs, copied_results, strict=True)
            ]
        for ref, result in zip(refs, results, strict=True):
            if result is None:  # a later 'run' reads the message where it went (COPYUID)
                ref.moved_to = dest
        return results

    def copy(self, refs: list[MessageRef], dest: str) -> list[Result]:
        if refs and self._same_folder(refs[0].folder, dest):
            # A copy next to itself would be new mail on the next run, copied again.
            if refs[0].folder not in self._warned_self_copy:
                self._warned_self_copy.add(refs[0].folder)
                log.warning(
                    "%s: copy into %s, the folder the message is in: nothing to do",
                    self.label,
                    dest,
                )
            return [None] * len(refs)
        return self._transfer(refs, dest, "COPY")

    def _same_folder(self, a: str, b: str) -> bool:
        try:
            return self.server_name(a) == self.server_name(b)
        except FolderError:
            return False  # the action itself reports the bad name

    def _expunge(self, refs: list[MessageRef]) -> list[Result]:
        """STORE \\Deleted on exactly these UIDs, then UID EXPUNGE them (never EXPUNGE)."""
        if not refs:
            return []
        self._select(refs[0].folder, write=True)

        def one(chunk: list[MessageRef], uids: str) -> Result:
            try:
                self._uid_command("STORE", uids, "+FLAGS.SILENT", "(\\Deleted)")
            except IMAPClientError as exc:
                return f"cannot mark deleted: {exc}"
            if b"UIDPLUS" not in self._caps:
                if not self._warned_uidplus:
                    log.warning(
                        "%s: the server lacks UIDPLUS, so removed messages keep \\Deleted and "
                        "stay until some client expunges (mailrules never sends a plain "
                        "EXPUNGE, which would also remove what others marked deleted)",
                        self.label,
                    )
                    self._warned_uidplus = True
                return None
            try:
                self._uid_command("EXPUNGE", uids)
            except IMAPClientError as exc:
                return f"marked deleted, but UID EXPUNGE failed: {exc}"
            return None

        return self._each_chunk(refs, one)

    def delete(self, refs: list[MessageRef], expunge: bool) -> list[Result]:
        if not refs:
            return []
        if expunge:
            return self._expunge(refs)
        trash = self._trash_folder()
        if refs[0].folder == trash:
            return [None] * len(refs)
        return self.move(refs, trash)

    def set_flags(
        self, refs: list[MessageRef], add: frozenset[str], remove: frozenset[str], keywords: bool
    ) -> list[Result]:
        if not refs:
            return []
        self._select(refs[0].folder, write=True)

        def names(items: frozenset[str]) -> str:
            return " ".join(sorted(w if keywords else FLAG_NAMES[w].decode() for w in items))

        def one(chunk: list[MessageRef], uids: str) -> Result:
            try:
                if add:
                    self._uid_command("STORE", uids, "+FLAGS.SILENT", f"({names(add)})")
                if remove:
                    self._uid_command("STORE", uids, "-FLAGS.SILENT", f"({names(remove)})")
            except IMAPClientError as exc:
                return f"cannot change flags: {exc}"
            return None

        return self._each_chunk(refs, one)


_shared: Pool[frozenset[str]] = Pool(1024)  # flag and keyword sets: a few kinds
# Mailbox attributes (RFC 9051 s7.3.1, RFC 6154): atoms, so case-insensitive; Cyrus sends
# "\\trash". Known ones are given in their RFC spelling, so that comparisons can be exact.
_ATTRIBUTES = {
    a.lower(): a
    for a in (
        "\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash",
        "\\Noselect", "\\NonExistent", "\\NoInferiors", "\\HasChildren", "\\HasNoChildren",
        "\\Marked", "\\Unmarked", "\\Subscribed", "\\Remote", "\\Important",
    )
}  # fmt: skip


def _attribute(name: str) -> str:
    return _ATTRIBUTES.get(name.lower(), name)


def _header_of(message: bytes) -> bytes:
    """The header block of a whole message, with the blank line that ends it."""
    ends = [(at, len(end)) for end in (b"\r\n\r\n", b"\n\n") if (at := message.find(end)) >= 0]
    if not ends:
        return message
    at, size = min(ends)
    return message[: at + size]


def _header_bytes(item: dict[bytes, object]) -> bytes:
    """The header block from a FETCH item, whatever the server named the key."""
    for key, value in item.items():
        if (
            isinstance(key, bytes)
            and key.upper().startswith(b"BODY[HEADER")
            and isinstance(value, bytes)
        ):
            return value
    return b""


_EXISTS = re.compile(rb"^\* \d+ EXISTS\b", re.IGNORECASE)
_BYE = re.compile(rb"^\* BYE\b", re.IGNORECASE)


class IdleUnsupported(SourceError):
    """The server does not offer IDLE (RFC 2177); the folder is polled instead."""


class IdleSession:
    """One connection in IDLE (RFC 2177) on one folder, for a watcher thread.

    ``open`` connects (logging in, or starting the tunnel, as every connection does; an
    OAuth2 token command runs again each time), turns on TCP keepalive and EXAMINEs the
    folder. ``wait`` blocks until the server says something or the timeout passes and
    tells whether new mail arrived (``* n EXISTS``). A closed connection, ``* BYE`` or any
    protocol error raises SourceError; the caller reconnects. ``interrupt`` may be called
    from another thread: it shuts the socket down, so a blocked ``wait`` returns at once.

    Between ``stop`` and ``start`` the watcher may process the folder on this very
    connection (``box``): the server synced it to report EXISTS, so SEARCH and FETCH
    answer at once, where a second connection would first pay for its own sync (about
    20 ms on Dovecot with 10,000 messages in a Maildir; measured, bench/idle). The
    folder is EXAMINEd: Dovecot then does its work for a new message (about 20 ms at
    that size) before it announces it, while a read-write session pays as much later,
    at the first read of the message (moving it from new/ to cur/); read-only measured
    a little faster, and leaves new/ to the user's own client. Actions that write
    SELECT the folder, and ``settled`` EXAMINEs it again.
    """

    def __init__(self, box: ImapMailbox, folder: str) -> None:
        self.box = box
        self.folder = folder
        self._sock: socket.socket | None = None

    def open(self) -> None:
        client = self.box._conn()
        if b"IDLE" not in self.box._caps:
            raise IdleUnsupported(f"{self.box.label}: the server does not offer IDLE")
        sock = client.socket()
        self._sock = sock
        if sock.family in (socket.AF_INET, socket.AF_INET6):  # not a tunnel's socketpair
            set_keepalive(sock)
        self.box.examine(self.folder)
        client._imap.untagged_responses.pop("EXISTS", None)  # the count, not news

    def settled(self) -> bool:
        """After a run on this connection: True if no mail came while it ran.

        Mail the server reported during the run (an EXISTS among the answers to its
        commands) is not announced again in IDLE, so it must be caught here. If the folder
        is still EXAMINEd, a NOOP syncs it and any EXISTS received since ``stop`` tells;
        if an action SELECTed it, it is EXAMINEd again and its UIDNEXT compared with the
        one the run's scan saw. Either way this is the last command before IDLE: mail that
        arrives after it is announced when IDLE starts.
        """
        box = self.box
        client = box._conn()
        if box._selected == self.folder and box._readonly:
            box._run("NOOP", client.noop)
            return not client._imap.untagged_responses.pop("EXISTS", None)
        uidnext = box.examine(self.folder).get(b"UIDNEXT")
        client._imap.untagged_responses.pop("EXISTS", None)
        return uidnext == box.uidnext_seen.get(self.folder)

    def start(self) -> None:
        self.box._run("IDLE", self.box._conn().idle)

    def stop(self) -> None:
        """End IDLE (DONE), so that commands can be sent on this connection."""
        client = self.box._conn()
        try:
            self.box._run("DONE", client.idle_done)
        except IMAPClientError as exc:
            raise SourceError(f"{self.box.label}: ending IDLE failed: {exc}") from None
        # What was announced so far is handled by the run that follows (its scan syncs).
        client._imap.untagged_responses.pop("EXISTS", None)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the server; True if new mail arrived."""
        sock = self._sock
        if sock is None:
            raise SourceError(f"{self.box.label}: IDLE session is not open")
        sock.settimeout(0)
        try:
            lines = self._drain(sock)
            if not lines:
                poller = select.poll()
                poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
                if poller.poll(max(0, int(timeout * 1000))):
                    lines = self._drain(sock)
        except OSError as exc:
            raise SourceError(f"{self.box.label}: IDLE connection failed: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(self.box.timeout)
        for line in lines:
            if _BYE.match(line):
                text = line.decode("utf-8", "replace").strip()
                raise SourceError(f"{self.box.label}: the server closed the connection: {text}")
        return any(_EXISTS.match(line) for line in lines)

    def _drain(self, sock: socket.socket) -> list[bytes]:
        """Every complete line the server has sent so far, without blocking."""
        imap = self.box._conn()._imap
        lines: list[bytes] = []
        while True:
            try:
                lines.append(imap._get_line())
            except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
                return lines
            except imaplib.IMAP4.abort as exc:
                # imaplib reports "no data yet" on a non-blocking socket as EOF, too.
                if "EOF" in str(exc) and not _at_eof(sock):
                    return lines
                raise SourceError(f"{self.box.label}: the connection was closed ({exc})") from None

    def interrupt(self) -> None:
        """Make a blocked ``wait`` return (from any thread); the session is over after it."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the connection without a LOGOUT, which a session in IDLE would not
        answer (it waits for DONE): the server sees the connection end."""
        self.interrupt()
        self.box.close()
        self._sock = None


def _at_eof(sock: socket.socket) -> bool:
    if isinstance(sock, ssl.SSLSocket):
        return True  # without data, an SSL socket raises SSLWantReadError, not EOF
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True

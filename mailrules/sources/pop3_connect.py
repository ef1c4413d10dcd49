"""A POP3 connection for an account: transport, STLS, login; any failure ends it cleanly.

Shared by the POP3 mailbox and the quick poll. The transport comes from
``mailrules.transport``: a tunnel command (a pre-authenticated one gets the greeting it
does not send), implicit TLS, or TCP with a required STLS upgrade; certificates are
always verified (CA file or pinned fingerprint). Logins: USER/PASS, APOP when asked,
AUTH PLAIN, AUTH XOAUTH2 with a token from ``oauth2_token_command``. Whatever goes
wrong mid-session closes the connection without QUIT, so the server undoes every DELE.
"""

from __future__ import annotations

import contextlib
import logging
import poplib
import socket
from collections.abc import Iterator
from typing import Any

from mailrules.auth import CredentialError, SecretSource
from mailrules.errors import MailrulesError, SourceError
from mailrules.secrets import remember_login, remember_oauth
from mailrules.sources.pop3_session import ConnectionLost, ProtocolError, Session
from mailrules.transport import tcp, tls
from mailrules.transport.tunnel import Tunnel

log = logging.getLogger("mailrules.sources.pop3")
PREAUTH_GREETING = b"+OK pre-authenticated tunnel (greeting supplied by mailrules)\r\n"


class Connector:
    """Connects on first use; ``_talk`` wraps every exchange with the server."""

    def __init__(self, account: str, settings: Any, timeout: float) -> None:
        """``settings``: a Pop3Model, or anything with its attributes (the quick poll)."""
        self.account = account
        self.settings = settings
        self.timeout = timeout
        self._session: Session | None = None
        self._tunnel: Tunnel | None = None
        self._top: bool | None = None  # None: not known yet (a server without CAPA)

    @property
    def label(self) -> str:
        if self.settings.tunnel:
            return f"{self.account} (tunnel {self.settings.tunnel[0]})"
        return f"{self.account} ({self.settings.host})"

    # -- the session ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _talk(self, what: str) -> Iterator[Session]:
        """The session, connecting first; any failure ends it without QUIT."""
        if self._session is None:
            self._session = self._connect()
        try:
            yield self._session
        except ConnectionLost:
            note = self._tunnel.exit_note() if self._tunnel else ""
            self._drop()
            raise SourceError(
                f"{self.label}: the server closed the connection during {what}{note}; "
                "nothing was deleted, the rest is fetched on the next run"
            ) from None
        except ProtocolError as exc:
            self._drop()
            raise SourceError(
                f"{self.label}: protocol error during {what}: {exc}; session ended, "
                "nothing was deleted"
            ) from None
        except poplib.error_proto as exc:
            self._drop()
            raise SourceError(
                f"{self.label}: the server refused {what}: {_text(exc)}; session ended, "
                "nothing was deleted"
            ) from None
        except OSError as exc:  # socket timeouts included
            self._drop()
            raise SourceError(
                f"{self.label}: connection lost during {what}: {exc}; nothing was deleted"
            ) from None

    def _connect(self) -> Session:
        s = self.settings
        try:
            if s.tunnel:
                greeting = PREAUTH_GREETING if s.preauth else None
                self._tunnel = Tunnel(list(s.tunnel), self.label, greeting)
                sock: socket.socket = self._tunnel.sock
                sock.settimeout(self.timeout)
            else:
                assert s.host is not None
                port = s.port or (995 if s.security == "tls" else 110)
                sock = tcp.connect(s.host, port, self.timeout, self.label)
                if s.security == "tls":
                    context = tls.make_context(s.ca_file, s.fingerprint)
                    sock = tls.wrap(sock, context, s.host, s.fingerprint, self.label, s.ca_file)
            session = Session(sock, s.host or "")
            self._session = session
            self._setup(session)
        except MailrulesError:
            self._drop()
            raise
        except ConnectionLost:
            note = self._tunnel.exit_note() if self._tunnel else ""
            self._drop()
            raise SourceError(f"{self.label}: the server closed the connection{note}") from None
        except (OSError, poplib.error_proto) as exc:
            note = self._tunnel.exit_note() if self._tunnel else ""
            self._drop()
            raise SourceError(f"{self.label}: cannot connect: {_text(exc)}{note}") from None
        return session

    def _setup(self, session: Session) -> None:
        s = self.settings
        caps = session.capabilities()
        if caps is None:
            log.warning(
                "%s: the server does not answer CAPA (RFC 2449); assuming USER/PASS, "
                "trying UIDL and TOP",
                self.label,
            )
        if not s.tunnel and s.security == "starttls":
            if not session.has("STLS"):
                raise tls.TLSError(
                    f"{self.label}: security is starttls but the server does not offer STLS; "
                    "refusing to continue in plaintext"
                )
            context = tls.make_context(s.ca_file, s.fingerprint)
            plain = session.starttls()
            session.use_socket(
                tls.wrap(plain, context, s.host, s.fingerprint, self.label, s.ca_file)
            )
            caps = session.capabilities()
        if not (s.tunnel and s.preauth):
            self._login(session)
            if caps is not None:
                session.capabilities()  # RFC 2449 s5: capabilities may change after login
        if session.has("UTF8"):
            with contextlib.suppress(poplib.error_proto):
                session.utf8()  # RFC 6856: raw UTF-8 headers instead of a substitute notice
        self._top = True if session.has("TOP") else (None if session.caps is None else False)

    def _login(self, session: Session) -> None:
        s = self.settings
        user = s.username or ""
        mechanism = s.auth
        if mechanism == "auto":
            sasl = [m.upper() for m in (session.caps or {}).get("SASL", [])]
            if s.oauth2_token_command:
                mechanism = "xoauth2"
            elif session.caps is None or session.has("USER") or "PLAIN" not in sasl:
                mechanism = "user"
            else:
                mechanism = "plain"
        try:
            if mechanism == "xoauth2":
                assert s.oauth2_token_command is not None
                token = SecretSource(command=tuple(s.oauth2_token_command)).read(
                    f"{self.account}: oauth2_token_command"
                )
                remember_oauth(user, token)
                session.auth_xoauth2(user, token)
                return
            source = SecretSource.password_of(s)
            password = source.read(f"{self.account}: password from {source.describe()}")
            remember_login(user, password)  # AUTH PLAIN is base64 of it on the wire
            if mechanism == "apop":
                session.apop(user, password)
            elif mechanism == "plain":
                session.auth_plain(user, password)
            else:
                session.user(user)
                session.pass_(password)
        except CredentialError as exc:
            raise SourceError(str(exc)) from None
        except ProtocolError:
            raise
        except poplib.error_proto as exc:
            reason = _text(exc).replace(user, "…") if user else _text(exc)
            raise SourceError(
                f"{self.label}: login as {user!r} ({mechanism}) refused: {reason}"
            ) from None

    def _drop(self) -> None:
        """End the session without QUIT: the server forgets every DELE of it."""
        if self._session is not None:
            with contextlib.suppress(OSError):
                self._session.close()
        self._session = None
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None


def _text(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    arg = exc.args[0] if exc.args else exc
    if isinstance(arg, bytes):
        return arg.decode("utf-8", "replace")
    return str(arg)

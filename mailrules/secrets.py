"""Secrets kept out of the config: a file, a variable, a command or a systemd credential.

A setting that holds a secret, say ``auth_token``, can be given in one of five forms:

* ``auth_token_file: /path``: the file's content (one trailing newline removed; ``~``
  is expanded);
* ``auth_token_env: VARIABLE``: an environment variable;
* ``auth_token_command: [pass, show, twilio]``: a command's output (argv, never a shell,
  minimal environment, 30 s timeout);
* ``auth_token_credential: twilio``: ``$CREDENTIALS_DIRECTORY/twilio``, where systemd puts
  what the unit's ``LoadCredential=twilio:/etc/…`` names;
* ``auth_token: value``: in the config itself, when the user insists.

Values are read when first needed, never at ``mailrules check`` (the checking shell may
not have the service's variables or credentials), and cached for the process. Every value
read is remembered so that ``redact`` (and the log filter in ``mailrules.log``) can
replace it with ``***`` wherever it would otherwise be shown, together with the forms
derived from it that a receiver could echo back: HTTP Basic credentials, SASL PLAIN,
a URL's path and query, decoded or not. Errors name the source
(``the file /run/…``), never the value. IMAP and POP3 passwords use the same forms.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from mailrules.commands import CommandFailed, run_command
from mailrules.errors import CredentialError

if TYPE_CHECKING:  # annotations only: the quick poll imports this module and must stay light
    from mailrules.config.yaml_loader import Path
    from mailrules.rules.checker import Checker

FORMS = ("_file", "_env", "_command", "_credential", "")
COMMAND_TIMEOUT = 30.0
_cache: dict[Secret, str] = {}
_known: set[str] = set()
_lock = threading.Lock()
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s@:]*):([^/\s@]*)@")


@dataclass(frozen=True)
class Secret:
    """Where one secret comes from: ``kind`` is value, file, env, command or credential."""

    setting: str
    kind: str
    ref: str | tuple[str, ...]

    def describe(self) -> str:
        """Where the secret is read from, for messages; never the value."""
        if self.kind == "file":
            return f"the file {self.ref}"
        if self.kind == "env":
            return f"the environment variable {self.ref}"
        if self.kind == "command":
            return f"the output of {self.ref[0]!r}"
        if self.kind == "credential":
            return f"the systemd credential {self.ref!r}"
        return f"the config's {self.setting}"

    def get(self) -> str:
        """The secret's value. Raise CredentialError if it cannot be read or is empty."""
        with _lock:
            if self in _cache:
                return _cache[self]
        value = self._read()
        if not value:
            raise CredentialError(f"{self.setting}: {self.describe()} is empty")
        remember(value)
        with _lock:
            _cache[self] = value
        return value

    def _read(self) -> str:
        what = f"{self.setting}: cannot read {self.describe()}"
        if self.kind == "value":
            return str(self.ref)
        if self.kind == "env":
            if str(self.ref) not in os.environ:
                raise CredentialError(f"{self.setting}: {self.describe()} is not set")
            return os.environ[str(self.ref)]
        if self.kind == "command":
            try:
                done = run_command(list(self.ref), b"", COMMAND_TIMEOUT)
            except CommandFailed as exc:
                raise CredentialError(f"{what}: {exc}") from None
            if done.returncode != 0:
                raise CredentialError(f"{what}: it exited {done.returncode}")
            return _chomp(done.stdout.decode("utf-8", "replace"))
        path = os.path.expanduser(str(self.ref))
        if self.kind == "credential":
            base = os.environ.get("CREDENTIALS_DIRECTORY")
            if not base:
                raise CredentialError(
                    f"{what}: $CREDENTIALS_DIRECTORY is not set (give the unit "
                    f"LoadCredential={self.ref}:/path/to/the/secret)"
                )
            path = os.path.join(base, path)
        try:
            with open(path, encoding="utf-8") as f:
                return _chomp(f.read())
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialError(f"{what}: {getattr(exc, 'strerror', None) or exc}") from None


def _chomp(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


def parse_secret(
    values: Mapping[str, Any], setting: str, path: Path, check: Checker, *, required: bool
) -> Secret | None:
    """The one form of ``setting`` given in ``values`` (a validated mapping), or None.

    Records a config problem at ``path`` when several forms are given, or none of a
    required one. Values have already been type-checked (text, or a list for _command).
    """
    given = [form for form in FORMS if values.get(setting + form) is not None]
    names = ", ".join(setting + form for form in FORMS)
    if len(given) > 1:
        both = " and ".join(setting + form for form in given)
        check.error(path, f"{check.where(path)}: {both} both give {setting}; keep one")
        return None
    if not given:
        if required:
            check.error(path, f"{check.where(path)}: missing {setting}: give one of {names}")
        return None
    form = given[0]
    raw = values[setting + form]
    at = (*path, setting + form)
    if form == "_command":
        if not raw or not all(isinstance(a, str) and a for a in raw):
            check.error(at, f"{check.where(at)}: expected a command as a list of arguments")
            return None
        return Secret(setting, "command", tuple(raw))
    if not raw:
        check.error(at, f"{check.where(at)}: must not be empty")
        return None
    if form == "_credential" and ("/" in raw or raw in (".", "..")):
        check.error(at, f"{check.where(at)}: a credential is a name, not a path: {raw!r}")
        return None
    return Secret(setting, form.lstrip("_") or "value", raw)


def remember(value: str) -> None:
    """Treat ``value`` as secret from now on: ``redact`` hides it."""
    if len(value) >= 4:
        with _lock:
            _known.add(value)


def _remember_forms(value: str) -> None:
    """``value`` and its percent-decoded form (what a receiver may echo back)."""
    remember(value)
    decoded = unquote(value)
    if decoded != value:
        remember(decoded)


def remember_basic(user: str, password: str) -> None:
    """Treat ``password`` and the HTTP Basic credentials made of it as secret.

    ``Authorization: Basic base64(user:password)`` is what a receiver echoing its request
    shows; requests encodes it as Latin-1 when it can, else UTF-8, so both are kept.
    """
    remember(password)
    for encoding in ("latin-1", "utf-8"):
        try:
            pair = f"{user}:{password}".encode(encoding)
        except UnicodeEncodeError:
            continue
        remember(base64.b64encode(pair).decode("ascii"))


def remember_login(user: str, password: str) -> None:
    """Treat the SASL forms of a login as secret: PLAIN and LOGIN are base64 on the wire."""
    if not password:
        return
    remember(password)
    for blob in (f"\0{user}\0{password}", f"{user}\0{user}\0{password}", password):
        remember(base64.b64encode(blob.encode()).decode("ascii"))


def remember_oauth(user: str, token: str) -> None:
    """Treat an OAuth2 access token and its SASL forms (XOAUTH2, OAUTHBEARER, both base64
    on the wire) as secret."""
    if not token:
        return
    remember(token)
    gs2 = "n,a=" + user.replace("=", "=3D").replace(",", "=2C") + "," if user else "n,,"
    for blob in (
        f"user={user}\x01auth=Bearer {token}\x01\x01",
        f"{gs2}\x01auth=Bearer {token}\x01\x01",
    ):
        remember(base64.b64encode(blob.encode()).decode("ascii"))


def remember_url(url: str) -> None:
    """Treat a URL as secret: itself, its password and the Basic auth made of it, its path
    (tokens often live there: /services/T0/B0/XXXX), its query, each decoded too."""
    remember(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if parts.password:
        _remember_forms(parts.password)
        remember_basic(unquote(parts.username or ""), unquote(parts.password))
    path = parts.path.rstrip("/")
    if len(path) > 1:
        _remember_forms(path)
        for segment in path.split("/"):
            if len(segment) >= 12:  # token-sized pieces, echoed on their own
                _remember_forms(segment)
    if parts.query:
        _remember_forms(parts.query)
        _remember_forms(f"{parts.path}?{parts.query}")
        for _, value in parse_qsl(parts.query):
            remember(value)


def redact(text: str) -> str:
    """``text`` with every known secret replaced by ``***`` and URL passwords removed."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, "***")
    return _USERINFO.sub(r"\1\2:***@", text)


def show_url(url: str) -> str:
    """A URL as it may appear in messages: scheme, host and port only."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unreadable URL)"
    rest = "/…" if (parts.path.strip("/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{rest}"

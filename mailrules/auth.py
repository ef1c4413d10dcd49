"""Credentials: passwords and OAuth2 tokens from where the user keeps them.

Sources: the config itself (``password``), a file (``password_file``, e.g. a systemd
credential), or a command's stdout (``password_command: [pass, show, mail/work]``),
and ``oauth2_token_command`` for XOAUTH2/OAUTHBEARER, run again at every connection
because tokens expire. Values are never logged; errors name the account and the
source, never the secret. Commands run as argv with a minimal environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mailrules.commands import CommandFailed, run_command
from mailrules.errors import CredentialError
from mailrules.secrets import remember


@dataclass(frozen=True)
class SecretSource:
    """Where one secret comes from; exactly one field is set."""

    value: str | None = None
    file: str | None = None
    command: tuple[str, ...] | None = None

    @classmethod
    def password_of(cls, settings: Any) -> SecretSource:
        """Where a server's password comes from: ``settings`` is an ImapModel or Pop3Model,
        or anything with their ``password``, ``password_file`` and ``password_command``."""
        command = settings.password_command
        return cls(
            value=settings.password,
            file=settings.password_file,
            command=tuple(command) if command else None,
        )

    def describe(self) -> str:
        if self.file:
            return f"file {self.file}"
        if self.command:
            return f"command {self.command[0]!r}"
        return "the config"

    def read(self, label: str, timeout: float = 30.0) -> str:
        """The secret, stripped of its trailing newline. Raises CredentialError."""
        secret = self._read(label, timeout)
        remember(secret)
        return secret

    def _read(self, label: str, timeout: float) -> str:
        if self.value is not None:
            return self.value
        if self.file:
            path = os.path.expanduser(self.file)
            if not os.path.isabs(path) and os.environ.get("CREDENTIALS_DIRECTORY"):
                path = os.path.join(os.environ["CREDENTIALS_DIRECTORY"], path)
            try:
                with open(path, encoding="utf-8") as f:
                    secret = f.read().rstrip("\r\n")
            except OSError as exc:
                raise CredentialError(f"{label}: cannot read {path}: {exc.strerror}") from None
            if not secret:
                raise CredentialError(f"{label}: {path} is empty")
            return secret
        if self.command:
            try:
                done = run_command(list(self.command), b"", timeout)
            except CommandFailed as exc:
                raise CredentialError(f"{label}: {exc}") from None
            if done.returncode != 0:
                raise CredentialError(
                    f"{label}: {self.command[0]!r} exited {done.returncode} "
                    "(its output is not shown, as it may hold the secret)"
                )
            secret = done.stdout.decode("utf-8", "replace").split("\n", 1)[0].rstrip("\r")
            if not secret:
                raise CredentialError(f"{label}: {self.command[0]!r} printed nothing")
            return secret
        raise CredentialError(f"{label}: no password or token configured")

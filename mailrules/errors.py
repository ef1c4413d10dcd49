"""The mailrules exception family.

::

    MailrulesError
      ConfigError        the config is wrong; raised before any mailbox is opened (exit 2)
      SourceError        an account could not be read (exit 3)
        FolderError      a folder name cannot be used or created
      ActionError        one action on one message failed; the message stays where it was
      RuleError          a rule could not be evaluated (a condition command failed)
      StateError         the state database cannot be opened or written
      CredentialError    a secret could not be read; names its source, never its value
      NotifyError        a notification was not sent; kept in the outbox
        NotifyRetry      worth trying again later (network, 429, 5xx, timeouts)

Every message says what went wrong, to what, and what the user can do about it.
"""

from __future__ import annotations

from dataclasses import dataclass


class MailrulesError(Exception):
    """Base of every error mailrules raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file, at a 1-based line and column (0: no position, as for
    a config that was not found at all)."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        if not self.line:
            return f"{self.path}: {self.message}" if self.path else f"mailrules: {self.message}"
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class ConfigError(MailrulesError):
    """The config is wrong. Carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.path, p.line, p.col, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class SourceError(MailrulesError):
    """An account's mailbox could not be opened or listed."""


class FolderError(SourceError):
    """A folder name is not valid for this mailbox, or the folder cannot be created."""


class ActionError(MailrulesError):
    """An action failed on one message; the message was left where it was."""


class RuleError(MailrulesError):
    """A rule could not be evaluated for a message (for example a condition command hung)."""


class StateError(MailrulesError):
    """The state database cannot be opened or written."""


class CredentialError(MailrulesError):
    """A secret (token, password, key) could not be read from its file, variable or command.

    The message names where it was looked for, never the value.
    """


class NotifyError(MailrulesError):
    """A notification could not be sent and trying again will not help (HTTP 4xx, a bad URL).

    The outbox dead-letters it at once; ``mailrules notify --retry-dead`` queues it again.
    """


class NotifyRetry(NotifyError):
    """A notification could not be sent this time: the outbox tries again with backoff.

    ``retry_after`` is the receiver's own wish (HTTP Retry-After), in seconds.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

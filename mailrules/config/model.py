"""The config's structure as pydantic models: accounts and the outer shape of rules.

``when`` and ``then`` are parsed by the condition and action registries (see
``mailrules.rules``), which give each their own precise errors; here they are ``Any``.
Field descriptions double as the reference that ``mailrules schema`` prints.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mailrules.notify.model import NotifierModel


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AccountModel(_Strict):
    """One mail account. Today: a local Maildir."""

    maildir: str = Field(
        description="Path of the Maildir root (the folder holding cur/, new/, tmp/). "
        "~ and ${VARIABLE} are expanded."
    )
    layout: Literal["maildir++", "fs"] = Field(
        "maildir++",
        description="How subfolders are stored: maildir++ (.Work.Clients, Dovecot's default) "
        "or fs (Work/Clients/, mbsync's SubFolders Verbatim).",
    )
    folders: list[str] = Field(
        default_factory=lambda: ["INBOX"],
        description="Folders to watch for new mail; '/' separates subfolders.",
    )
    existing: Literal["skip", "process"] = Field(
        "skip",
        description="What the first run does with mail already in a folder: skip records it "
        "as seen without acting; process applies the rules to it.",
    )
    trash: str = Field("Trash", description="Folder that 'delete' moves messages to.")


class RuleModel(_Strict):
    """One rule: when its conditions hold, its actions run, in order."""

    name: str = Field(description="Shown in logs, the audit log and 'explain'.")
    description: str | None = Field(None, description="Free text for the reader.")
    enabled: bool = Field(True, description="false keeps the rule but never applies it.")
    accounts: list[str] | None = Field(
        None, description="Apply only to these accounts (default: all)."
    )
    folders: list[str] | None = Field(
        None, description="Apply only to these folders (default: every watched folder)."
    )
    when: Any = Field(
        None,
        description="Conditions (a mapping: all must hold). Omit to match every message.",
    )
    then: Any = Field(
        description="Actions, in order: a list of one-key mappings or bare names.",
    )


class ConfigModel(_Strict):
    """A mailrules config file."""

    accounts: dict[str, AccountModel] = Field(description="Mail accounts, by name.")
    rules: list[RuleModel] = Field(default_factory=list, description="Rules, tried in order.")
    notifiers: dict[str, NotifierModel] = Field(
        default_factory=dict,
        description="Notification channels, by name, for the notify action: {notify: NAME}.",
    )

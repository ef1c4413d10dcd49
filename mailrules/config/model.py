"""The config's structure as pydantic models: accounts and the outer shape of rules.

``when`` and ``then`` are parsed by the condition and action registries (see
``mailrules.rules``), which give each their own precise errors; here they are ``Any``.
Field descriptions double as the reference that ``mailrules schema`` prints.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


class _ServerModel(_Strict):
    """How to reach and log in to a mail server (what IMAP and POP3 accounts share)."""

    host: str | None = Field(None, description="Server name (not needed with tunnel).")
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Default: 993 (IMAP) or 995 (POP3) for tls; 143 or 110 for starttls and plain.",
    )
    security: Literal["tls", "starttls", "plain"] = Field(
        "tls",
        description="tls: implicit TLS. starttls: STARTTLS/STLS on the plain port, refused if "
        "the server cannot. plain: no encryption; only to loopback unless allow_plaintext.",
    )
    allow_plaintext: bool = Field(
        False, description="Permit security: plain to a host that is not loopback."
    )
    tunnel: list[str] | None = Field(
        None,
        description="Run this command (argv) and speak the protocol over its stdin/stdout, "
        "e.g. [ssh, mailhost, /usr/lib/dovecot/imap].",
    )
    username: str | None = Field(None, description="Login name.")
    password: str | None = Field(
        None, description="The password itself; prefer password_file or password_command."
    )
    password_file: str | None = Field(
        None, description="File holding the password (relative: in $CREDENTIALS_DIRECTORY)."
    )
    password_command: list[str] | None = Field(
        None, description="Command (argv) that prints the password, e.g. [pass, show, mail]."
    )
    oauth2_token_command: list[str] | None = Field(
        None, description="Command (argv) that prints an OAuth2 access token; run per login."
    )
    ca_file: str | None = Field(None, description="CA certificate(s) to trust (PEM).")
    fingerprint: str | None = Field(
        None, description="Pin the server certificate: sha256:<64 hex digits>."
    )
    timeout: str | int = Field("60s", description="Connect and read timeout (30s, 2m).")


class ImapModel(_ServerModel):
    """How to reach and log in to an IMAP server. A tunnel is pre-authenticated."""

    oauth2_mechanism: Literal["xoauth2", "oauthbearer"] = Field(
        "xoauth2", description="SASL mechanism for the OAuth2 token."
    )
    server_search: bool = Field(
        True,
        description="On a full pass (--all, existing: process), let the server's SEARCH skip "
        "messages no rule can match; the rules still decide every candidate exactly.",
    )


class Pop3Model(_ServerModel):
    """How to reach and log in to a POP3 server."""

    preauth: bool = Field(
        False,
        description="The tunnel command is already logged in and sends no greeting (Dovecot's "
        "pop3 run directly): mailrules supplies the +OK greeting and does not log in.",
    )
    auth: Literal["auto", "user", "apop", "plain", "xoauth2"] = Field(
        "auto",
        description="auto: XOAUTH2 with oauth2_token_command, else USER/PASS, else AUTH PLAIN. "
        "apop only when asked (it needs the server's greeting timestamp).",
    )


class ScheduleModel(_Strict):
    """When the service (``mailrules run``) polls an account: every or cron."""

    every: str | int | None = Field(None, description="Poll at this interval: 90s, 5m, 1h.")
    cron: str | None = Field(
        None,
        description="Poll at the times of a crontab line, quoted: minute hour day month "
        'weekday, e.g. "*/10 7-19 * * mon-fri". As in crontab, weekday 0 and 7 are Sunday, '
        "and when both day and weekday are given either one matching is enough.",
    )
    jitter: str | int | None = Field(
        None,
        description="Start each poll up to this much later, at random, so that accounts on "
        "one server do not all connect at once. Default: a tenth of every (at most 30s); "
        "none for cron.",
    )


class AccountModel(_Strict):
    """One mail account: a local Maildir, an IMAP server, or a POP3 server."""

    maildir: str | None = Field(
        None,
        description="Path of the Maildir root (the folder holding cur/, new/, tmp/). "
        "~ and ${VARIABLE} are expanded.",
    )
    imap: ImapModel | None = Field(None, description="An IMAP account.")
    pop3: Pop3Model | None = Field(
        None, description="A POP3 account; its mail is delivered into deliver_to."
    )
    deliver_to: str | None = Field(
        None,
        description="POP3: the local Maildir root that fetched mail goes to (INBOX, unless a "
        "rule delivers or deletes it). ~ and ${VARIABLE} are expanded.",
    )
    delete_after: str | None = Field(
        None,
        description="POP3: delete messages from the server this long after they were "
        "delivered locally (14d, 2w); default: leave them there.",
    )
    delete_after_delivery: bool = Field(
        False,
        description="POP3: delete each message from the server once it is delivered locally.",
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
    trash: str | None = Field(
        None,
        description="Folder that 'delete' moves messages to. Default: Trash (for IMAP, the "
        "server's \\Trash special-use folder when it names one).",
    )
    schedule: ScheduleModel | None = Field(
        None,
        description="When 'mailrules run' polls this account. Default: every 5m; with "
        "push: idle every 15m, as a backstop for what IDLE might miss. The first poll is at "
        "start-up.",
    )
    push: Literal["idle", "none"] = Field(
        "none",
        description="idle (IMAP): keep one IDLE connection per watched folder and process "
        "new mail within seconds of its arrival; falls back to the schedule when the server "
        "has no IDLE. none: poll on the schedule only.",
    )


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


class AuditModel(_Strict):
    """How long the audit log (``mailrules state``) keeps its rows."""

    keep: str | int = Field(
        "90d", description="Delete rows older than this (30d, 26w, 1y). Default: 90d."
    )
    max_rows: int = Field(
        100_000,
        ge=1,
        description="Keep at most this many rows, the newest. Default: 100000 (about 50 MB "
        "at most: each row's texts are cut to 500 characters, its error to 2000).",
    )


class ConfigModel(_Strict):
    """A mailrules config file."""

    accounts: dict[str, AccountModel] = Field(description="Mail accounts, by name.")
    rules: list[RuleModel] = Field(default_factory=list, description="Rules, tried in order.")
    audit: AuditModel = Field(
        default_factory=AuditModel,
        description="Retention of the audit log: rows past keep, or beyond max_rows, are "
        "deleted as new ones are written.",
    )
    # Validated by mailrules.notify.config (loaded only when a config uses notifications);
    # ``mailrules schema`` fills in the notifier model.
    notifiers: dict[str, Any] = Field(
        default_factory=dict,
        description="Notification channels, by name, for the notify action: {notify: NAME}.",
    )

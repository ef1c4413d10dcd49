"""The ``notifiers`` section of the config as pydantic models, for validation and the schema.

A notifier is one channel (exactly one of ``webhook``, ``sms``, ``apprise``, ``command``,
``forward``) plus optional ``limit``, ``retry`` and ``timeout``. Secrets take the forms
of ``mailrules.secrets`` (``auth_token_file``, ``_env``, ``_command``, ``_credential``);
durations are text such as ``30s`` and are parsed with the rest of the config's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

Duration = str | int


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False, defer_build=True)


def _secret(setting: str, what: str) -> dict[str, Any]:
    """The five fields that can give one secret (see mailrules.secrets)."""
    return {
        f"{setting}_file": (str | None, Field(None, description=f"a file holding {what}")),
        f"{setting}_env": (
            str | None,
            Field(None, description=f"an environment variable holding {what}"),
        ),
        f"{setting}_command": (
            list[str] | None,
            Field(None, description=f"a command (argv) that prints {what}"),
        ),
        f"{setting}_credential": (
            str | None,
            Field(None, description=f"a systemd credential ($CREDENTIALS_DIRECTORY/NAME): {what}"),
        ),
        setting: (str | None, Field(None, description=f"{what}, inline (prefer the forms above)")),
    }


WebhookModel = create_model(  # type: ignore[call-overload]
    "WebhookModel",
    __base__=_Strict,
    __doc__="POST (or PUT) a JSON document about the message to a URL.",
    method=(Literal["POST", "PUT"], Field("POST", description="HTTP method.")),
    headers=(
        dict[str, str],
        Field(default_factory=dict, description="Extra request headers (X-Team: mail)."),
    ),
    signature_header=(
        str,
        Field(
            "X-Mailrules-Signature",
            description="Header carrying t=UNIX_TIME,sha256=HMAC-SHA256(secret, 'UNIX_TIME.' + "
            "body) when a secret is set.",
        ),
    ),
    **_secret("url", "the URL (it may carry a token)"),
    **_secret("secret", "the HMAC-SHA256 key that signs each request"),
)

SmsModel = create_model(  # type: ignore[call-overload]
    "SmsModel",
    __base__=_Strict,
    __doc__="A text message through Twilio's REST API (or a server speaking it).",
    account_sid=(str, Field(description="The account SID (AC…).")),
    from_=(str, Field(alias="from", description="The sending number, +E.164.")),
    to=(str, Field(description="The receiving number, +E.164.")),
    base_url=(
        str,
        Field("https://api.twilio.com", description="The API's base URL (for compatible APIs)."),
    ),
    max_length=(
        int | None,
        Field(
            None,
            ge=10,
            description="Longest text sent, in characters; default 160, or 70 when the "
            "text needs characters outside the GSM 7-bit alphabet. Longer text ends in '...'.",
        ),
    ),
    **_secret("auth_token", "the auth token"),
)

AppriseModel = create_model(  # type: ignore[call-overload]
    "AppriseModel",
    __base__=_Strict,
    __doc__="Any Apprise URL (needs mailrules[apprise]).",
    max_length=(
        int | None,
        Field(None, ge=10, description="Longest text sent, in characters (default: no limit)."),
    ),
    **_secret("url", "the Apprise URL, such as tgram://TOKEN/CHAT"),
)


class CommandModel(_Strict):
    """Run a command with the notification as JSON on stdin; exit 0 means sent."""

    argv: list[str] = Field(description="The command and its arguments; never a shell.")
    timeout: Duration = Field("30s", description="Kill it after this long (retried later).")


ForwardModel = create_model(  # type: ignore[call-overload]
    "ForwardModel",
    __base__=_Strict,
    __doc__="Re-send the original message over SMTP, with Resent-* headers.",
    to=(str, Field(description="The address to forward to.")),
    from_=(str, Field(alias="from", description="Resent-From and the envelope sender.")),
    host=(str, Field(description="The SMTP server.")),
    port=(int | None, Field(None, description="Default: 465 for tls, 587 for starttls.")),
    security=(
        Literal["tls", "starttls"],
        Field(
            "tls",
            description="tls: implicit TLS; starttls: STARTTLS, required (never plaintext).",
        ),
    ),
    ca_file=(
        str | None,
        Field(None, description="CA certificates to trust instead of the system's."),
    ),
    username=(str | None, Field(None, description="Log in as this user (with password).")),
    **_secret("password", "the SMTP password"),
)


class LimitModel(_Strict):
    """At most ``count`` notifications per ``per``; the rest are folded into one digest."""

    count: int = Field(ge=1, description="How many notifications per period.")
    per: Duration = Field(description="The period: 10m, 1h, 1d.")


class RetryModel(_Strict):
    """Retries with exponential backoff and full jitter, then the dead-letter list."""

    attempts: int = Field(8, ge=1, description="Attempts before giving up (dead-letter).")
    backoff: Duration = Field("1m", description="Longest wait after the first failure.")
    max_backoff: Duration = Field("2h", description="Longest wait between two attempts.")


class TimeoutModel(_Strict):
    connect: Duration = Field("5s", description="Longest wait for a connection.")
    read: Duration = Field("15s", description="Longest wait for an answer.")


class NotifierModel(_Strict):
    """A notification channel with a name that rules refer to: {notify: {to: NAME}}."""

    webhook: WebhookModel | None = None  # type: ignore[valid-type]
    sms: SmsModel | None = None  # type: ignore[valid-type]
    apprise: AppriseModel | None = None  # type: ignore[valid-type]
    command: CommandModel | None = None
    forward: ForwardModel | None = None  # type: ignore[valid-type]
    limit: LimitModel | None = Field(
        None, description="Rate limit for all rules that use this notifier."
    )
    retry: RetryModel = Field(default_factory=RetryModel)
    timeout: TimeoutModel = Field(default_factory=TimeoutModel)


CHANNELS = ("webhook", "sms", "apprise", "command", "forward")

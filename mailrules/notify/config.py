"""The ``notifiers`` section: validate it, and bind each rule's ``notify`` to its notifier.

Every problem becomes a FILE:LINE:COL config error through the config's Checker:
unknown keys (with a suggestion), a notifier with no channel or two, secrets given
twice or not at all, durations, a rule naming a notifier that does not exist ("did you
mean"), and an Apprise notifier when Apprise is not installed (with the install
command). Nothing is sent and no secret is read here.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from mailrules.config.yaml_loader import Path
from mailrules.notify.model import CHANNELS, NotifierModel
from mailrules.rules.actions import NotifyAction
from mailrules.rules.checker import Checker, describe, did_you_mean
from mailrules.rules.engine import Rule
from mailrules.secrets import Secret, parse_secret

SECRETS = {
    "webhook": (("url", True), ("secret", False)),
    "sms": (("auth_token", True),),
    "apprise": (("url", True),),
    "command": (),
    "forward": (("password", False),),
}
APPRISE_INSTALL = "pip install 'mailrules[apprise]'"


@dataclass(frozen=True)
class Limit:
    count: int
    per: float  # seconds


@dataclass(frozen=True)
class Notifier:
    """One configured channel, ready for the dispatcher. Secrets are read when sending."""

    name: str
    channel: str
    settings: Any  # the channel's model: WebhookModel, SmsModel, ...
    secrets: dict[str, Secret]
    limit: Limit | None
    attempts: int
    backoff: float
    max_backoff: float
    connect_timeout: float
    read_timeout: float
    command_timeout: float = 30.0

    def secret(self, setting: str) -> str | None:
        """A secret's value (read on first use), or None when not configured."""
        source = self.secrets.get(setting)
        return source.get() if source else None


def parse_notifiers(data: dict[str, Any], check: Checker) -> dict[str, Notifier]:
    raw = data.get("notifiers")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        check.error(
            ("notifiers",),
            f"notifiers: expected a mapping of names to channels, got {describe(raw)}",
        )
        return {}
    out = {}
    for name, value in raw.items():
        notifier = _notifier(str(name), value, ("notifiers", name), check)
        if notifier is not None:
            out[str(name)] = notifier
    return out


def _notifier(name: str, value: Any, base: Path, check: Checker) -> Notifier | None:
    model = _validate(NotifierModel, value, base, check)
    if model is None:
        return None
    channels = [c for c in CHANNELS if getattr(model, c) is not None]
    if len(channels) != 1:
        found = f"{' and '.join(channels)}; keep one" if channels else "none"
        check.error(
            base,
            f"{check.where(base)}: a notifier is exactly one of {', '.join(CHANNELS)}; "
            f"found {found}",
        )
        return None
    channel = channels[0]
    settings = getattr(model, channel)
    at = (*base, channel)
    values = settings.model_dump()
    secrets: dict[str, Secret] = {}
    ok = True
    for setting, required in SECRETS[channel]:
        source = parse_secret(values, setting, at, check, required=required)
        if source is not None:
            secrets[setting] = source
    durations = {
        "backoff": ((*base, "retry", "backoff"), model.retry.backoff),
        "max_backoff": ((*base, "retry", "max_backoff"), model.retry.max_backoff),
        "connect": ((*base, "timeout", "connect"), model.timeout.connect),
        "read": ((*base, "timeout", "read"), model.timeout.read),
    }
    if model.limit is not None:
        durations["per"] = ((*base, "limit", "per"), model.limit.per)
    if channel == "command":
        durations["command"] = ((*at, "timeout"), settings.timeout)
    seconds = {key: check.duration(v, path) for key, (path, v) in durations.items()}
    if None in seconds.values():
        return None
    if channel == "apprise" and not _apprise_ok(settings, secrets, at, check):
        return None
    if channel == "webhook" and "url" in secrets and secrets["url"].kind == "value":
        ok = _url_ok(str(secrets["url"].ref), (*at, "url"), check) and ok
    if channel == "sms":
        ok = _url_ok(settings.base_url, (*at, "base_url"), check) and ok
    if not ok:
        return None
    limit = Limit(model.limit.count, seconds["per"]) if model.limit else None  # type: ignore[arg-type]
    return Notifier(
        name=name,
        channel=channel,
        settings=settings,
        secrets=secrets,
        limit=limit,
        attempts=model.retry.attempts,
        backoff=seconds["backoff"],  # type: ignore[arg-type]
        max_backoff=seconds["max_backoff"],  # type: ignore[arg-type]
        connect_timeout=seconds["connect"],  # type: ignore[arg-type]
        read_timeout=seconds["read"],  # type: ignore[arg-type]
        command_timeout=seconds.get("command") or 30.0,
    )


def _url_ok(url: str, path: Path, check: Checker) -> bool:
    if not url.startswith(("https://", "http://")):
        check.error(path, f"{check.where(path)}: expected an http:// or https:// URL")
        return False
    return True


def _apprise_ok(settings: Any, secrets: dict[str, Secret], at: Path, check: Checker) -> bool:
    if importlib.util.find_spec("apprise") is None:
        check.error(
            at,
            f"{check.where(at)}: the apprise channel needs the optional Apprise package, "
            f"which is not installed: {APPRISE_INSTALL}",
            key=True,
        )
        return False
    source = secrets.get("url")
    if source is None or source.kind != "value":
        return True  # read when sending; checked then
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Apprise's own imports
        import apprise

        if not apprise.Apprise().add(str(source.ref)):
            scheme = str(source.ref).partition("://")[0] or "?"
            check.error(
                (*at, "url"),
                f"{check.where((*at, 'url'))}: Apprise does not understand this URL "
                f"(scheme {scheme!r}); see https://github.com/caronc/apprise/wiki",
            )
            return False
    return True


def bind_notifiers(rules: list[Rule], notifiers: dict[str, Notifier], check: Checker) -> None:
    """Point every notify action at its notifier; unknown names are config errors."""
    raw = check.doc.data.get("notifiers") if isinstance(check.doc.data, dict) else None
    declared = {str(name) for name in raw} if isinstance(raw, dict) else set()
    for rule in rules:
        for i, act in enumerate(rule.actions):
            if not isinstance(act, NotifyAction):
                continue
            notifier = notifiers.get(act.notifier)
            if notifier is None and act.notifier in declared:
                continue  # it exists, with problems of its own, already reported
            if notifier is None:
                known = (
                    did_you_mean(act.notifier, notifiers)
                    if notifiers
                    else ("no notifiers are defined: add a top-level 'notifiers:' section")
                )
                check.error(
                    act.at,
                    f"{check.where(act.at)}: no notifier named {act.notifier!r}; {known}",
                )
                continue
            if act.limit is not None:
                bound = replace(
                    act, channel=notifier.channel, limit_key=f"rule:{rule.name}#{act.index}"
                )
            elif notifier.limit is not None:
                bound = replace(
                    act,
                    channel=notifier.channel,
                    limit=(notifier.limit.count, notifier.limit.per),
                    limit_key=f"notifier:{notifier.name}",
                )
            else:
                bound = replace(act, channel=notifier.channel)
            rule.actions[i] = bound


def _validate(model: type[BaseModel], data: Any, base: Path, check: Checker) -> Any:
    """Validate with pydantic; report each error at its place, with suggestions for keys."""
    from mailrules.config.load import _real_path, _report  # load imports this module

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            if err["type"] != "extra_forbidden":
                _report(err, base, check, model)
                continue
            loc = _real_path(base, err["loc"], check.doc)
            key = str(loc[-1])
            known = _fields(model, err["loc"][:-1])
            check.error(
                loc,
                f"{check.where(loc[:-1])}: unknown key '{key}'; {did_you_mean(key, known)}",
                key=True,
            )
        return None


def _fields(model: Any, rel: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``rel`` inside ``model`` (by alias, as the user writes them)."""
    target = model
    for part in rel:
        field = target.model_fields.get(part) if isinstance(part, str) else None
        inner = None
        for arg in getattr(field.annotation, "__args__", (field.annotation,)) if field else ():
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                inner = arg
        if inner is None:
            return []
        target = inner
    return [f.alias or n for n, f in target.model_fields.items()]

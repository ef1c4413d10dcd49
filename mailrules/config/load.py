"""Load a config file: find it, parse YAML, validate, compile rules; report every problem.

Stages: YAML with marks (``yaml_loader``), the outer structure with pydantic
(``model``), then conditions and actions through their registries, then checks that
span the file (accounts and folders that rules name, actions an account cannot do).
Every problem is collected and raised together as one ConfigError, each as
``file:line:col: what is wrong``, before any mailbox is touched.
"""

from __future__ import annotations

import ipaddress
import typing
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from mailrules.config.expand import expand_path
from mailrules.config.find import discover
from mailrules.config.model import (
    AccountModel,
    AuditModel,
    ConfigModel,
    RuleModel,
    _ServerModel,
)
from mailrules.config.yaml_loader import Document, Path, load_yaml
from mailrules.errors import ConfigError, ConfigProblem
from mailrules.rules.actions import FolderAction, RunAction, parse_actions
from mailrules.rules.checker import Checker, describe, did_you_mean
from mailrules.rules.conditions import parse_condition
from mailrules.rules.engine import Rule
from mailrules.rules.templates import CONTEXT_FIELDS
from mailrules.schedule import DEFAULT_BACKSTOP, DEFAULT_EVERY, Schedule, cron_trigger
from mailrules.sources.base import Mailbox
from mailrules.sources.maildir import Maildir
from mailrules.state import AuditRetention, use_audit_retention
from mailrules.transport.tls import normalise_fingerprint

__all__ = ["Account", "Config", "discover", "load_config", "parse_config"]

if TYPE_CHECKING:
    from mailrules.notify.config import Notifier

MAX_CONFIG_BYTES = 4 << 20  # a real config is a few KiB


@dataclass
class Account:
    name: str
    settings: AccountModel
    root: str | None = None  # Maildir accounts: the expanded path; POP3: deliver_to's
    timeout: float = 60.0
    delete_after: float | None = None  # POP3: seconds after delivery
    schedule: Schedule = field(default_factory=lambda: Schedule(every=DEFAULT_EVERY))

    @property
    def kind(self) -> str:
        if self.settings.pop3 is not None:
            return "pop3"
        return "imap" if self.settings.imap is not None else "maildir"

    def mailbox(self) -> Mailbox:
        """A mailbox object for this account; IMAP and POP3 connect on first use, not here."""
        if self.settings.pop3 is not None:
            from mailrules.sources.pop3 import Pop3Mailbox

            assert self.root is not None
            local = Maildir(self.root, self.settings.layout, self.settings.trash or "Trash")
            return Pop3Mailbox(self.name, self.settings, local, self.timeout, self.delete_after)
        if self.settings.imap is not None:
            from mailrules.sources.imap import ImapMailbox

            return ImapMailbox(self.name, self.settings.imap, self.settings.trash, self.timeout)
        assert self.root is not None
        return Maildir(self.root, self.settings.layout, self.settings.trash or "Trash")


@dataclass
class Config:
    path: str
    accounts: dict[str, Account]
    rules: list[Rule]
    notifiers: dict[str, Notifier] = field(default_factory=dict)
    audit: AuditRetention = field(default_factory=AuditRetention)
    warnings: list[ConfigProblem] = field(default_factory=list)  # shown by ``check``


def load_config(path: FsPath | str) -> Config:
    path = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigProblem(path, 1, 1, f"cannot read the config: {reason}")]
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            [ConfigProblem(path, 1, 1, f"the config is larger than {MAX_CONFIG_BYTES >> 20} MiB")]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([_not_utf8(path, data, exc)]) from None
    config = parse_config(text, path)
    use_audit_retention(config.audit)  # every State this process opens prunes by it
    return config


def _not_utf8(path: str, data: bytes, exc: UnicodeDecodeError) -> ConfigProblem:
    """Where the first byte that is not UTF-8 is: its line, and its column in characters."""
    before = data[: exc.start]
    line_start = before.rfind(b"\n") + 1
    col = len(before[line_start:].decode("utf-8", "replace")) + 1
    bad = data[exc.start]
    return ConfigProblem(
        path,
        before.count(b"\n") + 1,
        col,
        f"the config is not UTF-8 text: byte 0x{bad:02x} ({exc.reason}); save the file as UTF-8",
    )


def parse_config(text: str, path: str) -> Config:
    doc = load_yaml(text, path)
    check = Checker(doc)
    for mark, message in doc.problems:
        check.problems.append(ConfigProblem(path, mark.line, mark.col, message))
    data = doc.data
    if doc.problems and data is None:
        raise ConfigError(check.problems)
    if not isinstance(data, dict):
        check.error(
            (), f"the config must be a mapping with 'accounts' and 'rules', got {describe(data)}"
        )
        raise ConfigError(check.problems)
    for key in data:
        if key not in ConfigModel.model_fields:
            check.error(
                (key,),
                f"unknown top-level key '{key}'; {did_you_mean(key, ConfigModel.model_fields)}",
                key=True,
            )

    accounts = _accounts(data, check)
    audit = _audit(data, check)
    rules: list[Rule] = []
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        check.error(("rules",), f"rules: expected a list of rules, got {describe(raw_rules)}")
        raw_rules = []
    names: dict[str, int] = {}
    for i, raw in enumerate(raw_rules):
        rule = _rule(raw, ("rules", i), check, accounts)
        if rule is None:
            continue
        if rule.name in names:
            check.error(
                ("rules", i, "name"),
                f"rules[{i}].name: another rule (rules"
                f"[{names[rule.name]}]) is already called {rule.name!r}",
            )
        names.setdefault(rule.name, i)
        rules.append(rule)
    notifiers: dict[str, Notifier] = {}
    if "notifiers" in data or any(a.name == "notify" for r in rules for a in r.actions):
        from mailrules.notify.config import bind_notifiers, parse_notifiers

        notifiers = parse_notifiers(data, check)
        bind_notifiers(rules, notifiers, check)
    if check.problems or audit is None:
        raise ConfigError(_without_echoes(check.problems, doc))
    warnings = sorted(check.warnings, key=lambda p: (p.line, p.col))
    return Config(path, accounts, rules, notifiers, audit, warnings)


def _audit(data: dict[str, Any], check: Checker) -> AuditRetention | None:
    """The audit log's retention (``audit: {keep: 90d, max_rows: 100000}``)."""
    if "audit" not in data:
        return AuditRetention()
    raw = data["audit"]
    model = _pydantic(AuditModel, raw, ("audit",), check)
    if model is None:
        if isinstance(raw, dict) and isinstance(raw.get("keep"), str):
            check.duration(raw["keep"], ("audit", "keep"))  # its problem too, at once
        return None
    keep = check.duration(model.keep, ("audit", "keep"))
    if keep is None:
        return None
    return AuditRetention(keep=keep, max_rows=model.max_rows)


def _without_echoes(problems: list[ConfigProblem], doc: Document) -> list[ConfigProblem]:
    """Drop later complaints about a value the YAML stage already explained."""
    yaml_spots = {(m.line, m.col) for m, _ in doc.problems}
    yaml_texts = {msg for _, msg in doc.problems}
    return [p for p in problems if (p.line, p.col) not in yaml_spots or p.message in yaml_texts]


def _pydantic(
    model: type[BaseModel] | TypeAdapter[Any], data: Any, base: Path, check: Checker
) -> Any:
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data)
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            _report(err, base, check, model)
        return None


def _report(err: Any, base: Path, check: Checker, model: Any) -> None:
    loc = _real_path(base, err["loc"], check.doc)
    kind = err["type"]
    where = check.where(loc) or "config"
    given = describe(err.get("input"), secret=loc in check.doc.secret_paths)
    if kind == "extra_forbidden":
        parent = loc[:-1]
        key = str(loc[-1])
        fields = _fields_at(model, loc[len(base) : -1])
        hint = did_you_mean(key, fields) if fields else ""
        if key == "pop3":
            hint = "pop3 goes directly under the account's name, beside deliver_to"
        check.error(loc, f"{check.where(parent)}: unknown key '{key}'; {hint}", key=True)
    elif kind == "missing":
        check.error(
            loc[:-1], f"{check.where(loc[:-1]) or 'config'}: missing required key '{loc[-1]}'"
        )
    elif kind == "literal_error":
        check.error(loc, f"{where}: expected one of {err['ctx']['expected']}, got {given}")
    elif kind == "string_type":
        check.error(loc, f"{where}: expected text, got {given}; quote it if you mean text")
    elif kind == "list_type":
        check.error(loc, f"{where}: expected a list, got {given}")
    elif kind == "bool_type":
        check.error(loc, f"{where}: expected true or false, got {given}")
    elif kind in ("greater_than_equal", "less_than_equal"):
        bound = err["ctx"].get("ge", err["ctx"].get("le"))
        side = "greater than" if kind == "greater_than_equal" else "less than"
        check.error(loc, f"{where}: must be {side} or equal to {bound}, got {given}")
    elif kind in ("dict_type", "model_type"):
        check.error(loc, f"{where}: expected a mapping, got {given}")
    else:
        check.error(loc, f"{where}: {err['msg']}")


def _real_path(base: Path, loc: tuple[Any, ...], doc: Document) -> Path:
    """Map a pydantic loc onto the document, skipping union tags that are not keys."""
    path = tuple(base)
    for part in loc:
        candidate = (*path, part)
        if candidate in doc.value_marks or candidate in doc.key_marks:
            path = candidate
        elif isinstance(part, str) and not part.startswith(("function-", "list[", "dict[")):
            path = candidate  # a missing key: point at its parent, named
    return path


def _fields_at(model: Any, rel: Path) -> list[str]:
    """The field names of the (nested) model at a relative path, for suggestions."""
    target = model
    if isinstance(model, TypeAdapter):
        target = AccountModel if rel else None
        rel = rel[1:]
    for part in rel:
        if target is None or part not in target.model_fields:
            return []
        annotation = target.model_fields[part].annotation
        candidates = [annotation, *typing.get_args(annotation)]
        target = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    return list(target.model_fields) if target is not None else []


def _accounts(data: dict[str, Any], check: Checker) -> dict[str, Account]:
    if "accounts" not in data:
        check.error((), "missing required key 'accounts': name at least one mail account")
        return {}
    raw = data["accounts"]
    if not isinstance(raw, dict) or not raw:
        check.error(
            ("accounts",),
            f"accounts: expected a mapping of account names to settings, got {describe(raw)}",
        )
        return {}
    parsed = _pydantic(TypeAdapter(dict[str, AccountModel]), raw, ("accounts",), check)
    if parsed is None:
        return {}
    out = {}
    for name, settings in parsed.items():
        base = ("accounts", name)
        sources = [k for k in ("maildir", "imap", "pop3") if getattr(settings, k) is not None]
        if len(sources) != 1:
            check.error(
                base,
                f"{check.where(base)}: give exactly one of maildir, imap or pop3"
                + (f" (found {' and '.join(sources)})" if sources else ""),
            )
            continue
        account = Account(name, settings)
        schedule = _schedule(settings, base, check)
        if schedule is None:
            continue
        account.schedule = schedule
        if settings.push == "idle" and settings.imap is None:
            check.error(
                (*base, "push"),
                f"{check.where(base)}.push: idle needs an imap account; Maildir and POP3 "
                "accounts are polled on their schedule (remove push, or set push: none)",
            )
        if not _pop3_account_ok(settings, account, base, check):
            continue
        if settings.maildir is not None:
            account.root = expand_path(settings.maildir, (*base, "maildir"), check)
            if account.root is None:
                continue
        elif settings.imap is not None:
            timeout = check.duration(settings.imap.timeout, (*base, "imap", "timeout"))
            if timeout is None or not _imap_ok(settings, (*base, "imap"), check):
                continue
            account.timeout = timeout
        box = account.mailbox()
        folders = [*settings.folders, *([settings.trash] if settings.trash else [])]
        for i, folder in enumerate(folders):
            where = (*base, "folders", i) if i < len(settings.folders) else (*base, "trash")
            problem = box.check_folder_name(folder)
            if problem:
                check.error(where, f"{check.where(where)}: {problem}")
        out[name] = account
    return out


def _schedule(settings: AccountModel, base: Path, check: Checker) -> Schedule | None:
    """The account's polling schedule, or None (with a problem recorded) if it is wrong."""
    model = settings.schedule
    if model is None:
        return Schedule(every=DEFAULT_BACKSTOP if settings.push == "idle" else DEFAULT_EVERY)
    where = (*base, "schedule")
    if (model.every is None) == (model.cron is None):
        check.error(
            where,
            f"{check.where(where)}: give exactly one of every (e.g. every: 5m) or cron "
            '(e.g. cron: "*/10 7-19 * * mon-fri")',
        )
        return None
    jitter = None
    if model.jitter is not None:
        jitter = check.duration(model.jitter, (*where, "jitter"))
        if jitter is None:
            return None
    if model.every is not None:
        every = check.duration(model.every, (*where, "every"))
        if every is None:
            return None
        if every < 1:
            check.error((*where, "every"), f"{check.where(where)}.every: must be 1s or more")
            return None
        return Schedule(every=every, jitter=jitter)
    assert model.cron is not None
    try:
        cron_trigger(model.cron, "UTC")
    except ValueError as exc:
        check.error((*where, "cron"), f"{check.where(where)}.cron: {exc}")
        return None
    return Schedule(cron=model.cron, jitter=jitter)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pop3_account_ok(settings: AccountModel, account: Account, base: Path, check: Checker) -> bool:
    """POP3-only keys on POP3 accounts; for those: the server, deliver_to, delete_after."""
    problems = len(check.problems)
    where = check.where(base)
    if settings.pop3 is None:
        for key in ("deliver_to", "delete_after"):
            if getattr(settings, key) is not None:
                check.error((*base, key), f"{where}.{key}: only POP3 accounts have {key}", key=True)
        if settings.delete_after_delivery:
            check.error(
                (*base, "delete_after_delivery"),
                f"{where}.delete_after_delivery: only POP3 accounts have delete_after_delivery",
                key=True,
            )
        return len(check.problems) == problems
    timeout = check.duration(settings.pop3.timeout, (*base, "pop3", "timeout"))
    if timeout is not None:
        account.timeout = timeout
    _pop3_ok(settings, (*base, "pop3"), check)
    if settings.deliver_to is None:
        check.error(
            base,
            f"{where}: a POP3 account needs deliver_to: the local Maildir its mail is "
            "delivered into",
        )
    else:
        account.root = expand_path(settings.deliver_to, (*base, "deliver_to"), check)
    if settings.delete_after is not None:
        account.delete_after = check.duration(settings.delete_after, (*base, "delete_after"))
    if [f.upper() for f in settings.folders] != ["INBOX"]:
        check.error(
            (*base, "folders"),
            f"{where}.folders: a POP3 server has only INBOX; leave folders out "
            "(rules deliver into local folders with deliver)",
        )
    return len(check.problems) == problems


def _pop3_ok(settings: AccountModel, base: Path, check: Checker) -> None:
    pop = settings.pop3
    assert pop is not None
    if pop.preauth and pop.tunnel is None:
        check.error(
            (*base, "preauth"),
            f"{check.where(base)}.preauth: only a tunnel command can be pre-authenticated; "
            "a network server must log in",
        )
        return
    _server_ok(pop, base, check, preauth=pop.preauth, auth=pop.auth)


def _imap_ok(settings: AccountModel, base: Path, check: Checker) -> bool:
    assert settings.imap is not None
    problems = len(check.problems)
    _server_ok(settings.imap, base, check, preauth=True)  # an IMAP tunnel is pre-authenticated
    return len(check.problems) == problems


def _server_ok(
    server: _ServerModel, base: Path, check: Checker, *, preauth: bool, auth: str = "auto"
) -> None:
    """What IMAP and POP3 servers share: a tunnel or a host, how far to trust it, one secret.

    With preauth a tunnel logs in by itself, so no secret or username is checked. auth is
    POP3's choice of mechanism (auto: any), which the secret must fit.
    """
    where = check.where(base)
    if server.tunnel is not None:
        if server.host or server.port:
            check.error(base, f"{where}: give either tunnel or host/port, not both")
        if not server.tunnel:
            check.error((*base, "tunnel"), f"{where}.tunnel: expected a command (argv list)")
        if preauth:
            return
    elif not server.host:
        check.error(base, f"{where}: missing required key 'host' (or a tunnel command)")
        return
    else:
        if (
            server.security == "plain"
            and not server.allow_plaintext
            and not _is_loopback(server.host)
        ):
            check.error(
                (*base, "security"),
                f"{where}.security: plain sends your password unencrypted to {server.host}; "
                "use tls or starttls, or set allow_plaintext: true if you really mean it",
            )
        if server.fingerprint and normalise_fingerprint(server.fingerprint) is None:
            check.error(
                (*base, "fingerprint"),
                f"{where}.fingerprint: expected sha256: followed "
                "by 64 hex digits (openssl x509 -noout -fingerprint -sha256)",
            )
        if server.fingerprint and server.security == "plain":
            check.error((*base, "fingerprint"), f"{where}.fingerprint: needs tls or starttls")
    secrets = [
        k
        for k in ("password", "password_file", "password_command", "oauth2_token_command")
        if getattr(server, k) is not None
    ]
    if len(secrets) != 1:
        check.error(
            base,
            f"{where}: give exactly one of password, password_file, "
            "password_command or oauth2_token_command"
            + (f" (found {', '.join(secrets)})" if secrets else ""),
        )
    elif auth != "auto" and (auth == "xoauth2") != (secrets[0] == "oauth2_token_command"):
        check.error(
            (*base, "auth"),
            f"{where}.auth: xoauth2 goes with oauth2_token_command, and only with it "
            f"(auth is {auth}, the secret is {secrets[0]})",
        )
    if not server.username:
        check.error(base, f"{where}: missing required key 'username'")


def _same_folder(name: str, folders: list[str]) -> bool:
    if name.upper() == "INBOX":
        return any(f.upper() == "INBOX" for f in folders)
    return name in folders


def _rule(raw: Any, path: Path, check: Checker, accounts: dict[str, Account]) -> Rule | None:
    model = _pydantic(RuleModel, raw, path, check)
    if model is None:
        return None
    condition = None
    if model.when is not None:
        condition = parse_condition(model.when, (*path, "when"), check)
    actions = parse_actions(model.then, (*path, "then"), check)  # checked even if when failed
    if actions is None or (model.when is not None and condition is None):
        return None
    targets = model.accounts if model.accounts is not None else list(accounts)
    for i, name in enumerate(model.accounts or []):
        if name not in accounts:
            check.error(
                (*path, "accounts", i),
                f"{check.where(path)}.accounts: no account "
                f"named {name!r}; {did_you_mean(name, accounts)}",
            )
    for i, folder in enumerate(model.folders or []):
        watched = {f for a in targets if a in accounts for f in accounts[a].settings.folders}
        if folder not in watched:
            check.error(
                (*path, "folders", i),
                f"{check.where(path)}.folders: {folder!r} is not "
                f"a watched folder of {', '.join(targets) or 'any account'}; add it to "
                f"the account's folders ({did_you_mean(folder, watched)})",
            )
    for i, act in enumerate(actions):
        at = (*path, "then", i, act.name)
        for account in (accounts[a] for a in targets if a in accounts):
            box = account.mailbox()
            if act.capability and act.capability not in box.capabilities:
                why = getattr(box, "why_not", {}).get(act.capability)
                check.error(
                    at,
                    f"{check.where(path)}.then[{i}]: account {account.name!r} cannot '{act.name}'"
                    + (f": {why}" if why else ""),
                    key=True,
                )
            if isinstance(act, FolderAction) and act.folder and act.folder.is_static:
                problem = box.check_folder_name(act.folder.text)
                if problem:
                    check.error(at, f"{check.where(path)}.then[{i}]: {problem}")
                read = model.folders if model.folders is not None else account.settings.folders
                if act.name == "copy" and _same_folder(act.folder.text, read):
                    check.warn(
                        at,
                        f"{check.where(path)}.then[{i}]: copies into {act.folder.text}, the "
                        "folder it reads: a copy there would be new mail on the next run; "
                        "mailrules skips it",
                    )
    _warn_option_injection(raw, actions, path, check)
    return Rule(model.name, condition, actions, model.accounts, model.folders, model.enabled)


def _warn_option_injection(raw: Any, actions: list[Any], path: Path, check: Checker) -> None:
    """Warn about ``run`` arguments that begin with a value from the message.

    A sender chooses the Subject, the From name and so on: ``run: [sort, "{subject}"]``
    with the Subject ``-o/path`` makes sort write where the sender wants. Nothing warns
    after a ``--`` argument (the command reads no options there); the safe way to pass a
    value is the environment, where every field is ``$MAILRULES_<FIELD>``.
    """
    then = raw.get("then") if isinstance(raw, dict) else None
    entries = then if isinstance(then, list) else [then]
    for i, act in enumerate(actions):
        if not isinstance(act, RunAction) or i >= len(entries):
            continue
        spec = entries[i].get("run") if isinstance(entries[i], dict) else None
        base = (*path, "then", i, "run", *(("argv",) if isinstance(spec, dict) else ()))
        for k, template in enumerate(act.argv):
            if k == 0:
                continue
            if template.text == "--":
                break
            first = template.parts[0] if template.parts else (False, "")
            if not first[0] or first[1] in CONTEXT_FIELDS:
                continue
            variable = "MAILRULES_" + first[1].upper().replace(".", "_")
            check.warn(
                (*base, k),
                f"{check.where((*base, k))}: {template.text!r} starts with a value from the "
                f"message, which a sender can make start with '-': {act.argv[0].text} would "
                f"read it as an option. Read it from the environment instead (${variable}, "
                "e.g. [/bin/sh, -c, 'exec cmd -- \"$" + variable + "\"']), or put '--' "
                "before it if the command takes one",
            )

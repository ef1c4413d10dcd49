"""The mailrules command line: check, run, explain, deliver, state, notify, folders, schema, demo.

Exit codes (also in the README):
  0   everything succeeded
  1   some actions failed (the rest were done; failed messages are retried next run)
  2   usage or config error (nothing was touched)
  3   an account could not be processed (its mailbox could not be read)
  4   another mailrules already runs on the same state directory (``run`` only)
  75  ``deliver`` could not deliver; the MTA keeps the message and retries (EX_TEMPFAIL)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mailrules import __version__
from mailrules import log as logsetup
from mailrules.config.find import default_state_dir
from mailrules.errors import ConfigError, MailrulesError, StateError
from mailrules.lock import LockedError, StateLock
from mailrules.printable import printable

if TYPE_CHECKING:
    from mailrules.state import State

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_ACCOUNT, EXIT_TEMPFAIL = 0, 1, 2, 3, 75
EXIT_LOCKED = 4
log = logging.getLogger("mailrules")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        help="config file (default: $MAILRULES_CONFIG, "
        "~/.config/mailrules/rules.yaml, /etc/mailrules/rules.yaml)",
    )
    common.add_argument(
        "--state-dir",
        help="state directory (default: $STATE_DIRECTORY or ~/.local/state/mailrules)",
    )
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    common.add_argument("-q", "--quiet", action="store_true", help="only errors")
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines on stderr as text (default) or one JSON object per line",
    )

    parser = argparse.ArgumentParser(
        prog="mailrules", description="Match new mail against YAML rules and act on it."
    )
    parser.add_argument("--version", action="version", version=f"mailrules {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("check", parents=[common], help="validate the config and exit")

    run = sub.add_parser(
        "run",
        parents=[common],
        help="process new mail: as a service (polls on schedules, IDLE), or --once",
    )
    run.add_argument("--once", action="store_true", help="one pass over every account, then exit")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan a real run would execute; change nothing",
    )
    run.add_argument(
        "--account", action="append", metavar="NAME", help="only this account (repeatable)"
    )
    run.add_argument(
        "--all", action="store_true", help="apply the rules to every message, not only new ones"
    )
    run.add_argument(
        "--notify-budget",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="after the mail work, send due notifications for at most this long (default 30)",
    )

    explain = sub.add_parser(
        "explain", parents=[common], help="show how the rules decide for message files"
    )
    explain.add_argument("messages", nargs="+", metavar="MESSAGE.eml")
    explain.add_argument("--account", help="evaluate as if in this account")
    explain.add_argument("--folder", default="INBOX", help="evaluate as if in this folder")

    deliver = sub.add_parser(
        "deliver", parents=[common], help="deliver one message from stdin through the rules (MDA)"
    )
    deliver.add_argument("--account", help="the Maildir account to deliver into")

    state = sub.add_parser("state", parents=[common], help="show the audit log and folder state")
    state.add_argument("--account", help="only this account")
    state.add_argument("--limit", type=int, default=50, help="audit rows to show (default 50)")

    notify = sub.add_parser(
        "notify", parents=[common], help="send the notifications that are due (the outbox)"
    )
    notify.add_argument(
        "--retry-dead", action="store_true", help="first queue given-up notifications again"
    )
    notify.add_argument(
        "--budget", type=float, default=60.0, metavar="SECONDS", help="stop after (default 60)"
    )
    status = sub.add_parser(
        "status", parents=[common], help="the service: per account last poll, last error, next run"
    )
    status.add_argument("--account", help="only this account")
    status.add_argument("--json", action="store_true", help="as JSON")

    folders = sub.add_parser("folders", parents=[common], help="list an account's folders")
    folders.add_argument("account")

    sub.add_parser("schema", help="print the JSON Schema of the config")

    demo = sub.add_parser("demo", help="run the example rules on a bundled demo Maildir")
    demo.add_argument("--dir", help="where to create the demo (default: a new temporary dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    verbosity = -1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0)
    if args.command == "run" and not args.once and verbosity >= 0:
        verbosity += 1  # the service logs one line per action by default
    logsetup.setup(verbosity, getattr(args, "log_format", "text"))
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        count = len(exc.problems)
        if any(p.line for p in exc.problems):  # not for "no config file found"
            print(
                f"{count} problem{'s' * (count != 1)} in the config; nothing was changed",
                file=sys.stderr,
            )
        return EXIT_TEMPFAIL if args.command == "deliver" else EXIT_CONFIG
    except LockedError as exc:
        print(f"mailrules: {printable(exc)}", file=sys.stderr)
        return EXIT_LOCKED
    except MailrulesError as exc:
        print(f"mailrules: {printable(exc)}", file=sys.stderr)
        return EXIT_TEMPFAIL if args.command == "deliver" else EXIT_ACCOUNT
    except sqlite3.Error as exc:  # a read outside State's own checks (the outbox, status)
        from mailrules.state import state_error

        error = state_error(_state_dir(args) / "state.sqlite3", exc, "use")
        print(f"mailrules: {printable(error)}", file=sys.stderr)
        return EXIT_TEMPFAIL if args.command == "deliver" else EXIT_ACCOUNT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into head or less, which quit early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def _config(args: argparse.Namespace):
    from mailrules.config.load import discover, load_config

    return load_config(discover(args.config))


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if args.state_dir else default_state_dir()


def _state(args: argparse.Namespace, create: bool = True) -> State | None:
    path = _state_dir(args) / "state.sqlite3"
    if not create and not path.exists():
        return None
    from mailrules.state import State

    return State(path)


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
    for warning in config.warnings:
        where, _, message = str(warning).partition(f":{warning.col}: ")
        print(f"{where}:{warning.col}: warning: {message}", file=sys.stderr)
    count = len(config.warnings)
    print(
        f"{config.path}: OK ({len(config.accounts)} account"
        f"{'s' * (len(config.accounts) != 1)}, {len(config.rules)} rule"
        f"{'s' * (len(config.rules) != 1)}"
        + (f", {count} warning{'s' * (count != 1)}" if count else "")
        + ")"
    )
    return EXIT_OK


def _print_event(event) -> None:
    subject = event.subject if len(event.subject) <= 50 else event.subject[:49] + "…"
    status = "" if event.result == "ok" else f"  [{printable(event.result, 500)}]"
    if event.result == "planned":
        status = ""
    print(
        f"{printable(event.account)}/{printable(event.folder, 200)}: "
        f"{printable(event.action, 200)}  by {event.rule!r}  "
        f"<{printable(event.sender, 200)}> {printable(repr(subject))}{status}",
        flush=True,
    )


def _is_failure(event) -> bool:
    return event.result not in ("ok", "planned") and not event.result.startswith("skipped")


def _failures_line(failed: list) -> str:
    """One line on stderr naming what failed (the errors themselves are on stdout, once)."""
    counts: dict[str, int] = {}
    for event in failed:
        key = f"{event.action} by {event.rule!r}"
        counts[key] = counts.get(key, 0) + 1
    named = "; ".join(f"{printable(k, 200)} ({n})" for k, n in list(counts.items())[:5])
    more = f"; and {len(counts) - 5} more" if len(counts) > 5 else ""
    return (
        f"mailrules: {len(failed)} action{'s' * (len(failed) != 1)} failed: {named}{more}; "
        "those messages were left where they were and are tried again on the next run"
    )


def cmd_run(args: argparse.Namespace) -> int:
    if not args.once and (args.dry_run or args.all):
        print("mailrules: --dry-run and --all go with --once", file=sys.stderr)
        return EXIT_CONFIG
    started = time.monotonic()
    if args.once and not (args.dry_run or args.all) and _quick_poll(args):
        if not args.quiet:
            print(f"0 new messages, 0 actions done, 0 failed ({time.monotonic() - started:.2f}s)")
        return EXIT_OK
    config = _config(args)
    for name in args.account or []:
        if name not in config.accounts:
            print(f"mailrules: no account named {name!r} in {config.path}", file=sys.stderr)
            return EXIT_CONFIG
    if not args.once:
        return _serve(args, config)
    lock = None
    if not args.dry_run:
        lock = _lock(args, "run --once")
    try:
        return _run_once(args, config)
    finally:
        if lock is not None:
            lock.release()


def _serve(args: argparse.Namespace, config) -> int:
    from mailrules.service import Service

    lock = _lock(args, "service")
    service = Service(config, _state_dir(args), only=args.account)
    try:
        code = service.serve()
    finally:
        lock.release()
    if service.abandoned:  # pool threads still busy: do not wait for them at exit
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code


def _lock(args: argparse.Namespace, what: str) -> StateLock:
    """The state directory's lock, taken; a directory that cannot be used is a StateError."""
    lock = StateLock(_state_dir(args))
    try:
        lock.acquire(what)
    except OSError as exc:
        raise StateError(
            f"cannot use the state directory {_state_dir(args)}: {exc.strerror or exc}"
        ) from None
    return lock


def _run_once(args: argparse.Namespace, config) -> int:
    from mailrules.runner import RunOptions, run_once

    fresh = not (_state_dir(args) / "state.sqlite3").exists()
    state = _state(args, create=not args.dry_run)  # a dry run never creates state
    failed: list = []

    def on_event(event) -> None:
        if _is_failure(event):
            failed.append(event)
        if not args.quiet:
            _print_event(event)

    options = RunOptions(dry_run=args.dry_run, process_all=args.all, on_event=on_event)
    started = time.monotonic()
    sent = None
    try:
        report = run_once(config, state, options, args.account)
        mail_time = time.monotonic() - started
        if state and config.notifiers and not args.dry_run:  # act first; then send
            sent = _send_notifications(config, state, args.notify_budget)
    finally:
        if state:
            state.close()
    if fresh and report.baselines and not args.quiet:
        _warn_new_baseline(_state_dir(args) / "state.sqlite3", report.baselines)
    if not args.quiet:
        for note in report.notes:
            print(printable(note, 1000))
        verb = "planned" if args.dry_run else "done"
        acted = report.acted
        print(
            f"{report.new} new message{'s' * (report.new != 1)}, {acted} action"
            f"{'s' * (acted != 1)} {verb}, {report.failed_actions} failed"
            + (
                f", {len(report.failed_accounts)} account"
                f"{'s' * (len(report.failed_accounts) != 1)} failed"
                if report.failed_accounts
                else ""
            )
            + f" ({mail_time:.2f}s)"
        )
        if sent is not None and sent[1]:
            print(sent[1])
    if failed:
        print(_failures_line(failed), file=sys.stderr)
    if sent is not None and sent[0]:  # a notification was given up: say so in the exit code
        return max(report.exit_code, EXIT_FAILED)
    return report.exit_code


def _warn_new_baseline(path: Path, baselines: list[tuple[str, int | None]]) -> None:
    """A first run without a state file: loud, as a lost state looks exactly like it."""
    folders = ", ".join(
        printable(f"{where} ({n} message{'s' * (n != 1)})" if n is not None else where)
        for where, n in baselines
    )
    print(
        f"mailrules: warning: there was no state file ({path}), so this run was a first run: "
        f"the mail already in {folders} was recorded as seen and no rule was applied to it. "
        "If mailrules ran here before, its state was deleted or moved: run "
        "'mailrules run --once --all' to apply the rules to every message.",
        file=sys.stderr,
    )


def _send_notifications(config, state: State, budget: float) -> tuple[int, str]:
    """Send what is due: (how many were given up, a summary line)."""
    from mailrules.notify.outbox import dispatch

    started = time.monotonic()
    report = dispatch(state, config.notifiers, budget)
    if not (report.sent or report.retrying or report.dead or report.waiting or report.digests):
        return 0, ""
    return report.dead, f"notifications: {report.summary()} ({time.monotonic() - started:.2f}s)"


def _quick_poll(args: argparse.Namespace) -> bool:
    """Accounts exactly as the last clean run left them: nothing to load or do."""
    from mailrules.config.find import discover
    from mailrules.quick_poll import nothing_new

    return nothing_new(discover(args.config), _state_dir(args) / "state.sqlite3", args.account)


def cmd_explain(args: argparse.Namespace) -> int:
    config = _config(args)
    account = args.account or next(iter(config.accounts))
    if account not in config.accounts:
        print(f"mailrules: no account named {account!r} in {config.path}", file=sys.stderr)
        return EXIT_CONFIG
    box = config.accounts[account].mailbox()  # not opened: only its folder-name cleaner
    try:
        return _explain_files(args, config, account, box.clean_component)
    finally:
        box.close()


def _explain_files(args: argparse.Namespace, config, account: str, clean_folder) -> int:
    from mailrules.message import MessageView
    from mailrules.runner import explain_decision

    status = EXIT_OK
    for path in args.messages:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        view = MessageView.from_bytes(data, name=path, arrived=None)
        froms = ", ".join(
            f"{a.name} <{a.address}>" if a.name else a.address for a in view.addresses("from")
        )
        print(f"{printable(path)}")
        print(f"  From: {printable(froms, 500) or '(none)'}")
        print(f"  Subject: {printable(repr(view.subject), 500)}")
        try:
            decision = explain_decision(
                view, config.rules, account, args.folder, clean_folder=clean_folder
            )
        except MailrulesError as exc:
            print(f"  error: {printable(exc, 1000)}")
            status = EXIT_FAILED
            continue
        for trace in decision.trace:
            mark = {True: "MATCH", False: "no", None: "skip"}[trace.matched]
            print(f"  [{mark:5}] {printable(trace.rule)}: {printable(trace.why, 1000)}")
            for step in trace.steps:
                print(f"          -> {printable(step.describe(), 1000)}")
        if view.defects:
            print(f"  malformed: {printable('; '.join(view.defects[:5]), 1000)}")
        print(f"  result: {printable(decision.final, 1000)}")
    return status


def cmd_deliver(args: argparse.Namespace) -> int:
    from mailrules.deliver import deliver

    data = sys.stdin.buffer.read()
    config = _config(args)
    return deliver(config, data, args.account, lambda: _state(args))


def cmd_state(args: argparse.Namespace) -> int:
    state = _state(args, create=False)
    if state is None:
        print("no state yet: nothing has run with this state directory")
        return EXIT_OK
    print("folders:")
    for account, folder, validity, baseline, count in state.summary():
        if args.account and account != args.account:
            continue
        when = datetime.fromtimestamp(baseline, UTC).strftime("%Y-%m-%d %H:%M")
        print(
            f"  {printable(account)}/{printable(folder)}: {count} seen "
            f"(validity {printable(validity)}, since {when} UTC)"
        )
    print("recent actions:")
    for (
        at,
        account,
        folder,
        _uid,
        mid,
        sender,
        subject,
        rule,
        action,
        result,
        error,
    ) in state.audit_log(args.limit, args.account):
        when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        extra = f" ({printable(error)})" if error else ""
        print(
            f"  {when} {printable(account)}/{printable(folder)} {rule!r}: {printable(action)} "
            f"{result}{extra}  <{printable(sender)}> {printable(repr(subject))} {printable(mid)}"
        )
    from mailrules.notify.store import status_lines

    for line in status_lines(state.db):
        print(line)
    return EXIT_OK


def cmd_notify(args: argparse.Namespace) -> int:
    from mailrules.notify.outbox import retry_dead

    config = _config(args)
    state = _state(args)
    assert state is not None
    try:
        if args.retry_dead:
            print(f"{retry_dead(state)} given-up notifications queued again")
        dead, line = _send_notifications(config, state, args.budget)
    finally:
        state.close()
    if not args.quiet:
        print(line or "notifications: nothing due")
    return EXIT_FAILED if dead else EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from mailrules.service import PERIODIC_JOBS
    from mailrules.status import collect, render

    state = _state(args, create=False)
    try:
        report = collect(state, _state_dir(args), args.account, PERIODIC_JOBS)
    finally:
        if state is not None:
            state.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(render(report)))
    return EXIT_OK


def cmd_folders(args: argparse.Namespace) -> int:
    config = _config(args)
    account = config.accounts.get(args.account)
    if account is None:
        print(f"mailrules: no account named {args.account!r}", file=sys.stderr)
        return EXIT_CONFIG
    box = account.mailbox()
    try:
        details = getattr(box, "folder_details", None)
        if details is None:
            for name in box.folders():
                print(printable(name))
        else:
            for name, attrs in details():
                special = [a for a in attrs if a.lstrip("\\") in SPECIAL_USE]
                print(f"{printable(name)}  {' '.join(special)}" if special else printable(name))
    finally:
        box.close()
    return EXIT_OK


SPECIAL_USE = {"All", "Archive", "Drafts", "Flagged", "Junk", "Sent", "Trash"}


def cmd_schema(args: argparse.Namespace) -> int:
    from mailrules.config.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from mailrules.demo import run_demo

    return run_demo(args.dir)


COMMANDS = {
    "check": cmd_check,
    "run": cmd_run,
    "explain": cmd_explain,
    "deliver": cmd_deliver,
    "state": cmd_state,
    "notify": cmd_notify,
    "status": cmd_status,
    "folders": cmd_folders,
    "schema": cmd_schema,
    "demo": cmd_demo,
}

if __name__ == "__main__":
    sys.exit(main())

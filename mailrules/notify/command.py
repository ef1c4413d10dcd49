"""The command channel: run argv with the notification as JSON on stdin.

Never through a shell; a minimal environment (``mailrules.commands``) plus
``MAILRULES_RULE``, ``MAILRULES_NOTIFIER``, ``MAILRULES_MESSAGE_ID`` and
``MAILRULES_IDEMPOTENCY_KEY``. Exit 0 means sent; any other exit, or running past the
timeout, is retried with backoff. A command that cannot be started is not retried.
"""

from __future__ import annotations

import json

from mailrules.commands import CommandFailed, run_command
from mailrules.errors import NotifyError, NotifyRetry
from mailrules.notify.config import Notifier
from mailrules.notify.outbox import Job
from mailrules.secrets import redact


def send(notifier: Notifier, job: Job) -> str:
    argv = list(notifier.settings.argv)
    env = {
        "MAILRULES_RULE": str(job.payload.get("rule", "")),
        "MAILRULES_NOTIFIER": notifier.name,
        "MAILRULES_MESSAGE_ID": str(job.payload.get("message_id") or ""),
        "MAILRULES_IDEMPOTENCY_KEY": job.key,
    }
    data = json.dumps(job.payload, ensure_ascii=False).encode()
    try:
        done = run_command(argv, data, notifier.command_timeout, env)
    except CommandFailed as exc:
        if "did not finish" in str(exc):
            raise NotifyRetry(str(exc)) from None
        raise NotifyError(str(exc)) from None
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        tail = f": {redact(err[-1][:200])}" if err else ""
        raise NotifyRetry(f"{argv[0]!r} exited {done.returncode}{tail}")
    return "exit 0"

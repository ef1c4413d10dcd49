"""Running user commands: argv only, never a shell, with a timeout and a minimal environment.

Used by the ``command`` condition and the ``run`` action. The child gets the message on
stdin, a small fixed environment (no credentials, no systemd notify socket) plus
``MAILRULES_*`` variables describing the message (``message_env``: every template
field), and its own process group so that a timeout kills everything it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass

_KEEP_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: a few safe variables, then ``extra``."""
    env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(extra or {})
    return env


ENV_VALUE_MAX = 4096  # characters of one MAILRULES_* value (the whole message is on stdin)


def message_env(view: object) -> dict[str, str]:
    """``MAILRULES_<FIELD>`` for every template field of a message (``{from.address}`` is
    ``MAILRULES_FROM_ADDRESS``): the safe way to hand a command a value the sender chose,
    where it can never be read as an option. NULs are dropped and long values cut."""
    from mailrules.rules.templates import FIELDS  # not at import: the quick poll stays light

    env = {}
    for name, get in FIELDS.items():
        try:
            value = str(get(view))  # type: ignore[arg-type]
        except Exception:  # a field a broken message cannot give is empty, as in a template
            value = ""
        value = value.replace("\0", "")[:ENV_VALUE_MAX]
        # a lone surrogate (a broken charset) cannot go into the environment: escape it
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        env["MAILRULES_" + name.upper().replace(".", "_")] = value
    return env


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: bytes


class CommandFailed(Exception):
    """The command could not be started, or it ran past its timeout."""


def run_command(
    argv: list[str], stdin: bytes, timeout: float, extra_env: dict[str, str] | None = None
) -> CommandResult:
    """Run argv with ``stdin`` as input; raise CommandFailed if it cannot start or times out."""
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(extra_env),
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise CommandFailed(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise CommandFailed(f"{argv[0]!r} did not finish within {timeout:g}s; killed") from None
    except BrokenPipeError:  # the command did not read all of stdin, which is its right
        out, err = proc.communicate(timeout=timeout)
    return CommandResult(proc.returncode, out or b"", err or b"")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()

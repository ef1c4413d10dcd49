"""Running user commands: argv only, never a shell, with a timeout and a minimal environment.

Used by the ``command`` condition and the ``run`` action. The child gets the message on
stdin, a small fixed environment (no credentials, no systemd notify socket) plus
``MAILRULES_*`` variables describing the message, and its own process group so that a
timeout kills everything it started.
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

"""Running user commands: argv only, never a shell, with a timeout and a minimal environment.

Used by the ``command`` condition and the ``run`` action. The child gets the message on
stdin, a small fixed environment (no credentials, no systemd notify socket) plus
``MAILRULES_*`` variables describing the message (``message_env``: every template
field), and its own process group so that a timeout kills everything it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

_KEEP_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: a few safe variables, then ``extra``."""
    env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(extra or {})
    return env


OUTPUT_CAP = 1024 * 1024  # bytes of stdout (and of stderr) kept from one command
_EXIT_DRAIN = 0.2  # seconds to read what is left in the pipes once the command exited


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
    truncated: bool = False  # output beyond OUTPUT_CAP was read and dropped


class CommandFailed(Exception):
    """The command could not be started, or it ran past its timeout."""


def run_command(
    argv: list[str],
    stdin: bytes,
    timeout: float,
    extra_env: dict[str, str] | None = None,
    output_cap: int = OUTPUT_CAP,
) -> CommandResult:
    """Run argv with ``stdin`` as input; raise CommandFailed if it cannot start or times out.

    The command runs in a session (and process group) of its own. It is done when it
    exits: a background process it left (even one in a session of its own, out of reach
    of the group kill) may hold the output pipes open, and is not waited for. At the
    timeout its whole process group is killed. At most ``output_cap`` bytes of each of
    stdout and stderr are kept; the rest is read and dropped, so a flood cannot fill
    memory, and ``truncated`` says so.
    """
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
        return _talk(proc, argv[0], stdin, time.monotonic() + timeout, timeout, output_cap)
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _talk(
    proc: subprocess.Popen[bytes],
    name: str,
    data: bytes,
    deadline: float,
    timeout: float,
    cap: int,
) -> CommandResult:
    assert proc.stdin and proc.stdout and proc.stderr
    sel = selectors.DefaultSelector()
    pidfd = _pidfd(proc.pid)
    try:
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, "exit")
        kept: dict[str, bytearray] = {"out": bytearray(), "err": bytearray()}
        truncated = False
        for pipe, key in ((proc.stdout, "out"), (proc.stderr, "err")):
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe, selectors.EVENT_READ, key)
        view = memoryview(data)
        if view:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE, "in")
        else:
            proc.stdin.close()
        exited_at: float | None = None
        while True:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            limit = deadline if exited_at is None else exited_at + _EXIT_DRAIN
            readers = [k for k in sel.get_map().values() if k.data in ("out", "err")]
            if exited_at is not None and not readers:
                break
            if now >= limit:
                if exited_at is None:
                    _kill_group(proc)
                    raise CommandFailed(
                        f"{name!r} did not finish within {timeout:g}s; killed its process "
                        f"group (pid {proc.pid})"
                    )
                log.info(
                    "%r exited; a process it left in the background still holds its "
                    "output open and is not waited for",
                    name,
                )
                break
            wait = min(limit - now, 0.05 if pidfd is None else limit - now)
            for key, _ in sel.select(max(wait, 0)):
                if key.data == "exit":
                    sel.unregister(key.fileobj)
                    proc.poll()
                elif key.data == "in":
                    try:
                        view = view[os.write(proc.stdin.fileno(), view[:65536]) :]
                    except (BrokenPipeError, OSError):  # it need not read all of stdin
                        view = view[:0]
                    if not view:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                else:
                    try:
                        chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    buf = kept[key.data]
                    room = cap - len(buf)
                    if len(chunk) > room:
                        truncated = True
                    buf += chunk[: max(room, 0)]
        if "in" in {k.data for k in sel.get_map().values()}:
            sel.unregister(proc.stdin)
        returncode = proc.wait()
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
    if truncated:
        log.warning("%r wrote more than %d bytes: the output beyond that was dropped", name, cap)
    return CommandResult(returncode, bytes(kept["out"]), bytes(kept["err"]), truncated)


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when the child exits (Linux 5.3+), if any."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

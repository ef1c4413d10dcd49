"""Helpers for the service tests: the service as a subprocess, and a datagram socket
standing in for systemd's notify socket. Dovecot itself comes from tests/dovecot.py."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


class NotifySocket:
    """An AF_UNIX datagram socket the test owns, standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[str] = []

    def wait_for(self, field: str, timeout: float = 15) -> str:
        """Read messages until one has ``field`` (e.g. "READY=1"); return that message."""
        deadline = time.monotonic() + timeout
        for seen in self.messages:
            if field in seen.split("\n"):
                self.messages.remove(seen)
                return seen
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                break
            if field in data.split("\n"):
                return data
            self.messages.append(data)
        raise AssertionError(f"no {field!r} within {timeout}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


class ServiceProcess:
    """``mailrules run`` (the service) in a subprocess, its stderr in a file."""

    def __init__(
        self,
        config: Path,
        state_dir: Path,
        env: dict[str, str],
        notify: NotifySocket | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.log = state_dir.parent / f"service-{time.monotonic_ns()}.log"
        full_env = dict(env)
        if notify is not None:
            full_env["NOTIFY_SOCKET"] = str(notify.path)
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "mailrules.cli", "run", "-c", str(config)),
                    *("--state-dir", str(state_dir), *(extra or [])),
                ],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                env=full_env,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in the service log:\n{self.output}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the service ignored SIGTERM:\n{self.output}") from None

    def imap_children(self) -> list[int]:
        """Pids of the Dovecot imap processes the service started through its tunnels."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid and comm == "imap":
                    out.append(int(entry.name))
        return out


def wait_until(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

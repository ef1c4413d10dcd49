"""systemd integration: sd_notify datagrams, the watchdog interval, and the shipped unit files
checked by systemd-analyze (which works offline, without systemd running)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mailrules import systemd

ROOT = Path(__file__).parent.parent
UNITS = ROOT / "systemd"
SYSTEM_UNITS = ["mailrules.service", "mailrules-once.service", "mailrules-once.timer"]


@pytest.fixture
def listener(tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_sd_notify_sends_one_datagram_per_call(listener):
    assert systemd.ready("2 accounts")
    assert listener.recv(4096).decode().split("\n") == [
        "READY=1",
        "STATUS=2 accounts",
        f"MAINPID={os.getpid()}",
    ]
    assert systemd.status("polling\nwork")  # a newline would start a new field
    assert listener.recv(4096) == b"STATUS=polling work"
    systemd.watchdog()
    assert listener.recv(4096) == b"WATCHDOG=1"
    systemd.stopping("bye")
    assert listener.recv(4096) == b"STOPPING=1\nSTATUS=bye"


def test_sd_notify_reaches_an_abstract_socket(monkeypatch):
    name = f"mailrules-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.reloading("reloading")
        assert sock.recv(4096) == b"RELOADING=1\nSTATUS=reloading"


def test_sd_notify_without_systemd_does_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.ready("x")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not systemd.watchdog()  # logged once, never raised


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [("30000000", None, 30.0), ("0", None, None), ("", None, None), ("5000000", "1", None)],
)
def test_watchdog_interval_is_for_this_process_only(monkeypatch, usec, pid, expected):
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert systemd.watchdog_interval() == expected


def _installed_copies(tmp_path: Path) -> Path:
    """The units with the mailrules of this venv, so verify can check the Exec lines."""
    binary = Path(sys.executable).parent / "mailrules"
    out = tmp_path / "units"
    (out / "user").mkdir(parents=True)
    for name in [*SYSTEM_UNITS, "user/mailrules.service"]:
        text = (UNITS / name).read_text()
        text = text.replace("/usr/local/bin/mailrules", str(binary))
        text = text.replace("%h/.local/bin/mailrules", str(binary))
        (out / name).write_text(text)
    return out


@pytest.fixture
def analyze():
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return found


def test_unit_files_pass_systemd_analyze_verify(analyze, tmp_path):
    units = _installed_copies(tmp_path)
    done = subprocess.run(
        [analyze, "verify", *SYSTEM_UNITS], cwd=units, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr  # warnings go to stderr
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    done = subprocess.run(
        [analyze, "--user", "verify", "user/mailrules.service"],
        cwd=units,
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize("unit", ["mailrules.service", "mailrules-once.service"])
def test_system_units_are_hardened(analyze, tmp_path, unit):
    units = _installed_copies(tmp_path)
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=20", unit],
        cwd=units,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    level = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout).group(1))
    assert level <= 2.0, done.stdout  # "OK" in systemd's words; 10 is no sandbox at all


def test_service_unit_is_what_the_service_expects():
    text = (UNITS / "mailrules.service").read_text()
    for line in (
        "Type=notify",
        "ExecStartPre=/usr/local/bin/mailrules check",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=mailrules",
        "ConfigurationDirectory=mailrules",
        "LoadCredential=mail:/etc/mailrules/credentials",
        "TimeoutStopSec=30s",
    ):
        assert line in text.splitlines(), line
    assert "WatchdogSec=" in text
    assert "Type=notify-reload" not in text.splitlines()  # systemd 252 (Debian 12) lacks it

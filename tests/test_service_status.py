"""The service on local Maildirs: the lock, `mailrules status`, a failing account that stalls
nothing, the periodic-job hook, and log formats (JSON, journald)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from mailrules.config.load import load_config
from mailrules.service import PeriodicJob, Service
from mailrules.state import State
from mailrules.status import collect, render
from tests.service_support import NotifySocket, ServiceProcess, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def service_config(tmp_path, maildir):
    maildir.add(subject="waiting", from_="alice@example.org")
    config = tmp_path / "rules.yaml"
    config.write_text(
        "accounts:\n"
        "  local:\n"
        f"    maildir: {maildir.root}\n"
        "    existing: process\n"
        "    schedule: {every: 1h}\n"
        "  broken:\n"
        "    imap: {tunnel: [/bin/false]}\n"
        "    schedule: {every: 1h}\n"
        "rules:\n"
        "  - {name: alice, accounts: [local], when: {from: alice@example.org}, "
        "then: [{move: Alice}]}\n"
    )
    return config


def test_a_failing_account_stalls_nothing_and_status_tells(
    service_config, maildir, tmp_path, env, run_cli
):
    notify = NotifySocket(tmp_path)
    service = ServiceProcess(service_config, tmp_path / "state", env, notify)
    try:
        notify.wait_for("READY=1")
        wait_until(lambda: maildir.files("Alice"), 10, "the working account")
        service.wait_log("broken (tunnel /bin/false): cannot connect: ")
        assert "next try at" in service.output and "1 failure in a row" in service.output
        state_dir = str(tmp_path / "state")

        def status_shows_both() -> str:
            text = run_cli("status", "--state-dir", state_dir).stdout
            return text if "account local: last poll" in text else ""

        text = wait_until(status_shows_both, 10, "the status of both accounts")
        assert f"service: running (pid {service.proc.pid})" in text
        assert "account broken: last poll" in text and "(failed, 1 in a row), next run" in text
        assert "last error" in text and "cannot connect" in text
        assert "account local: last poll" in text and "(ok), next run" in text
        report = json.loads(run_cli("status", "--json", "--state-dir", state_dir).stdout)
        assert report["service"] == {"running": True, "pid": service.proc.pid, "holder": "service"}
        broken = next(a for a in report["accounts"] if a["name"] == "broken")
        assert broken["failures_in_a_row"] == 1 and "cannot connect" in broken["last_error"]
        assert (
            broken["next_run"]
            < next(a for a in report["accounts"] if a["name"] == "local")["next_run"]
        )  # the retry comes long before the hourly poll

        second = run_cli("run", "-c", str(service_config), "--state-dir", state_dir)
        assert second.returncode == 4
        assert f"another mailrules (pid {service.proc.pid}) is already running" in second.stderr
        once = run_cli("run", "--once", "-c", str(service_config), "--state-dir", state_dir)
        assert once.returncode == 4

        assert service.stop() == 0
        after = run_cli("status", "--state-dir", state_dir).stdout
        assert after.startswith("service: not running") and "next run" not in after
    finally:
        notify.close()
        if service.proc.poll() is None:
            service.proc.kill()


def test_status_without_any_state(run_cli, tmp_path):
    result = run_cli("status", "--state-dir", str(tmp_path / "none"))
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "service: not running",
        "no service status recorded yet (it is written by 'mailrules run')",
    ]


def test_periodic_jobs_run_on_their_own_thread_with_their_own_state(tmp_path, write_config):
    config = write_config("[]", "schedule: {every: 1h}\n")
    calls: list[tuple[str, int]] = []

    def tick(ctx) -> None:
        count = ctx.state.db.execute("SELECT count(*) FROM folders").fetchone()[0]
        calls.append((threading.current_thread().name, count))
        if len(calls) == 2:
            raise RuntimeError("the second run fails")

    job = PeriodicJob("tick", 0.2, tick, describe=lambda state: "3 waiting")
    service = Service(load_config(config), tmp_path / "state", periodic=[job])
    service.start()
    try:
        wait_until(lambda: len(calls) >= 3, 10, "three runs of the job")
    finally:
        service.stop()
    assert all(name != threading.current_thread().name for name, _ in calls)
    state = State(tmp_path / "state" / "state.sqlite3")
    try:
        report = collect(state, tmp_path / "state", jobs=[job])
    finally:
        state.close()
    (entry,) = report["jobs"]
    assert entry["name"] == "tick" and entry["info"] == "3 waiting"
    assert "RuntimeError('the second run fails')" in entry["last_error"]
    lines = render(report)
    assert any(line.startswith("job tick: last run") for line in lines)
    assert "  3 waiting" in lines


def test_a_periodic_job_can_run_right_after_new_mail(tmp_path, maildir, write_config):
    config = write_config("[]", "schedule: {every: 1s, jitter: 0s}\n")
    calls: list[float] = []
    job = PeriodicJob("send", 3600, lambda ctx: calls.append(time.monotonic()), after_new_mail=True)
    service = Service(load_config(config), tmp_path / "state", periodic=[job])
    service.start()
    try:
        wait_until(lambda: calls, 10, "the job's run at start-up")
        time.sleep(1.5)  # a poll or two with nothing new: no extra run
        assert len(calls) == 1
        maildir.add(subject="news")
        wait_until(lambda: len(calls) == 2, 10, "a run after the new mail")
    finally:
        service.stop()


def test_a_job_the_config_does_not_want_costs_nothing(tmp_path, write_config):
    """The outbox's dispatcher with no notifiers configured: it never opens the state."""
    config = write_config("[]", "schedule: {every: 1h}\n")
    calls: list[str] = []
    wanted = PeriodicJob("wanted", 0.1, lambda ctx: calls.append("wanted"))
    idle = PeriodicJob("idle", 0.1, lambda ctx: calls.append("idle"), wanted=lambda c: False)
    service = Service(load_config(config), tmp_path / "state", periodic=[wanted, idle])
    service.start()
    try:
        wait_until(lambda: calls.count("wanted") >= 3, 10, "three runs of the wanted job")
    finally:
        service.stop()
    assert "idle" not in calls
    assert service.job_status["idle"].last_run is None


def test_service_lock_is_taken_and_released(tmp_path):
    from mailrules.lock import LockedError, StateLock, holder

    first = StateLock(tmp_path)
    first.acquire("service")
    assert holder(tmp_path) == (os.getpid(), "service")
    with pytest.raises(LockedError, match=f"another mailrules \\(pid {os.getpid()}\\)"):
        StateLock(tmp_path).acquire("run --once")
    first.release()
    assert holder(tmp_path) is None
    StateLock(tmp_path).acquire("service")  # free again (and dropped at exit)


def test_json_logs_carry_account_folder_and_uid(run_cli, write_config, maildir):
    mid = maildir.add(subject="hi", from_="alice@example.org")
    config = write_config(
        "- {name: alice, when: {from: alice@example.org}, then: [{move: Alice}]}\n",
        account_extra="existing: process\n",
    )
    result = run_cli("run", "--once", "-v", "--log-format", "json", "-c", str(config))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    (action,) = [r for r in records if r["logger"] == "mailrules.actions"]
    assert action["account"] == "local" and action["folder"] == "INBOX"
    assert action["uid"] and action["level"] == "info"
    assert f"message_id={mid}" in action["message"]
    assert "action='move -> Alice'" in action["message"]
    assert action["time"].endswith("Z")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_journald_gets_priority_prefixes_only_on_its_own_stream(tmp_path, env, fmt):
    probe = (
        "import logging, sys; from mailrules import log; log.setup(0, sys.argv[1]); "
        "logging.getLogger('mailrules.x').warning('careful')"
    )
    lines = []
    for journal_matches in (True, False):
        path = tmp_path / f"stderr-{journal_matches}"
        with path.open("wb") as f:
            stat = os.fstat(f.fileno())
            journal = f"{stat.st_dev}:{stat.st_ino}" if journal_matches else "1:1"
            subprocess.run(
                [sys.executable, "-c", probe, fmt],
                stderr=f,
                env={**env, "JOURNAL_STREAM": journal},
                timeout=30,
                check=True,
            )
        lines.append(path.read_text().strip())
    journal_line, plain_line = lines
    assert journal_line.startswith("<4>")  # warning
    assert not plain_line.startswith("<")  # stderr is not the journal: no prefixes
    if fmt == "json":
        assert "time" not in json.loads(journal_line[3:])  # journald stamps it
        assert json.loads(plain_line)["message"] == "careful"
    else:
        assert journal_line == "<4>mailrules.x: careful"


def test_service_warns_of_a_new_baseline_and_status_escapes_stored_errors(
    maildir, tmp_path, env, run_cli
):
    """The service's first run records existing mail as seen without acting: a warning,
    as with run --once. A stored error holding control characters is shown escaped."""
    maildir.add(subject="already here")
    config = tmp_path / "rules.yaml"
    config.write_text(
        "accounts:\n"
        f"  local: {{maildir: {maildir.root}, schedule: {{every: 1h}}}}\n"
        '  broken: {imap: {tunnel: ["/nonexistent/\\e[2J\\rfake"]}, schedule: {every: 1h}}\n'
        "rules: []\n"
    )
    service = ServiceProcess(config, tmp_path / "state", env)
    try:
        service.wait_log("recorded as seen")
        service.wait_log("cannot start tunnel")
        (line,) = [ln for ln in service.output.splitlines() if "recorded as seen" in ln]
        assert "WARNING" in line and "local/INBOX: first run, 1 messages" in line

        def stored_error() -> str:
            text = run_cli("status", "--state-dir", str(tmp_path / "state")).stdout
            return text if "last error" in text else ""

        text = wait_until(stored_error, 10, "the stored error")
        assert "\x1b" not in text and "\r" not in text
        assert "\\x1b[2J\\rfake" in text
    finally:
        service.stop()

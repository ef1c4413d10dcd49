"""The service (`mailrules run` without --once) in a subprocess, against a real Dovecot.

Dovecot runs pre-authenticated over pipes (tests/service_support.py); the service reaches
it as a tunnel account, and the tests append mail through their own sessions, as another
mail client would. systemd is played by a datagram socket the test owns (NOTIFY_SOCKET).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.service_support import (
    NotifySocket,
    PreauthDovecot,
    ServiceProcess,
    message,
    require_dovecot,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def dovecot():
    require_dovecot()
    server = PreauthDovecot()
    yield server
    server.close()


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path)
    yield sock
    sock.close()


@pytest.fixture
def services():
    started: list[ServiceProcess] = []
    yield started
    for service in started:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()


class Webhook:
    """A local HTTP receiver: records (arrival time, body) of every POST."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hits.append((time.time(), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def argv(self) -> str:
        code = (
            "import sys, urllib.request; "
            "urllib.request.urlopen(sys.argv[1], data=sys.stdin.buffer.read(), timeout=5)"
        )
        return json.dumps([sys.executable, "-c", code, self.url])


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def write_config(path: Path, dovecot: PreauthDovecot, rules: str, account: str = "") -> Path:
    path.write_text(
        "accounts:\n  work:\n"
        f"    imap: {{tunnel: [{dovecot.argv[0]}]}}\n"
        + textwrap.indent(textwrap.dedent(account or "push: idle\nschedule: {every: 1h}\n"), "    ")
        + "rules:\n"
        + textwrap.indent(textwrap.dedent(rules), "  ")
    )
    return path


def start(services, tmp_path, config, env, notify=None, extra=None, wait=True) -> ServiceProcess:
    service = ServiceProcess(config, tmp_path / "state", env, notify, extra)
    services.append(service)
    if wait:
        service.wait_log("watching with IDLE")
        service.wait_log("first run, mail already there")
    return service


def test_new_mail_triggers_its_rule_within_seconds_via_idle(
    dovecot, notify, services, webhook, tmp_path, env
):
    envfile = tmp_path / "child-env.txt"
    config = write_config(
        tmp_path / "rules.yaml",
        dovecot,
        f"""\
        - name: alerts
          when: {{from: alerts@watch.example}}
          then:
            - run: {webhook.argv()}
            - run: [sh, -c, 'env > {envfile}']
            - move: Alerts
        """,
    )
    env = {**env, "WATCHDOG_USEC": "1000000"}
    service = start(services, tmp_path, config, env, notify)
    ready = notify.wait_for("READY=1")
    assert "STATUS=1 account" in ready
    notify.wait_for("WATCHDOG=1", timeout=5)

    sent = time.time()
    dovecot.append("INBOX", message("disk full", sender="alerts@watch.example"))
    dovecot.append("INBOX", message("lunch?", sender="bob@example.org"))
    wait_until(lambda: webhook.hits, 10, "the webhook")
    latency = webhook.hits[0][0] - sent

    assert latency < 3, f"IDLE took {latency:.2f}s"
    assert b"Subject: disk full" in webhook.hits[0][1]
    wait_until(lambda: dovecot.subjects("Alerts") == ["disk full"], 5, "the move")
    assert dovecot.subjects("INBOX") == ["lunch?"]
    child_env = envfile.read_text()
    assert "NOTIFY_SOCKET" not in child_env and "WATCHDOG_USEC" not in child_env
    assert "uid=1 rule='alerts' action='move -> Alerts' result='ok'" in service.output
    notify.wait_for("WATCHDOG=1", timeout=5)  # still alive after the work

    assert service.stop() == 0
    assert "STOPPING=1" in notify.wait_for("STOPPING=1")


def test_server_killed_mid_idle_reconnects_and_misses_nothing(dovecot, services, tmp_path, env):
    config = write_config(tmp_path / "rules.yaml", dovecot, "- {name: all, then: [{move: Done}]}\n")
    service = start(services, tmp_path, config, env)
    dovecot.append("INBOX", message("before"))
    wait_until(lambda: dovecot.subjects("Done") == ["before"], 10, "the first message")

    killed = service.imap_children()
    assert killed, "no Dovecot imap process under the service"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    for n in range(3):  # arrive while the service has no connection
        dovecot.append("INBOX", message(f"while down {n}"))

    want = ["before", "while down 0", "while down 1", "while down 2"]
    wait_until(lambda: dovecot.subjects("Done") == want, 15, "the messages sent while down")
    assert dovecot.subjects("INBOX") == []
    service.wait_log("IDLE connection is back")
    assert "reconnecting at" in service.output
    dovecot.append("INBOX", message("after"))
    wait_until(lambda: "after" in dovecot.subjects("Done"), 10, "mail after the reconnect")
    assert service.stop() == 0


def test_sighup_with_a_broken_config_keeps_the_old_rules(dovecot, notify, services, tmp_path, env):
    config = tmp_path / "rules.yaml"
    write_config(config, dovecot, "- {name: first, then: [{move: First}]}\n")
    service = start(services, tmp_path, config, env, notify)
    notify.wait_for("READY=1")

    write_config(config, dovecot, "- {name: broken, then: [{mvoe: Broken}]}\n")
    service.signal(signal.SIGHUP)
    assert "RELOADING=1" in notify.wait_for("RELOADING=1")
    service.wait_log("still running with the previous config")
    assert f"reload: {config}:7:28: rules[0].then[0]: unknown action 'mvoe'" in service.output
    dovecot.append("INBOX", message("one"))
    wait_until(lambda: dovecot.subjects("First") == ["one"], 10, "the old rule")

    write_config(config, dovecot, "- {name: second, then: [{move: Second}]}\n")
    service.signal(signal.SIGHUP)
    notify.wait_for("READY=1")
    service.wait_log(f"reloaded {config}: 1 account, 1 rule")
    dovecot.append("INBOX", message("two"))
    wait_until(lambda: dovecot.subjects("Second") == ["two"], 10, "the new rule")
    assert dovecot.subjects("First") == ["one"]
    assert service.stop() == 0


def test_sigterm_mid_batch_loses_nothing_and_exits_quickly(
    dovecot, notify, services, tmp_path, env, run_cli
):
    for n in range(20):
        dovecot.append("INBOX", message(f"m{n:02}"))
    done = tmp_path / "done.txt"
    config = write_config(
        tmp_path / "rules.yaml",
        dovecot,
        f"""\
        - name: slow
          then:
            - run: [sh, -c, 'sleep 0.1; echo "$MAILRULES_MESSAGE_ID" >> {done}']
            - move: Done
        """,
        account="existing: process\nschedule: {every: 1h}\n",
    )
    service = start(services, tmp_path, config, env, notify, wait=False)
    notify.wait_for("READY=1")
    wait_until(lambda: done.exists() and done.read_text().count("\n") >= 2, 15, "the batch")
    service.signal(signal.SIGTERM)
    started = time.monotonic()
    assert service.proc.wait(30) == 0
    assert time.monotonic() - started < 10
    notify.wait_for("STOPPING=1")

    moved, left = dovecot.subjects("Done"), dovecot.subjects("INBOX")
    assert sorted(moved + left) == [f"m{n:02}" for n in range(20)]  # each in one place
    again = run_cli("run", "--once", "-c", str(config), "--state-dir", str(tmp_path / "state"))
    assert again.returncode == 0, again.stderr
    assert dovecot.subjects("Done") == [f"m{n:02}" for n in range(20)]
    assert len(set(done.read_text().split())) == 20


def test_a_server_without_idle_is_polled_on_the_schedule(services, tmp_path, env):
    require_dovecot()
    dovecot = PreauthDovecot(capability="IMAP4rev1 LITERAL+ UIDPLUS MOVE")
    try:
        config = write_config(
            tmp_path / "rules.yaml",
            dovecot,
            "- {name: all, then: [{move: Done}]}\n",
            account="push: idle\nschedule: {every: 1s, jitter: 0s}\n",
        )
        service = start(services, tmp_path, config, env, wait=False)
        service.wait_log("the server does not offer IDLE; work is polled on its schedule")
        service.wait_log("first run, mail already there")
        dovecot.append("INBOX", message("polled"))
        wait_until(lambda: dovecot.subjects("Done") == ["polled"], 10, "a poll")
        assert service.stop() == 0
    finally:
        dovecot.close()


def test_service_sends_notifications_from_the_outbox(maildir, tmp_path, httpserver):
    """A message arriving while the service runs is notified without a one-shot run."""
    import json
    import signal
    import subprocess
    import sys
    import time

    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    config = tmp_path / "svc.yaml"
    config.write_text(
        f"accounts:\n  local:\n    maildir: {maildir.root}\n    schedule: {{every: 1s}}\n"
        f"notifiers:\n  hook: {{webhook: {{url: {httpserver.url_for('/hook')}}}}}\n"
        "rules:\n  - {name: alice, when: {from: alice@example.org}, then: [{notify: hook}]}\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("NOTIFY_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailrules.cli", "run", "-c", str(config),
         "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        time.sleep(3)  # the first run records the (empty) baseline
        mid = maildir.add(from_="Alice <alice@example.org>", subject="ping")
        deadline = time.monotonic() + 30
        while not httpserver.log and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    sent = [json.loads(request.get_data()) for request, _ in httpserver.log]
    assert [d["message_id"] for d in sent] == [mid]

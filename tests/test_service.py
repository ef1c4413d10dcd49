"""The service (`mailrules run` without --once) in a subprocess, against a real Dovecot.

Dovecot runs pre-authenticated over pipes (tests/dovecot.py); the service reaches it as
a tunnel account, and the tests append mail through their own sessions, as another mail
client would. systemd is played by a datagram socket the test owns (NOTIFY_SOCKET).
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

from tests.dovecot import DovecotPreauth, make_message
from tests.service_support import NotifySocket, ServiceProcess, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def dovecot(dovecot_preauth: DovecotPreauth) -> DovecotPreauth:
    return dovecot_preauth


def message(subject: str, sender: str = "alice@example.org") -> bytes:
    return make_message(subject, sender=sender)


def subjects(dovecot: DovecotPreauth, folder: str = "INBOX") -> list[str]:
    """The folder's subjects by UID; none while the folder does not exist yet."""
    return dovecot.subjects(folder) if folder in dovecot.folders() else []


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


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def write_config(path: Path, dovecot: DovecotPreauth, rules: str, account: str = "") -> Path:
    path.write_text(
        "accounts:\n  work:\n"
        f"    imap: {{tunnel: [{dovecot.argv[0]}]}}\n"
        + textwrap.indent(textwrap.dedent(account or "push: idle\nschedule: {every: 1h}\n"), "    ")
        + "rules:\n"
        + textwrap.indent(textwrap.dedent(rules), "  ")
    )
    return path


def slow_rule(done: Path, pause: float) -> str:
    """Every message: a command that takes ``pause`` seconds and logs its Message-ID to
    ``done``, then a move to Done."""
    return f"""\
        - name: slow
          then:
            - run: [sh, -c, 'sleep {pause}; echo "$MAILRULES_MESSAGE_ID" >> {done}']
            - move: Done
        """


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
            - notify: hook
            - run: [sh, -c, 'env > {envfile}']
            - move: Alerts
        """,
    )
    config.write_text(
        config.read_text().replace(
            "rules:\n", f"notifiers:\n  hook: {{webhook: {{url: '{webhook.url}'}}}}\nrules:\n"
        )
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

    assert latency < 3, f"IDLE and the outbox took {latency:.2f}s"
    assert json.loads(webhook.hits[0][1])["subject"] == "disk full"
    wait_until(lambda: subjects(dovecot, "Alerts") == ["disk full"], 5, "the move")
    assert subjects(dovecot, "INBOX") == ["lunch?"]
    child_env = envfile.read_text()
    assert "NOTIFY_SOCKET" not in child_env and "WATCHDOG_USEC" not in child_env
    assert "uid=1 rule='alerts' action='move -> Alerts' result='ok'" in service.output
    notify.wait_for("WATCHDOG=1", timeout=5)  # still alive after the work

    assert service.stop() == 0
    assert "STOPPING=1" in notify.wait_for("STOPPING=1")


def test_mail_that_arrives_during_a_run_is_not_left_for_the_backstop(
    dovecot, services, tmp_path, env
):
    done = tmp_path / "done.txt"
    config = write_config(
        tmp_path / "rules.yaml",
        dovecot,
        slow_rule(done, 1),
    )
    service = start(services, tmp_path, config, env)
    dovecot.append("INBOX", message("first"))
    service.wait_log("INBOX: 1 to process")  # the watcher is busy with it now
    dovecot.append("INBOX", message("second"))  # announced to the busy connection only
    wait_until(lambda: subjects(dovecot, "Done") == ["first", "second"], 10, "both messages")
    assert service.stop() == 0


def test_server_killed_mid_idle_reconnects_and_misses_nothing(dovecot, services, tmp_path, env):
    config = write_config(tmp_path / "rules.yaml", dovecot, "- {name: all, then: [{move: Done}]}\n")
    service = start(services, tmp_path, config, env)
    dovecot.append("INBOX", message("before"))
    wait_until(lambda: subjects(dovecot, "Done") == ["before"], 10, "the first message")

    killed = service.imap_children()
    assert killed, "no Dovecot imap process under the service"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    for n in range(3):  # arrive while the service has no connection
        dovecot.append("INBOX", message(f"while down {n}"))

    want = ["before", "while down 0", "while down 1", "while down 2"]
    wait_until(lambda: subjects(dovecot, "Done") == want, 15, "the messages sent while down")
    assert subjects(dovecot, "INBOX") == []
    service.wait_log("IDLE connection is back")
    assert "reconnecting at" in service.output
    dovecot.append("INBOX", message("after"))
    wait_until(lambda: "after" in subjects(dovecot, "Done"), 10, "mail after the reconnect")
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
    wait_until(lambda: subjects(dovecot, "First") == ["one"], 10, "the old rule")

    write_config(config, dovecot, "- {name: second, then: [{move: Second}]}\n")
    service.signal(signal.SIGHUP)
    notify.wait_for("READY=1")
    service.wait_log(f"reloaded {config}: 1 account, 1 rule")
    dovecot.append("INBOX", message("two"))
    wait_until(lambda: subjects(dovecot, "Second") == ["two"], 10, "the new rule")
    assert subjects(dovecot, "First") == ["one"]
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
        slow_rule(done, 0.1),
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

    moved, left = subjects(dovecot, "Done"), subjects(dovecot, "INBOX")
    assert sorted(moved + left) == [f"m{n:02}" for n in range(20)]  # each in one place
    again = run_cli("run", "--once", "-c", str(config), "--state-dir", str(tmp_path / "state"))
    assert again.returncode == 0, again.stderr
    assert sorted(subjects(dovecot, "Done")) == [f"m{n:02}" for n in range(20)]
    assert len(set(done.read_text().split())) == 20


def test_sigterm_while_a_watcher_processes_finishes_its_batch(
    dovecot, notify, services, tmp_path, env
):
    done = tmp_path / "done.txt"
    config = write_config(
        tmp_path / "rules.yaml",
        dovecot,
        slow_rule(done, 0.2),
    )
    service = start(services, tmp_path, config, env, notify)
    for n in range(8):
        dovecot.append("INBOX", message(f"m{n}"))
    service.wait_log(" to process")  # the watcher is running its batch now
    service.signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert service.proc.wait(30) == 0
    assert time.monotonic() - signalled < 8, service.output  # the batch, then out
    moved = subjects(dovecot, "Done")
    assert moved, service.output  # the batch in progress was finished, not cut off
    assert sorted(moved + subjects(dovecot, "INBOX")) == [f"m{n}" for n in range(8)]
    assert sorted(done.read_text().split()) == sorted(set(done.read_text().split()))
    assert len(done.read_text().split()) == len(moved)  # a command per moved message
    assert "still busy" not in service.output


def test_a_server_without_idle_is_polled_on_the_schedule(
    dovecot_preauth_factory, services, tmp_path, env
):
    dovecot = dovecot_preauth_factory(capability="IMAP4rev1 LITERAL+ UIDPLUS MOVE")
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
    wait_until(lambda: subjects(dovecot, "Done") == ["polled"], 10, "a poll")
    assert service.stop() == 0


def test_a_pop3_account_is_polled_on_its_schedule(dovecot, services, tmp_path, env):
    local = tmp_path / "Local"
    config = tmp_path / "rules.yaml"
    config.write_text(
        "accounts:\n  home:\n"
        f"    pop3: {{tunnel: [{dovecot.pop3_argv[0]}], preauth: true}}\n"
        f"    deliver_to: {local}\n"
        "    schedule: {every: 1s, jitter: 0s}\n"
        "rules: []\n"
    )
    service = start(services, tmp_path, config, env, wait=False)
    service.wait_log("service started")
    dovecot.append("INBOX", message("by pop3"))

    def delivered() -> list[Path]:
        return [p for sub in ("new", "cur") for p in (local / sub).glob("*")]

    (path,) = wait_until(delivered, 10, "the POP3 message in the local Maildir")
    assert b"Subject: by pop3" in path.read_bytes()
    assert service.stop() == 0


def test_service_sends_notifications_from_the_outbox(maildir, tmp_path, httpserver):
    """A message arriving while the service runs is notified without a one-shot run."""
    import json
    import signal
    import subprocess
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


def test_idle_over_tls_to_a_daemon(dovecot_server, services, tmp_path, env):
    server = dovecot_server
    config = tmp_path / "rules.yaml"
    config.write_text(
        "accounts:\n  work:\n"
        f"    imap: {{host: 127.0.0.1, port: {server.imaps_port}, security: tls, "
        f"ca_file: '{server.ca_file}', username: {server.username}, "
        f"password: {server.password}}}\n"
        "    push: idle\n    schedule: {every: 1h}\n"
        "rules:\n  - {name: all, then: [{move: Done}]}\n"
    )
    service = start(services, tmp_path, config, env)
    for n in range(2):  # the second after the watcher went back to IDLE over TLS
        server.append("INBOX", message(f"tls {n}"))
        want = [f"tls {k}" for k in range(n + 1)]
        wait_until(lambda want=want: subjects(server, "Done") == want, 10, "IDLE over TLS")
    assert service.stop() == 0

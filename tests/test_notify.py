"""Notifications end to end: real CLI, real Maildir, real HTTP and SMTP receivers on 127.0.0.1.

pytest-httpserver plays the webhook receiver, Twilio and Apprise's JSON endpoint;
aiosmtpd (with a throwaway CA from trustme) plays the SMTP server. Nothing of ours is
mocked: every test runs ``mailrules`` as a user would and looks at what arrived.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import socket
import ssl
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from werkzeug import Response

from mailrules.config.load import parse_config
from mailrules.errors import ConfigError

ALICE = {"from_": "Alice Example <alice@example.org>", "to": "me@example.net"}


def write(tmp_path: Path, maildir, notifiers: str, rules: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"accounts:\n  local:\n    maildir: {maildir.root}\n"
        + "notifiers:\n"
        + textwrap.indent(textwrap.dedent(notifiers), "  ")
        + "rules:\n"
        + textwrap.indent(textwrap.dedent(rules), "  ")
    )
    return path


def run(run_cli, config: Path, *extra: str, env: dict[str, str] | None = None):
    return run_cli("run", "--once", "-c", str(config), *extra, extra_env=env)


def hook(httpserver, path: str = "/hook", **webhook: str) -> str:
    settings = ", ".join(
        f"{k}: {v}" for k, v in {"url": httpserver.url_for(path), **webhook}.items()
    )
    return f"hook:\n  webhook: {{{settings}}}\n  retry: {{attempts: 3, backoff: 0s}}\n"


ALICE_RULE = "- {name: alice, when: {from: alice@example.org}, then: [{notify: hook}]}\n"


def bodies(httpserver) -> list[dict]:
    return [json.loads(request.get_data()) for request, _ in httpserver.log]


def test_sender_match_notifies_once_with_a_signed_documented_payload(
    maildir, tmp_path, run_cli, httpserver
):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    old = maildir.add(**ALICE, subject="old news")
    config = write(
        tmp_path,
        maildir,
        hook(httpserver, secret_env="HOOK_SECRET", headers="{X-Team: mail}"),
        "- {name: alice, when: {from: alice@example.org},\n"
        "   then: [{notify: {to: hook, text: '{from.name}: {subject}', snippet: 12}}]}\n",
    )
    env = {"HOOK_SECRET": "s3cret-hmac-key"}

    first = run(run_cli, config, env=env)  # the baseline: old mail never notifies
    assert first.returncode == 0, first.stderr
    assert httpserver.log == []

    mid = maildir.add(**ALICE, subject="Re: lunch", body="Yes, 12:30 at the usual place.\n")
    maildir.add(from_="bob@example.org", subject="not watched")
    second = run(run_cli, config, env=env)
    assert second.returncode == 0, second.stderr
    assert "notify -> hook: 'Alice Example: Re: lunch'" in second.stdout
    assert "notifications: 1 sent" in second.stdout
    ((request, _),) = httpserver.log
    body = request.get_data()
    doc = json.loads(body)
    assert doc["type"] == "message" and doc["message_id"] == mid != old
    assert doc["account"] == "local" and doc["folder"] == "INBOX" and doc["rule"] == "alice"
    assert doc["from"] == {"address": "alice@example.org", "name": "Alice Example"}
    assert doc["to"] == [{"address": "me@example.net", "name": ""}]
    assert doc["subject"] == "Re: lunch" and doc["text"] == "Alice Example: Re: lunch"
    assert doc["snippet"] == "Yes, 12:30…" and doc["size"] > 0
    assert request.headers["Idempotency-Key"] == doc["id"]
    assert request.headers["X-Team"] == "mail"
    assert request.headers["Content-Type"] == "application/json"
    # the receiver's check: HMAC-SHA256(secret, "t." + body), constant-time compare
    fields = dict(p.split("=", 1) for p in request.headers["X-Mailrules-Signature"].split(","))
    expected = hmac.new(b"s3cret-hmac-key", f"{fields['t']}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(fields["sha256"], expected.hexdigest())
    assert abs(int(fields["t"]) - time.time()) < 60

    third = run(run_cli, config, env=env)
    assert third.returncode == 0 and len(httpserver.log) == 1
    # --all applies the rules to every message: only the old one is new to the outbox
    again = run(run_cli, config, "--all", env=env)
    assert again.returncode == 0
    assert [d["message_id"] for d in bodies(httpserver)] == [mid, old]


def test_dry_run_prints_the_notification_and_sends_nothing(maildir, tmp_path, run_cli, httpserver):
    config = write(tmp_path, maildir, hook(httpserver), ALICE_RULE)
    assert run(run_cli, config).returncode == 0
    maildir.add(**ALICE, subject="hi")
    dry = run(run_cli, config, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "notify -> hook: 'Alice Example: hi'" in dry.stdout and "planned" in dry.stdout
    assert httpserver.log == []
    assert "notifications" not in run_cli("state").stdout


def test_server_errors_are_retried_from_the_outbox(maildir, tmp_path, run_cli, httpserver):
    httpserver.expect_oneshot_request("/hook").respond_with_data("oops", 500)
    httpserver.expect_request("/hook").respond_with_data("ok")
    config = write(tmp_path, maildir, hook(httpserver), ALICE_RULE)
    run(run_cli, config)
    maildir.add(**ALICE, subject="hi")
    result = run(run_cli, config, "-v")
    assert result.returncode == 0, result.stderr
    assert [response.status_code for _, response in httpserver.log] == [500, 200]
    keys = {request.headers["Idempotency-Key"] for request, _ in httpserver.log}
    assert len(keys) == 1  # the retry is the same notification
    assert "attempt 1 of 3 failed" in result.stderr and "HTTP 500" in result.stderr
    assert "notifications: 1 sent, 1 to retry" in result.stdout


def test_429_waits_for_retry_after_before_trying_again(maildir, tmp_path, run_cli, httpserver):
    httpserver.expect_oneshot_request("/hook").respond_with_data(
        "slow down", 429, headers={"Retry-After": "2"}
    )
    httpserver.expect_request("/hook").respond_with_data("ok")
    config = write(tmp_path, maildir, hook(httpserver), ALICE_RULE)
    run(run_cli, config)
    maildir.add(**ALICE, subject="hi")
    first = run(run_cli, config)
    assert first.returncode == 0 and len(httpserver.log) == 1
    state = run_cli("state")
    assert "pending (attempt 2 at" in state.stdout and "HTTP 429" in state.stdout
    early = run(run_cli, config)  # not due yet: nothing is sent
    assert early.returncode == 0 and len(httpserver.log) == 1
    time.sleep(2.1)
    late = run(run_cli, config)
    assert late.returncode == 0 and "1 sent" in late.stdout
    assert [s.status_code for _, s in httpserver.log] == [429, 200]


def test_client_error_is_given_up_at_once_and_can_be_queued_again(
    maildir, tmp_path, run_cli, httpserver
):
    httpserver.expect_oneshot_request("/hook").respond_with_json(
        {"message": "unknown channel"}, 400
    )
    httpserver.expect_request("/hook").respond_with_data("ok")
    config = write(tmp_path, maildir, hook(httpserver), ALICE_RULE)
    run(run_cli, config)
    maildir.add(**ALICE, subject="hi")
    result = run(run_cli, config)
    assert result.returncode == 1  # a notification was given up
    assert "1 given up" in result.stdout and "dead-letter" in result.stderr
    assert len(httpserver.log) == 1
    state = run_cli("state")
    assert "notifications: 1 given up" in state.stdout
    assert "given up after 1 attempt: http://localhost:" in state.stdout
    assert "HTTP 400 BAD REQUEST: unknown channel" in state.stdout
    again = run_cli("notify", "--retry-dead", "-c", str(config))
    assert again.returncode == 0, again.stderr
    assert "1 given-up notifications queued again" in again.stdout and "1 sent" in again.stdout
    assert len(httpserver.log) == 2


def test_a_receiver_that_hangs_hits_the_read_timeout(maildir, tmp_path, run_cli, httpserver):
    def hang(request):
        time.sleep(1.5)
        return Response("late")

    httpserver.expect_request("/hook").respond_with_handler(hang)
    notifier = hook(httpserver) + "  timeout: {connect: 1s, read: 0.3s}\n"
    config = write(tmp_path, maildir, notifier.replace("attempts: 3", "attempts: 1"), ALICE_RULE)
    run(run_cli, config)
    maildir.add(**ALICE, subject="hi")
    started = time.monotonic()
    result = run(run_cli, config)
    assert time.monotonic() - started < 10
    assert result.returncode == 1 and "1 given up" in result.stdout
    assert "no answer within 0.3s" in run_cli("state").stdout
    for _ in range(50):  # let the receiver finish, so its late answer is logged here
        if httpserver.log:
            break
        time.sleep(0.1)


@pytest.mark.parametrize("crash_at", [1, 2])
def test_killed_between_commit_and_send_sends_exactly_once(
    maildir, tmp_path, run_cli, httpserver, crash_at
):
    """Step 1 is just before the state commit, step 2 just after it, before sending."""
    httpserver.expect_request("/hook").respond_with_data("ok")
    config = write(tmp_path, maildir, hook(httpserver), ALICE_RULE)
    run(run_cli, config)
    maildir.add(**ALICE, subject="hi")
    killed = run(run_cli, config, env={"MAILRULES_CRASH_AFTER": str(crash_at)})
    assert killed.returncode == -9
    assert httpserver.log == []
    for _ in range(2):
        assert run(run_cli, config).returncode == 0
    assert len(httpserver.log) == 1


def test_sms_goes_through_the_twilio_api_cut_to_one_segment(maildir, tmp_path, run_cli, httpserver):
    path = "/2010-04-01/Accounts/AC123/Messages.json"
    httpserver.expect_request(path, method="POST").respond_with_json({"sid": "SM1"}, 201)
    (tmp_path / "token").write_text("tw-token-987\n")
    config = write(
        tmp_path,
        maildir,
        f"""\
        phone:
          sms: {{account_sid: AC123, auth_token_file: {tmp_path / "token"},
                from: "+15550001", to: "+15550100", base_url: "{httpserver.url_for("/")}"}}
        """,
        "- {name: alice, when: {from: alice@example.org},\n"
        "   then: [{notify: {to: phone, text: 'Alice: {subject}'}}]}\n",
    )
    run(run_cli, config)
    maildir.add(**ALICE, subject="x" * 300)
    maildir.add(**ALICE, subject="Grüße aus Köln — " + "ü" * 100)
    result = run(run_cli, config)
    assert result.returncode == 0, result.stderr
    assert "2 sent" in result.stdout
    forms = []
    for request, _ in httpserver.log:
        user, _, token = base64.b64decode(request.headers["Authorization"][6:]).partition(b":")
        assert (user, token) == (b"AC123", b"tw-token-987")
        forms.append({k: v[0] for k, v in parse_qs(request.get_data(as_text=True)).items()})
    gsm, ucs2 = sorted(forms, key=lambda f: "ü" in f["Body"])  # sent concurrently
    assert gsm["To"] == "+15550100" and gsm["From"] == "+15550001"
    assert len(gsm["Body"]) == 160 and gsm["Body"].startswith("Alice: xxx")
    assert gsm["Body"].endswith("...")
    assert len(ucs2["Body"]) == 70 and ucs2["Body"].endswith("...")  # not GSM-7: 70 chars


@pytest.mark.skipif(
    importlib.util.find_spec("apprise") is None,
    reason="apprise is not installed: pip install -e '.[test]' (the test extra includes it)",
)
def test_apprise_url_sends_through_apprise(maildir, tmp_path, run_cli, httpserver):
    httpserver.expect_request("/apprise", method="POST").respond_with_data("ok")
    url = httpserver.url_for("/apprise").replace("http://", "json://")
    config = write(
        tmp_path,
        maildir,
        f"team:\n  apprise: {{url: '{url}'}}\n",
        "- {name: alice, when: {from: alice@example.org},\n"
        "   then: [{notify: {to: team, title: 'mail', text: '{from.address}: {subject}'}}]}\n",
    )
    assert run_cli("check", "-c", str(config)).returncode == 0
    run(run_cli, config)
    maildir.add(**ALICE, subject="hi there")
    result = run(run_cli, config)
    assert result.returncode == 0, result.stderr
    assert "1 sent" in result.stdout
    ((request, _),) = httpserver.log
    doc = json.loads(request.get_data())
    assert doc["title"] == "mail" and doc["message"] == "alice@example.org: hi there"


def test_apprise_without_the_extra_is_a_config_error_with_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "apprise" else real(name, *a)
    )
    text = (
        "accounts:\n  l: {maildir: /tmp/x}\n"
        "notifiers:\n  team:\n    apprise: {url: 'json://localhost/'}\n"
        "rules:\n  - {name: a, then: [{notify: team}]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "rules.yaml")
    assert str(caught.value) == (
        "rules.yaml:5:5: notifiers.team.apprise: the apprise channel needs the optional "
        "Apprise package, which is not installed: pip install 'mailrules[apprise]'"
    )


@pytest.mark.parametrize(
    ("notifiers", "rules", "expected"),
    [
        (
            "hook: {webhook: {url: 'https://x.example/h'}}\n",
            "- {name: a, then: [{notify: hoook}]}\n",
            "rules.yaml:6:31: rules[0].then[0].notify: no notifier named 'hoook'; "
            "did you mean 'hook'? known: hook",
        ),
        (
            "hook: {webhook: {url: 'https://x.example/h'}}\n",
            "- {name: a, then: [{notify: {to: phne, text: '{subject}'}}]}\n",
            "rules.yaml:6:36: rules[0].then[0].notify.to: no notifier named 'phne'; known: hook",
        ),
        (
            "phone: {sms: {acount_sid: A, auth_token: t, from: '+1', to: '+2'}}\n",
            "- {name: a, then: [{notify: phone}]}\n",
            "rules.yaml:4:17: notifiers.phone.sms: unknown key 'acount_sid'; did you mean "
            "'account_sid'?",
        ),
        (
            "hook: {webhook: {url: 'https://x.example/h', secret: a, secret_env: B}}\n",
            "- {name: a, then: [{notify: hook}]}\n",
            "rules.yaml:4:19: notifiers.hook.webhook: secret_env and secret both give secret; "
            "keep one",
        ),
        (
            "x: {webhook: {url: 'https://x.example/h'}, command: {argv: [/bin/true]}}\n",
            "- {name: a, then: [{notify: x}]}\n",
            "rules.yaml:4:6: notifiers.x: a notifier is exactly one of webhook, sms, apprise, "
            "command, forward; found webhook and command; keep one",
        ),
        (
            "phone: {sms: {account_sid: A, from: '+1', to: '+2'}}\n",
            "- {name: a, then: [{notify: phone}]}\n",
            "rules.yaml:4:16: notifiers.phone.sms: missing auth_token: give one of "
            "auth_token_file, auth_token_env, auth_token_command, auth_token_credential, "
            "auth_token",
        ),
        (
            "hook: {webhook: {url: 'https://x.example/h'}, limit: {count: 5, per: 60}}\n",
            "- {name: a, then: [{notify: hook}]}\n",
            "rules.yaml:4:72: notifiers.hook.limit.per: a bare number is ambiguous",
        ),
        (
            "hook: {webhook: {url: 'https://x.example/h'}}\n",
            "- {name: a, then: [{notify: {to: hook, text: '{subjet}'}}]}\n",
            "rules.yaml:6:48: rules[0].then[0].notify.text: unknown field {subjet}",
        ),
    ],
)
def test_notifier_config_errors_point_at_the_place(notifiers, rules, expected):
    text = (
        "accounts:\n  l: {maildir: /tmp/x}\nnotifiers:\n"
        + textwrap.indent(notifiers, "  ")
        + "rules:\n"
        + textwrap.indent(rules, "  ")
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "rules.yaml")
    assert any(str(p).startswith(expected) for p in caught.value.problems), str(caught.value)


def test_check_reports_an_unknown_notifier_as_file_line_col(run_cli, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "accounts:\n  l: {maildir: /tmp/x}\n"
        "notifiers:\n  phone: {command: {argv: [/bin/true]}}\n"
        "rules:\n  - name: a\n    then: [{notify: {to: phon}}]\n"
    )
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 2
    assert f"{path}:7:26: rules[0].then[0].notify.to: no notifier named 'phon'; did you mean " in (
        result.stderr
    )


def test_rate_limit_folds_a_storm_into_one_digest(maildir, tmp_path, run_cli, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    config = write(
        tmp_path,
        maildir,
        hook(httpserver),
        "- {name: storm, when: {from: alice@example.org},\n"
        "   then: [{notify: {to: hook, limit: {count: 2, per: 2s}}}]}\n",
    )
    run(run_cli, config)
    for i in range(7):
        maildir.add(**ALICE, subject=f"storm {i}")
    first = run(run_cli, config)
    assert first.returncode == 0, first.stderr
    assert sorted(d["subject"] for d in bodies(httpserver)) == ["storm 0", "storm 1"]
    assert "5 held for a digest" in run_cli("state").stdout
    time.sleep(2.1)  # the window has room again: one digest for the five held
    second = run(run_cli, config)
    assert second.returncode == 0 and "1 digest made" in second.stdout
    digest = bodies(httpserver)[-1]
    assert len(httpserver.log) == 3
    assert digest["type"] == "digest" and digest["count"] == 5 and digest["rule"] == "storm"
    assert digest["text"].startswith("…and 5 more from rule 'storm'; latest: ")
    assert [m["subject"] for m in digest["messages"]] == [f"storm {i}" for i in range(2, 7)]
    assert "5 in digests" in run_cli("state").stdout
    assert run(run_cli, config).returncode == 0 and len(httpserver.log) == 3


def test_secrets_never_appear_in_output_logs_or_state(maildir, tmp_path, run_cli, httpserver):
    # a receiver that echoes what it got: the error text must still hide it
    httpserver.expect_request("/hook").respond_with_data(
        "down; you sent key=qtoken-777 with hmac-key-ABC", 500
    )
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    (tmp_path / "tok").write_text("twilio-token-XYZ")
    base = httpserver.url_for("/")
    secrets = ["hunter2pass", "hmac-key-ABC", "twilio-token-XYZ", "qtoken-777"]
    config = write(
        tmp_path,
        maildir,
        f"""\
        hook:
          webhook: {{url: "{base.replace("://", "://me:hunter2pass@")}hook?key=qtoken-777",
                    secret: hmac-key-ABC}}
          retry: {{attempts: 2, backoff: 0s}}
        gone:
          webhook: {{url: "http://me:hunter2pass@127.0.0.1:{port}/x?key=qtoken-777"}}
          retry: {{attempts: 1}}
        phone:
          sms: {{account_sid: AC1, auth_token_file: {tmp_path / "tok"}, from: "+1", to: "+2",
                base_url: "http://127.0.0.1:{port}"}}
          retry: {{attempts: 1}}
        """,
        "- {name: a, when: {from: alice@example.org},\n"
        "   then: [{notify: hook}, {notify: gone}, {notify: phone}]}\n",
    )
    run(run_cli, config)
    maildir.add(**ALICE, subject="hi")
    result = run(run_cli, config, "-vv")
    state = run_cli("state")
    assert result.returncode == 1 and "3 given up" in result.stdout
    assert "cannot connect" in state.stdout
    assert "HTTP 500 INTERNAL SERVER ERROR: down; you sent *** with ***" in state.stdout
    shown = result.stdout + result.stderr + state.stdout + state.stderr
    for secret in secrets:
        assert secret not in shown
    assert "http://127.0.0.1:" in shown  # the host is named, so the user can tell which


def test_command_channel_gets_json_on_stdin_and_a_minimal_environment(maildir, tmp_path, run_cli):
    out = tmp_path / "got.json"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, sys\n"
        f"open({str(out)!r}, 'w').write(json.dumps({{'stdin': json.load(sys.stdin), "
        "'env': dict(os.environ)}))\n"
    )
    config = write(
        tmp_path,
        maildir,
        f"script:\n  command: {{argv: [{sys.executable}, {script}], timeout: 20s}}\n",
        "- {name: alice, when: {from: alice@example.org}, then: [{notify: script}]}\n",
    )
    run(run_cli, config)
    mid = maildir.add(**ALICE, subject="hi")
    result = run(run_cli, config, env={"HOOK_SECRET": "do-not-pass-me"})
    assert result.returncode == 0, result.stderr
    got = json.loads(out.read_text())
    assert got["stdin"]["message_id"] == mid and got["stdin"]["text"] == "Alice Example: hi"
    assert got["env"]["MAILRULES_NOTIFIER"] == "script"
    assert got["env"]["MAILRULES_IDEMPOTENCY_KEY"] == got["stdin"]["id"]
    assert "HOOK_SECRET" not in got["env"]


def test_deliver_queues_and_sends_after_delivery(maildir, tmp_path, run_cli, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    config = write(tmp_path, maildir, hook(httpserver), ALICE_RULE)
    message = (
        b"From: Alice <alice@example.org>\nTo: me@example.net\nSubject: Re: lunch\n"
        b"Message-ID: <lunch@example.org>\n\nYes!\n"
    )
    for _ in range(2):  # the MTA delivers it twice: two messages, two notifications
        result = run_cli("deliver", "-c", str(config), input=message)
        assert result.returncode == 0, result.stderr
    assert len(maildir.files()) == 2
    assert [d["message_id"] for d in bodies(httpserver)] == ["<lunch@example.org>"] * 2
    assert len({d["id"] for d in bodies(httpserver)}) == 2
    assert run(run_cli, config).returncode == 0 and len(httpserver.log) == 2


# -- forward over SMTP -----------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd calls it by this name
        self.envelopes.append(envelope)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server(tmp_path):
    """Start aiosmtpd on 127.0.0.1: (starttls=True|False|'implicit') -> (port, recorder, ca)."""
    trustme = pytest.importorskip("trustme")
    controller_mod = pytest.importorskip("aiosmtpd.controller")
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    started = []

    def start(mode):
        recorder = Recorder()
        port = free_port()
        kwargs: dict = {}
        if mode == "starttls":
            kwargs = {"tls_context": context, "require_starttls": True}
        elif mode == "implicit":
            kwargs = {"ssl_context": context}
        controller = controller_mod.Controller(recorder, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        started.append(controller)
        return port, recorder, ca_file

    yield start
    for controller in started:
        controller.stop()


def forward_config(tmp_path, maildir, port, ca_file, security):
    return write(
        tmp_path,
        maildir,
        f"""\
        me:
          forward: {{to: me@example.net, from: mailrules@example.net, host: 127.0.0.1,
                    port: {port}, security: {security}, ca_file: {ca_file}}}
          retry: {{attempts: 1}}
        """,
        "- {name: alice, when: {from: alice@example.org}, then: [{notify: me}]}\n",
    )


@pytest.mark.parametrize("security", ["starttls", "implicit"])
def test_forward_resends_the_message_over_tls(maildir, tmp_path, run_cli, smtp_server, security):
    port, recorder, ca_file = smtp_server(security)
    config = forward_config(
        tmp_path, maildir, port, ca_file, "tls" if security == "implicit" else "starttls"
    )
    run(run_cli, config)
    mid = maildir.add(**ALICE, subject="Grüße", body="Bis später.\n")
    result = run(run_cli, config)
    assert result.returncode == 0, result.stderr + result.stdout
    ((envelope,),) = [recorder.envelopes]
    assert envelope.mail_from == "mailrules@example.net"
    assert envelope.rcpt_tos == ["me@example.net"]
    data = envelope.original_content
    head = data.split(b"\r\n")[:4]
    assert [line.split(b":")[0] for line in head] == [
        b"Resent-From",
        b"Resent-To",
        b"Resent-Date",
        b"Resent-Message-ID",
    ]
    assert f"Message-ID: {mid}".encode() in data and b"Bis sp\xc3\xa4ter." in data
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF line ends throughout


def test_forward_refuses_a_server_without_starttls(maildir, tmp_path, run_cli, smtp_server):
    port, recorder, ca_file = smtp_server("plain")
    config = forward_config(tmp_path, maildir, port, ca_file, "starttls")
    run(run_cli, config)
    maildir.add(**ALICE, subject="secret stuff")
    result = run(run_cli, config)
    assert result.returncode == 1 and "1 given up" in result.stdout
    assert recorder.envelopes == []
    assert "does not offer STARTTLS; not sending in plaintext" in run_cli("state").stdout


def test_a_receiver_echoing_the_request_reveals_no_derived_secret(
    maildir, tmp_path, run_cli, httpserver, env
):
    """Basic auth made from the URL's user:pass, the SMS basic auth (base64 of sid:token),
    configured header values and the URL's path and query never reach output or state."""

    def echo(request):
        got = [request.headers.get("Authorization", ""), request.full_path]
        got += [f"{k}={v}" for k, v in request.headers.items() if k.lower().startswith("x-")]
        return Response("you sent: " + " ".join(got), status=400)

    httpserver.expect_request("/hook/pathtoken-QQQ").respond_with_handler(echo)
    httpserver.expect_request("/2010-04-01/Accounts/AC9/Messages.json").respond_with_handler(echo)
    base = httpserver.url_for("/")
    (tmp_path / "tok").write_text("twilio-token-XYZ")
    config = write(
        tmp_path,
        maildir,
        f"""\
        hook:
          webhook: {{url: "{base.replace("://", "://me:hunter2pass@")}hook/pathtoken-QQQ?k=qtoken-777",
                    headers: {{X-Api-Key: hdr-secret-555}}}}
          retry: {{attempts: 1}}
        phone:
          sms: {{account_sid: AC9, auth_token_file: {tmp_path / "tok"}, from: "+1", to: "+2",
                base_url: "{base.rstrip("/")}"}}
          retry: {{attempts: 1}}
        """,
        "- {name: a, when: {from: alice@example.org}, then: [{notify: hook}, {notify: phone}]}\n",
    )
    assert run(run_cli, config).returncode == 0
    maildir.add(**ALICE, subject="hi")
    result = run(run_cli, config, "-vv")
    assert result.returncode == 1 and "2 given up" in result.stdout, result.stdout + result.stderr
    assert len(httpserver.log) == 2
    got = " ".join(response.get_data(as_text=True) for _, response in httpserver.log)
    basic = base64.b64encode(b"me:hunter2pass").decode()
    sms_basic = base64.b64encode(b"AC9:twilio-token-XYZ").decode()
    derived = [basic, sms_basic, "hdr-secret-555", "pathtoken-QQQ", "qtoken-777"]
    for secret in derived:  # the receiver did get (and echo) each of them
        assert secret in got, (secret, got)
    state = run_cli("state")
    assert "HTTP 400" in state.stdout, state.stdout
    state_dir = Path(env["XDG_STATE_HOME"]) / "mailrules"
    stored = b"".join(p.read_bytes() for p in state_dir.iterdir() if p.is_file())
    shown = result.stdout + result.stderr + state.stdout + state.stderr
    for secret in [*derived, "hunter2pass", "twilio-token-XYZ"]:
        assert secret not in shown, (secret, shown)
        assert secret.encode() not in stored, secret

"""The quick poll on IMAP: a `run --once` with nothing new is a login and one STATUS per
folder, and anything that could need the rules (new mail in any watched folder, a
changed config, a reset UIDVALIDITY, a notification waiting) gets the full run."""

from __future__ import annotations

import sqlite3

import pytest

from tests.test_imap import commands, config, flow, ids, message, server_config, tunnel

pytestmark = pytest.mark.timeout(120)
WATCH = "folders: [INBOX, Clients]\n"
QUICK = "nothing new (quick poll"


def quick(run_cli, cfg, *args: str):
    state = cfg.parent / "state"
    result = run_cli("run", "--once", "-v", "-c", str(cfg), "--state-dir", str(state), *args)
    assert result.returncode == 0, result.stderr
    return result


def test_a_poll_with_nothing_new_is_login_status_and_logout(
    dovecot_server, cutting_proxy, tmp_path, run_cli
):
    server = dovecot_server
    server.create("Clients")
    server.append("INBOX", message("a", "x@y.example", "hello"))
    proxy = cutting_proxy(server.imap_port, cut_after=None)
    cfg = server_config(tmp_path, server, proxy.port, account=WATCH)
    first = quick(run_cli, cfg)
    assert QUICK not in first.stderr  # the first run baselines; it is a full run
    seen = len(proxy.lines)

    second = quick(run_cli, cfg)

    assert QUICK in second.stderr and "0 new messages" in second.stdout
    sent = commands(type("P", (), {"lines": proxy.lines[seen:]}))
    assert sent == ["LOGIN", "STATUS", "STATUS", "LOGOUT"]
    assert server.password not in second.stderr + second.stdout


@pytest.mark.parametrize("folder", ["INBOX", "Clients"])
def test_new_mail_in_any_watched_folder_gets_the_full_run(
    dovecot_preauth, tmp_path, run_cli, folder
):
    box = dovecot_preauth
    box.create("Clients")
    rules = "- {name: boss, when: {from: boss@example.com}, then: [{keyword: Boss}]}\n"
    cfg = config(tmp_path, tunnel(box), rules=rules, extra=WATCH)
    quick(run_cli, cfg)
    assert QUICK in quick(run_cli, cfg).stderr
    box.append(folder, message("n", "boss@example.com", "new"))

    result = quick(run_cli, cfg)

    assert QUICK not in result.stderr
    assert "1 new message, 1 action done" in result.stdout
    assert QUICK in quick(run_cli, cfg).stderr  # and the next poll is quick again
    assert ids(box, folder) == ["<n@t>"]


def test_a_changed_config_gets_the_full_run(dovecot_preauth, tmp_path, run_cli):
    box = dovecot_preauth
    cfg = config(tmp_path, tunnel(box))
    quick(run_cli, cfg)
    assert QUICK in quick(run_cli, cfg).stderr
    box.append("INBOX", message("c", "a@client.example", "order"))
    quick(run_cli, cfg)  # moved to Clients, which is not watched
    cfg.write_text(cfg.read_text() + "# edited\n")

    assert QUICK not in quick(run_cli, cfg).stderr
    assert QUICK in quick(run_cli, cfg).stderr


def test_a_reset_uidvalidity_gets_the_full_run(dovecot_preauth, tmp_path, run_cli):
    box = dovecot_preauth
    box.append("INBOX", message("a", "x@y.example", "hello"))
    cfg = config(tmp_path, tunnel(box))
    quick(run_cli, cfg)
    assert QUICK in quick(run_cli, cfg).stderr
    db = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
    with db:  # as if the server had given the folder a new UIDVALIDITY since
        db.execute("UPDATE folders SET validity = '1' WHERE folder = 'INBOX'")
    db.close()

    result = quick(run_cli, cfg)

    assert QUICK not in result.stderr
    assert "reset UIDVALIDITY" in result.stdout
    assert QUICK in quick(run_cli, cfg).stderr


def test_a_waiting_notification_gets_the_full_run(dovecot_preauth, httpserver, tmp_path, run_cli):
    box = dovecot_preauth
    rules = "- {name: alice, when: {from: alice@example.org}, then: [{notify: hook}]}\n"
    hook = (
        f"notifiers:\n  hook:\n    webhook: {{url: '{httpserver.url_for('/hook')}'}}\n"
        "    retry: {attempts: 5, backoff: 1h}\n"
    )
    cfg = config(tmp_path, tunnel(box), rules=rules)
    cfg.write_text(hook + cfg.read_text())
    quick(run_cli, cfg)
    httpserver.expect_request("/hook").respond_with_data("busy", status=503)
    box.append("INBOX", message("r", "alice@example.org", "Re: lunch"))
    run_cli("run", "--once", "-c", str(cfg), "--state-dir", str(tmp_path / "state"))  # queued
    httpserver.clear()
    httpserver.expect_oneshot_request("/hook").respond_with_data("ok")
    db = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
    with db:  # the hour of backoff has passed
        assert db.execute("UPDATE outbox SET next_at = 0 WHERE state = 'pending'").rowcount == 1
    db.close()

    result = quick(run_cli, cfg)

    assert QUICK not in result.stderr  # the full run sends what waits
    assert len(httpserver.log) == 1
    assert QUICK in quick(run_cli, cfg).stderr


@pytest.mark.parametrize("how", ["starttls+password_file", "tls+token"])
def test_the_quick_poll_verifies_tls_and_logs_in_as_the_full_run_does(
    dovecot_server, tmp_path, run_cli, how
):
    server = dovecot_server
    secret = tmp_path / "password"
    secret.write_text(server.password + "\n")
    if how == "starttls+password_file":
        settings = {"port": server.imap_port, "security": "starttls", "ca_file": server.ca_file,
                    "password_file": str(secret)}  # fmt: skip
    else:
        settings = {"port": server.imaps_port, "security": "tls",
                    "fingerprint": server.cert_sha256,
                    "oauth2_token_command": ["echo", server.token]}  # fmt: skip
    cfg = config(tmp_path, flow(host="127.0.0.1", username=server.username, **settings))
    quick(run_cli, cfg)
    result = quick(run_cli, cfg)
    assert QUICK in result.stderr
    assert server.token not in result.stderr + result.stdout
    # A server certificate the config does not trust ends the quick poll, and the full
    # run refuses the server and says why.
    if how == "starttls+password_file":
        settings["ca_file"] = "/etc/ssl/certs/ca-certificates.crt"
        other = config(tmp_path, flow(host="127.0.0.1", username=server.username, **settings))
        refused = run_cli(
            "run", "--once", "-v", "-c", str(other), "--state-dir", str(tmp_path / "state")
        )
        assert refused.returncode == 3 and QUICK not in refused.stderr
        assert "not trusted" in refused.stderr


def test_a_password_in_the_config_is_not_stored_in_the_state(dovecot_server, tmp_path, run_cli):
    server = dovecot_server
    cfg = server_config(tmp_path, server, server.imap_port)
    quick(run_cli, cfg)
    assert QUICK in quick(run_cli, cfg).stderr
    state = (tmp_path / "state" / "state.sqlite3").read_bytes()
    assert server.password.encode() not in state

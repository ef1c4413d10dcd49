"""POP3 accounts through `mailrules run --once`, against Dovecot and a quirky server."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.pop3_servers import HAVE_DOVECOT, MISSING, DovecotBox, Quirky

dovecot_only = pytest.mark.skipif(not HAVE_DOVECOT, reason=MISSING)


def message(i: int, *, header: bytes = b"", body: bytes = b"Hello.\n", subject: str = "") -> bytes:
    return (
        (
            f"From: sender{i}@example.org\nTo: me@example.net\nSubject: {subject or f'note {i}'}\n"
            f"Message-ID: <m{i}@example.org>\nDate: Tue, 24 Nov 2026 10:00:0{i % 10} +0000\n"
        ).encode()
        + header
        + b"\n"
        + body
    )


DOTS = message(1, body=b".starts with a dot\n..two dots\n.\nFrom the start\nend\n")
LONG_HEADER = message(2, header=b"X-Long: " + b"x" * 5000 + b"\n")
LARGE = message(3, body=b"".join(b"line %06d of a large message\n" % n for n in range(4000)))


def local_messages(root: Path, folder: str = "INBOX") -> list[bytes]:
    return _local_messages(root, folder)


def _local_messages(root: Path, folder: str = "INBOX") -> list[bytes]:
    path = root if folder == "INBOX" else root / f".{folder}"
    files = [p for sub in ("new", "cur") if (path / sub).is_dir() for p in (path / sub).iterdir()]
    return sorted(p.read_bytes() for p in files)


def write_config(tmp_path: Path, pop3: dict, rules: str = "[]", **account: object) -> Path:
    settings = {"pop3": pop3, "deliver_to": str(tmp_path / "Local"), **account}
    path = tmp_path / "rules.yaml"
    path.write_text(f"accounts:\n  home: {json.dumps(settings)}\nrules: {rules}\n")
    return path


def run(run_cli, config: Path, *args: str, **kwargs):
    state = str(config.parent / "state")
    return run_cli("run", "--once", "-c", str(config), "--state-dir", state, *args, **kwargs)


@pytest.fixture
def box():
    if not HAVE_DOVECOT:
        pytest.skip(MISSING)
    server = DovecotBox()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon():
    if not HAVE_DOVECOT:
        pytest.skip(MISSING)
    server = DovecotBox()
    info = server.start()
    yield server, info
    server.stop()


@pytest.fixture
def quirky():
    server = Quirky([DOTS, LONG_HEADER, LARGE, message(4)])
    yield server
    server.stop()


# -- Dovecot over a pre-authenticated pipe ------------------------------------------------


@dovecot_only
def test_fetch_delivers_byte_exact_and_rules_deliver_or_delete(box, run_cli, tmp_path):
    for m in (DOTS, LONG_HEADER, LARGE, message(4, subject="[SPAM] win"), message(5)):
        box.add(m)
    local = tmp_path / "Local"
    rules = json.dumps(
        [
            {"name": "big", "when": {"larger_than": "64KiB"}, "then": [{"deliver": str(local)}]},
            {"name": "spam", "when": {"subject": "[SPAM]"}, "then": ["delete"]},
            {
                "name": "five",
                "when": {"from": "sender5@*"},
                "then": [{"delete": {"expunge": True}}],
            },
        ]
    )
    pop3 = {"tunnel": box.tunnel(), "preauth": True}
    config = write_config(tmp_path, pop3, rules, existing="process")

    result = run(run_cli, config)

    assert result.returncode == 0, result.stderr
    assert "5 new messages" in result.stdout
    # 'deliver' into deliver_to itself: one copy, not a second one from deliver_to
    assert local_messages(local) == sorted([DOTS, LONG_HEADER, LARGE])
    assert local_messages(local, "Trash") == [message(4, subject="[SPAM] win")]
    assert box.on_server() == sorted([DOTS, LONG_HEADER, LARGE])  # deleted only what rules said
    assert list((local / "tmp").iterdir()) == []

    again = run(run_cli, config)
    assert again.returncode == 0, again.stderr
    assert "0 new messages" in again.stdout
    box.add(message(6))
    third = run(run_cli, config)
    assert "1 new message" in third.stdout
    assert local_messages(local) == sorted([DOTS, LONG_HEADER, LARGE, message(6)])


@dovecot_only
def test_first_run_leaves_existing_mail_then_fetches_new(box, run_cli, tmp_path):
    box.add(message(1))
    config = write_config(tmp_path, {"tunnel": box.tunnel(), "preauth": True})

    first = run(run_cli, config)

    assert first.returncode == 0, first.stderr
    assert "first run, 1 messages on the server recorded as seen" in first.stdout
    assert local_messages(tmp_path / "Local") == []
    box.add(message(2))
    second = run(run_cli, config)
    assert local_messages(tmp_path / "Local") == [message(2)]
    assert len(box.on_server()) == 2, second.stderr  # left on the server by default


@dovecot_only
def test_delete_after_removes_mail_delivered_long_enough_ago(box, run_cli, tmp_path):
    box.add(message(1))
    pop3 = {"tunnel": box.tunnel(), "preauth": True}
    config = write_config(tmp_path, pop3, existing="process", delete_after="1d")
    assert run(run_cli, config).returncode == 0
    assert len(box.on_server()) == 1
    db = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
    with db:  # a day passes
        db.execute("UPDATE pop3_fetched SET delivered_at = delivered_at - 86401")
        db.execute("UPDATE quick_poll SET due_at = due_at - 86401")
    db.close()

    result = run(run_cli, config)

    assert result.returncode == 0, result.stderr
    assert box.on_server() == []
    assert local_messages(tmp_path / "Local") == [message(1)]


@dovecot_only
def test_dry_run_neither_delivers_nor_deletes(box, run_cli, tmp_path):
    box.add(message(1))
    pop3 = {"tunnel": box.tunnel(), "preauth": True}
    rules = '[{name: all, then: ["delete"]}]'
    config = write_config(tmp_path, pop3, rules, existing="process")
    result = run(run_cli, config, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "delete -> Trash  by 'all'" in result.stdout
    assert box.on_server() == [message(1)]
    assert not (tmp_path / "Local").exists()


@dovecot_only
@pytest.mark.slow
def test_crash_at_every_step_loses_nothing_and_delivers_nothing_twice(box, run_cli, tmp_path):
    originals = [message(i) for i in range(1, 4)]
    pop3 = {"tunnel": box.tunnel(), "preauth": True}
    local = tmp_path / "Local"
    rule = {
        "when": {"from": "sender2@*"},
        "then": [{"deliver": {"path": str(local), "folder": "Two"}}],
    }
    rules = json.dumps([{"name": "two", **rule}])
    config = write_config(tmp_path, pop3, rules, existing="process", delete_after_delivery=True)

    def local_messages(root: Path) -> list[bytes]:  # INBOX and Two
        return sorted(_local_messages(root) + _local_messages(root, "Two"))

    killed_between_dele_and_quit = False
    for step in range(1, 30):
        box.reset(originals)
        shutil.rmtree(local, ignore_errors=True)
        shutil.rmtree(tmp_path / "state", ignore_errors=True)

        crashed = run(run_cli, config, "-v", extra_env={"MAILRULES_CRASH_AFTER": str(step)})

        assert crashed.returncode in (0, -9), crashed.stderr
        have = local_messages(local)
        assert len(have) == len(set(have)), f"duplicate after a crash at step {step}"
        assert sorted(set(have) | set(box.on_server())) == originals, f"lost at step {step}"
        if crashed.returncode == -9 and "deleting 3 messages" in crashed.stderr:
            # killed after DELE: before QUIT the server keeps everything, after it nothing
            assert box.on_server() in (originals, [])
            assert have == originals
            killed_between_dele_and_quit |= box.on_server() == originals
        rerun = run(run_cli, config)
        assert rerun.returncode == 0, rerun.stderr
        assert local_messages(local) == originals, f"after a crash at step {step}"
        assert _local_messages(local, "Two") == [message(2)]
        assert box.on_server() == []
        if crashed.returncode == 0:
            break
    assert killed_between_dele_and_quit


@dovecot_only
def test_quick_poll_answers_from_one_listing_and_steps_aside_for_changes(box, run_cli, tmp_path):
    box.add(message(1))
    pop3 = {"tunnel": box.tunnel(), "preauth": True}
    config = write_config(tmp_path, pop3, existing="process")
    assert run(run_cli, config).returncode == 0
    db = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
    assert db.execute("SELECT count(*) FROM quick_poll").fetchone() == (1,)
    db.close()

    quick = run(run_cli, config, "-vv")

    assert quick.returncode == 0, quick.stderr
    assert "0 new messages" in quick.stdout
    assert "nothing new (quick poll" in quick.stderr
    box.add(message(2))
    new = run(run_cli, config, "-vv")
    assert "UIDLs changed; doing a full run" in new.stderr
    assert "1 new message" in new.stdout
    assert local_messages(tmp_path / "Local") == [message(1), message(2)]
    config.write_text(config.read_text().replace("rules: []", "rules: [{name: x, then: [stop]}]"))
    changed = run(run_cli, config, "-v")
    assert "0 new messages" in changed.stdout and "quick poll" not in changed.stderr


# -- Dovecot as a daemon: STLS, implicit TLS, logins ---------------------------------------


@dovecot_only
def test_stls_refuses_a_self_signed_certificate_without_ca_file_or_pin(daemon, run_cli, tmp_path):
    _, info = daemon
    pop3 = {
        "host": "127.0.0.1",
        "port": info["port"],
        "security": "starttls",
        "username": "me",
        "password": "secret",
    }
    result = run(run_cli, write_config(tmp_path, pop3))
    assert result.returncode == 3
    assert "certificate is not trusted" in result.stderr
    assert "set ca_file or pin its fingerprint" in result.stderr
    bad = {**pop3, "fingerprint": "sha256:" + "00" * 32}
    result = run(run_cli, write_config(tmp_path, bad))
    assert result.returncode == 3 and "does not match the pinned one" in result.stderr


@dovecot_only
@pytest.mark.parametrize(
    ("security", "trust", "auth"),
    [
        ("starttls", "ca_file", "user"),
        ("starttls", "fingerprint", "plain"),
        ("tls", "ca_file", "apop"),
    ],
)
def test_tls_with_ca_file_or_pin_logs_in_and_fetches(
    daemon, run_cli, tmp_path, security, trust, auth
):
    server, info = daemon
    server.add(message(7))
    pop3 = {
        "host": "127.0.0.1",
        "port": info["port" if security == "starttls" else "tls_port"],
        "security": security,
        trust: info[trust],
        "username": "me",
        "password_file": str(tmp_path / "pw"),
        "auth": auth,
    }
    (tmp_path / "pw").write_text("secret\n")
    result = run(run_cli, write_config(tmp_path, pop3, existing="process"))
    assert result.returncode == 0, result.stderr
    assert message(7) in local_messages(tmp_path / "Local")


@dovecot_only
def test_wrong_password_is_a_clear_login_error(daemon, run_cli, tmp_path):
    _, info = daemon
    pop3 = {
        "host": "127.0.0.1",
        "port": info["tls_port"],
        "ca_file": info["ca_file"],
        "username": "me",
        "password": "wrong",
    }
    result = run(run_cli, write_config(tmp_path, pop3))
    assert result.returncode == 3
    assert "login as 'me' (user) refused" in result.stderr
    assert "wrong" not in result.stderr


# -- A quirky server ------------------------------------------------------------------------


def quirky_config(tmp_path: Path, server: Quirky, rules: str = "[]", **pop3: object) -> Path:
    settings = {"host": "127.0.0.1", "port": server.port, "security": "plain"}
    settings.update({"username": "me", "password": "secret", **pop3})
    settings = {k: v for k, v in settings.items() if v is not None}
    return write_config(tmp_path, settings, rules, existing="process")


def test_quirky_server_loses_nothing_and_duplicates_nothing(quirky, run_cli, tmp_path):
    config = quirky_config(
        tmp_path, quirky, '[{name: one, when: {subject: "note 1"}, then: [delete]}]'
    )
    local = tmp_path / "Local"
    quirky.drop_retr = 2  # the connection drops half-way through message 2

    dropped = run(run_cli, config)

    assert dropped.returncode == 3
    assert "the server closed the connection during RETR" in dropped.stderr
    assert "nothing was deleted" in dropped.stderr
    assert len(quirky.messages) == 4 and "DELE" not in quirky.commands

    result = run(run_cli, config)

    assert result.returncode == 0, result.stderr
    log = result.stderr
    assert "does not answer CAPA" in log
    assert "refused UIDL" in log and "digest of their headers and size" in log
    assert "TOP ignores the line count" in log
    assert "deleted at DELE instead of at QUIT and renumbered" in log
    assert local_messages(local) == sorted([LONG_HEADER, LARGE, message(4)])
    assert local_messages(local, "Trash") == [DOTS]
    assert quirky.messages == [LONG_HEADER, LARGE, message(4)]  # only what the rule said

    quirky.messages.append(message(5))
    last = run(run_cli, config)
    assert last.returncode == 0, last.stderr
    assert "1 new message" in last.stdout
    assert local_messages(local) == sorted([LONG_HEADER, LARGE, message(4), message(5)])


def test_identical_messages_without_uidl_are_both_fetched(run_cli, tmp_path):
    server = Quirky([message(1), message(1)])
    try:
        result = run(run_cli, quirky_config(tmp_path, server))
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert local_messages(tmp_path / "Local") == [message(1), message(1)]


def test_starttls_is_refused_when_the_server_does_not_offer_stls(quirky, run_cli, tmp_path):
    result = run(run_cli, quirky_config(tmp_path, quirky, security="starttls"))
    assert result.returncode == 3
    assert "does not offer STLS; refusing to continue in plaintext" in result.stderr
    assert "USER" not in quirky.commands


def test_xoauth2_token_comes_from_the_command(quirky, run_cli, tmp_path):
    config = quirky_config(
        tmp_path, quirky, password=None, oauth2_token_command=["echo", "tok-123"]
    )
    result = run(run_cli, config)
    assert result.returncode == 0, result.stderr
    assert "AUTH" in quirky.commands and "USER" not in quirky.commands
    assert len(local_messages(tmp_path / "Local")) == 4


POP = {"host": "pop.example", "username": "me", "password": "x"}


# -- Config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "rules", "needle"),
    [
        (
            {"pop3": POP},
            "[]",
            "a POP3 account needs deliver_to",
        ),
        (
            {"pop3": POP, "deliver_to": "/m"},
            "[{name: a, then: [{move: Archive}]}]",
            "cannot 'move': POP3 cannot move messages on the server; use deliver",
        ),
        (
            {"pop3": POP, "deliver_to": "/m"},
            "[{name: a, then: [{flag: flagged}]}]",
            "POP3 cannot set flags on the server",
        ),
        (
            {"pop3": {"host": "pop.example", "preauth": True}, "deliver_to": "/m"},
            "[]",
            "only a tunnel command can be pre-authenticated",
        ),
        (
            {"maildir": "/m", "pop3": {"tunnel": ["x"], "preauth": True}},
            "[]",
            "give exactly one of maildir, imap or pop3 (found maildir and pop3)",
        ),
        ({"maildir": "/m", "delete_after": "14d"}, "[]", "only POP3 accounts have delete_after"),
        (
            {"pop3": {"host": "pop.example", "security": "plain", "username": "u", "password": "x"},
             "deliver_to": "/m"},
            "[]",
            "plain sends your password unencrypted",
        ),
    ],
)  # fmt: skip
def test_config_errors_say_why(run_cli, tmp_path, account, rules, needle):
    path = tmp_path / "rules.yaml"
    path.write_text(f"accounts:\n  home: {json.dumps(account)}\nrules: {rules}\n")
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 2
    assert needle in result.stderr
    assert f"{path}:" in result.stderr


def test_deliver_on_a_pop3_account_writes_into_deliver_to(run_cli, tmp_path):
    config = write_config(tmp_path, POP)
    result = run_cli(
        "deliver", "-c", str(config), "--state-dir", str(tmp_path / "s"), input=message(1)
    )
    assert result.returncode == 0, result.stderr
    assert local_messages(tmp_path / "Local") == [message(1)]


def test_a_reused_uidl_never_overwrites_the_message_fetched_before(quirky, run_cli, tmp_path):
    """A server that hands a deleted message's UIDL to a new one of the same size: the new
    message is fetched (not deleted unread as if it were the old one) into its own local
    file, and the first one (still unread in new/) stays."""
    first, second = message(1, body=b"first body\n"), message(1, body=b"other body\n")
    quirky.uidl_by_number = True
    quirky.messages[:] = [first]
    settings = {"host": "127.0.0.1", "port": quirky.port, "security": "plain"}
    settings |= {"username": "me", "password": "secret"}
    config = write_config(tmp_path, settings, existing="process", delete_after_delivery=True)

    one = run(run_cli, config)
    assert one.returncode == 0, one.stderr
    assert quirky.messages == []
    quirky.messages.append(second)  # UIDL "1" again, the same size
    two = run(run_cli, config)

    assert two.returncode == 0, two.stderr
    assert "1 new message" in two.stdout  # not taken for the deleted one and deleted unread
    assert local_messages(tmp_path / "Local") == sorted([first, second])
    assert quirky.messages == []


@dovecot_only
@pytest.mark.parametrize(("security", "port"), [("starttls", "port"), ("tls", "tls_port")])
def test_a_wrong_ca_file_is_named_and_not_called_a_missing_one(
    daemon, run_cli, tmp_path, security, port
):
    from tests.dovecot import _Certificate

    _, info = daemon
    (tmp_path / "other").mkdir()
    other_ca = _Certificate(tmp_path / "other").cert  # a self-signed one, not the server's
    pop3 = {"host": "127.0.0.1", "port": info[port], "security": security,
            "username": "me", "password": "secret", "ca_file": str(other_ca)}  # fmt: skip
    result = run(run_cli, write_config(tmp_path, pop3))
    assert result.returncode == 3
    assert f"certificate is not trusted: it did not verify against ca_file {other_ca}" in (
        result.stderr
    )
    assert "set ca_file" not in result.stderr


@pytest.mark.parametrize(
    ("settings", "blob"),
    [
        ({"auth": "plain"}, b"\0me\0secret"),
        (
            {"password": None, "oauth2_token_command": ["echo", "tok-123"]},
            b"user=me\x01auth=Bearer tok-123\x01\x01",
        ),
    ],
)
def test_a_server_echoing_the_sasl_login_shows_no_secret(quirky, run_cli, tmp_path, settings, blob):
    import base64

    quirky.echo_auth = True
    result = run(run_cli, quirky_config(tmp_path, quirky, **settings))
    assert result.returncode == 3
    assert "cannot decode" in result.stderr and "***" in result.stderr
    assert base64.b64encode(blob).decode() not in result.stderr
    for secret in ("secret", "tok-123"):
        assert secret not in result.stderr

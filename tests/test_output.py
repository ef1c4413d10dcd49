"""What a person or a log reader sees: no raw control characters, the folder a run really
uses, clear state errors, and a loud word when a lost state makes a new baseline."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

HOSTILE = (
    b'From: "Ev\x1b]0;owned\x07il" <e\x1b[2J@x.example>\n'
    b"Subject: =?utf-8?q?hi=1B[31m_red=0D?= \x1b[1A\r\x07there\n"
    b"Message-ID: <id\x1b[2J\x07\r@x.example>\n"
    b"\n"
    b"body\n"
)
RAW = ("\x1b", "\x07", "\r")


def _state_db(env: dict[str, str]) -> Path:
    return Path(env["XDG_STATE_HOME"]) / "mailrules" / "state.sqlite3"


def test_control_characters_from_mail_never_reach_output_raw(
    maildir, write_config, run_cli, tmp_path
):
    config = write_config(
        "- {name: all, then: [{flag: flagged}, {copy: 'Copies/{subject}'}]}\n"
        "- {name: never, when: {from: nobody@x.example}, then: [stop]}\n"
    )
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    maildir.add(raw=HOSTILE)
    message = tmp_path / "hostile.eml"
    message.write_bytes(HOSTILE)
    outputs = {
        "run": run_cli("run", "--once", "-vv", "-c", str(config)),
        "json log": run_cli(
            "run", "--once", "--all", "-vv", "--log-format", "json", "-c", str(config)
        ),
        "explain": run_cli("explain", "-c", str(config), str(message)),
        "state": run_cli("state"),
    }
    for name, result in outputs.items():
        assert "Traceback" not in result.stderr, (name, result.stderr)
        for char in RAW:
            assert char not in result.stdout, (name, char, result.stdout)
            assert char not in result.stderr, (name, char, result.stderr)
    assert "\\x1b" in outputs["run"].stdout and "\\x1b" in outputs["explain"].stdout
    assert "\\x1b" in outputs["state"].stdout


def test_explain_shows_exactly_the_folder_the_run_uses(maildir, write_config, run_cli, tmp_path):
    config = write_config("- {name: file, then: [{move: 'Archive/{subject}'}]}\n")
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    raw = b"From: a@x.example\nSubject: ../../etc/x\nMessage-ID: <t@x>\n\nhi\n"
    message = tmp_path / "m.eml"
    message.write_bytes(raw)
    explained = run_cli("explain", "-c", str(config), str(message))
    assert explained.returncode == 0, explained.stderr
    (shown,) = [line for line in explained.stdout.splitlines() if "-> move -> " in line]
    folder = shown.split("-> move -> ", 1)[1]
    maildir.add(raw=raw)
    ran = run_cli("run", "--once", "-c", str(config))
    assert ran.returncode == 0, ran.stderr
    assert folder != "Archive/../../etc/x"
    assert maildir.ids(folder) == ["<t@x>"], (folder, maildir.folders())


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    for i in range(page, len(data)):  # every page after the first: header and schema survive
        data[i] = 0xA5
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["run", "state", "deliver"])
def test_a_corrupted_state_file_is_a_clear_error(maildir, write_config, run_cli, env, command):
    config = write_config("- {name: f, when: {from: a@x.example}, then: [{flag: flagged}]}\n")
    maildir.add(from_="a@x.example", subject="one")
    assert run_cli("run", "--once", "--all", "-c", str(config)).returncode == 0
    db = _state_db(env)
    for extra in ("-wal", "-shm"):
        assert not Path(f"{db}{extra}").exists()
    _corrupt(db)
    maildir.add(from_="a@x.example", subject="two")
    args = {"run": ("run", "--once"), "state": ("state",), "deliver": ("deliver",)}[command]
    result = run_cli(*args, "-c", str(config), input=b"From: a@x.example\n\nhi\n")
    # deliver has written the message: it says so, and the MTA must not deliver it again
    assert result.returncode == (0 if command == "deliver" else 3), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert str(db) in result.stderr and "damaged" in result.stderr, result.stderr


def test_a_state_directory_that_cannot_be_created_is_a_clear_error(
    maildir, write_config, run_cli, tmp_path
):
    config = write_config("- {name: f, when: {from: a@x.example}, then: [{flag: flagged}]}\n")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = run_cli("run", "--once", "-c", str(config), "--state-dir", str(blocker / "state"))
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{blocker / 'state'}" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_state_directory_is_a_clear_error(maildir, write_config, run_cli, tmp_path):
    config = write_config("- {name: f, when: {from: a@x.example}, then: [{flag: flagged}]}\n")
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o500)
    try:
        result = run_cli("run", "--once", "-c", str(config), "--state-dir", str(state))
    finally:
        state.chmod(0o700)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and str(state) in result.stderr


def test_a_deleted_state_says_loudly_that_it_made_a_new_baseline(
    maildir, write_config, run_cli, env
):
    config = write_config("- {name: f, when: {from: a@x.example}, then: [{flag: flagged}]}\n")
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    db = _state_db(env)
    for path in db.parent.iterdir():
        path.unlink()
    mid = maildir.add(from_="a@x.example", subject="arrived while the state was gone")
    result = run_cli("run", "--once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "warning" in line.lower()]
    assert warning, result.stderr
    assert str(db) in warning[0] and "1 message" in warning[0] and "--all" in warning[0]
    assert maildir.flags(mid) == ""  # the baseline itself is unchanged: nothing acted on
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM seen").fetchone()[0] == 1


def test_a_lone_surrogate_in_a_subject_is_recorded_and_not_acted_on_again(
    maildir, write_config, run_cli, tmp_path, httpserver
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    config = write_config(
        "- {name: tag, when: {from: a@x.example},\n"
        "   then: [{flag: flagged}, {run: [/bin/true]}, {notify: hook}]}\n"
    )
    config.write_text(
        config.read_text()
        + f"notifiers:\n  hook:\n    webhook: {{url: '{httpserver.url_for('/hook')}'}}\n"
    )
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    maildir.add(raw=b"From: a@x.example\nSubject: =?utf-7?q?+2AA-?= x\nMessage-ID: <s@x>\n\nhi\n")
    message = tmp_path / "s.eml"
    message.write_bytes(maildir.files()[0].read_bytes())
    first = run_cli("run", "--once", "-c", str(config))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "1 new message, 3 actions done, 0 failed" in first.stdout
    assert "notifications: 1 sent" in first.stdout
    again = run_cli("run", "--once", "-c", str(config))
    assert again.returncode == 0 and "0 new messages" in again.stdout, again.stdout
    for result in (first, again, run_cli("state"), run_cli("explain", "-c", str(config),
                                                           str(message))):  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    assert len(httpserver.log) == 1


def test_a_file_name_that_is_not_utf8_does_not_break_the_baseline(maildir, write_config, run_cli):
    config = write_config("- {name: tag, when: {from: a@x.example}, then: [{flag: flagged}]}\n")
    odd = os.path.join(os.fsencode(maildir.root / "new"), b"1700000000.M0P0.h\xff\xfe")
    with open(odd, "wb") as f:
        f.write(b"From: b@x.example\nSubject: odd name\n\nhi\n")
    first = run_cli("run", "--once", "-c", str(config))
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    mid = maildir.add(from_="a@x.example", subject="next")
    second = run_cli("run", "--once", "-c", str(config))
    assert second.returncode == 0, second.stderr
    assert "1 new message, 1 action done" in second.stdout, second.stdout
    assert maildir.flags(mid) == "F"
    third = run_cli("run", "--once", "-c", str(config))
    assert third.returncode == 0 and "0 new messages" in third.stdout, third.stdout

"""`mailrules check`: every config problem as FILE:LINE:COL, exit 2, nothing touched."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailrules.config.load import parse_config
from mailrules.errors import ConfigError
from mailrules.sources.maildir import Maildir


def check(run_cli, tmp_path: Path, text: str):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    result = run_cli("check", "-c", str(path))
    return result, path


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if re.match(r"^.+:\d+:\d+: ", line)]


HEAD = "accounts:\n  local:\n    maildir: /tmp/nowhere-mailrules\nrules:\n"


def test_valid_example_config_passes(run_cli):
    example = Path(__file__).parent.parent / "rules.example.yaml"
    result = run_cli("check", "-c", str(example))
    assert result.returncode == 0, result.stderr
    assert "OK (1 account, 7 rules)" in result.stdout


def test_packaged_example_is_the_documented_one():
    root = Path(__file__).parent.parent
    assert (root / "rules.example.yaml").read_text() == (
        root / "mailrules" / "demo" / "rules.example.yaml"
    ).read_text()


@pytest.mark.parametrize(
    ("rules", "line", "col", "needle"),
    [
        # YAML 1.1 surprises
        ("  - name: a\n    then: [{move: no}]\n", 6, 19, "'no' is a boolean in YAML 1.1"),
        ("  - name: a\n    when: {older_than: 1:30}\n    then: [stop]\n", 6, 24, "base-60 number"),
        ("  - name: a\n    then: [{move: 010}]\n", 6, 19, "octal number in YAML 1.1"),
        # unknown names, with a suggestion
        (
            "  - name: a\n    when: {form: x@y}\n    then: [stop]\n",
            6,
            12,
            "unknown condition 'form'; did you mean 'from'?",
        ),
        (
            "  - name: a\n    then: [{mvoe: X}]\n",
            6,
            13,
            "unknown action 'mvoe'; did you mean 'move'?",
        ),
        (
            "  - name: a\n    when: {from: x@y}\n    thn: [stop]\n",
            7,
            5,
            "unknown key 'thn'; did you mean 'then'?",
        ),
        # bad patterns
        (
            "  - name: a\n    when: {subject: {regex: 'a(b'}}\n    then: [stop]\n",
            6,
            29,
            "bad regular expression 'a(b'",
        ),
        ("  - name: a\n    when: {from: '[z-a]@x'}\n    then: [stop]\n", 6, 18, "bad glob"),
        # wrong types
        ("  - name: a\n    enabled: 'yes'\n    then: [stop]\n", 6, 14, "expected true or false"),
        ("  - name: 5\n    then: [stop]\n", 5, 11, "expected text, got a number (5)"),
        (
            "  - name: a\n    when: {larger_than: huge}\n    then: [stop]\n",
            6,
            25,
            "expected a size such as",
        ),
        (
            "  - name: a\n    when: {older_than: 30}\n    then: [stop]\n",
            6,
            24,
            "write it with a unit",
        ),
        # references
        ("  - name: a\n    accounts: [work]\n    then: [stop]\n", 6, 16, "no account named 'work'"),
        (
            "  - name: a\n    folders: [Spam]\n    then: [stop]\n",
            6,
            15,
            "'Spam' is not a watched folder",
        ),
        (
            "  - name: a\n    then: [{move: 'Archive/{date.yeer}'}]\n",
            6,
            19,
            "unknown field {date.yeer}",
        ),
        # shape of actions and conditions
        ("  - name: a\n    then: [{move: X}, {flag: seen}]\n", 6, 23, "'flag' comes after 'move'"),
        ("  - name: a\n    then: [{run: 'notify-send hi'}]\n", 6, 18, "without a shell"),
        (
            "  - name: a\n    when: {contains: x}\n    then: [stop]\n",
            6,
            12,
            "'contains' belongs to a header test",
        ),
        (
            "  - name: a\n    when: {header: X-Spam}\n    then: [stop]\n",
            6,
            20,
            "exactly one of contains, is, matches, regex or exists",
        ),
        ("  - name: a\n    then: [{flag: flaged}]\n", 6, 19, "unknown flag 'flaged'"),
        ("  - name: a\n    then: [move]\n", 6, 12, "'move' needs an argument"),
        ("  - name: a\n    then: [{move: 'Work.old'}]\n", 6, 19, "Maildir++ uses '.'"),
    ],
)
def test_check_reports_problem_at_line_and_column(run_cli, tmp_path, rules, line, col, needle):
    result, path = check(run_cli, tmp_path, HEAD + rules)
    assert result.returncode == 2, result.stdout
    found = errors(result)
    assert found, result.stderr
    assert any(e.startswith(f"{path}:{line}:{col}: ") and needle in e for e in found), found


def test_duplicate_key_names_both_lines(run_cli, tmp_path):
    text = HEAD + "  - name: a\n    when:\n      subject: x\n      subject: y\n    then: [stop]\n"
    result, path = check(run_cli, tmp_path, text)
    assert result.returncode == 2
    assert f"{path}:8:7: duplicate key 'subject' (first at line 7)" in result.stderr


def test_every_problem_is_reported_at_once(run_cli, tmp_path):
    text = (
        "accounts:\n  local:\n    maildir: /tmp/x\n    folderz: [INBOX]\n"
        "rules:\n"
        "  - name: a\n    when: {form: x}\n    then: [stop]\n"
        "  - name: b\n    then: [{mvoe: X}]\n"
        "extra: 1\n"
    )
    result, path = check(run_cli, tmp_path, text)
    assert result.returncode == 2
    assert len(errors(result)) == 4, result.stderr
    assert "4 problems in the config; nothing was changed" in result.stderr
    assert f"{path}:4:5: accounts.local: unknown key 'folderz'; did you mean 'folders'?" in (
        result.stderr
    )


def test_yaml_syntax_error_has_position(run_cli, tmp_path):
    result, path = check(run_cli, tmp_path, HEAD + "  - name: a\n    then: [stop\n")
    assert result.returncode == 2
    assert re.search(rf"^{re.escape(str(path))}:\d+:\d+: YAML syntax error", result.stderr, re.M)


def test_missing_config_file_is_a_clear_error(run_cli, tmp_path):
    result = run_cli("check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml:1:1: cannot read the config: No such file or directory" in result.stderr


def test_no_config_anywhere_says_where_it_looked(run_cli):
    result = run_cli("check")
    assert result.returncode == 2
    assert "no config file found" in result.stderr
    assert "rules.example.yaml" in result.stderr


def test_unset_environment_variable_in_path_is_an_error(run_cli, tmp_path):
    text = "accounts:\n  local:\n    maildir: ${MAILRULES_TEST_UNSET}/Mail\nrules: []\n"
    result, path = check(run_cli, tmp_path, text)
    assert result.returncode == 2
    assert f"{path}:3:14: accounts.local.maildir: environment variable MAILRULES_TEST_UNSET" in (
        result.stderr
    )


def test_bad_config_touches_no_mailbox_and_creates_no_state(run_cli, maildir, tmp_path, env):
    maildir.add(from_="a@x.example", subject="keep me")
    before = [p.name for p in maildir.files()]
    text = (
        f"accounts:\n  local:\n    maildir: {maildir.root}\n"
        "rules:\n  - name: a\n    then: [{move: X}, {mvoe: Y}]\n"
    )
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    result = run_cli("run", "--once", "--all", "-c", str(path))
    assert result.returncode == 2
    assert [p.name for p in maildir.files()] == before
    assert not Path(env["XDG_STATE_HOME"]).exists()


def test_action_the_account_cannot_perform_is_refused(monkeypatch):
    monkeypatch.setattr(Maildir, "capabilities", frozenset({"move"}))
    text = HEAD + "  - name: a\n    then: [{flag: flagged}]\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "rules.yaml")
    assert "rules.yaml:6:13: rules[0].then[0]: account 'local' cannot 'flag'" in str(caught.value)


def test_config_discovery_order(run_cli, tmp_path, env):
    xdg = Path(env["XDG_CONFIG_HOME"]) / "mailrules"
    xdg.mkdir(parents=True)
    (xdg / "rules.yaml").write_text("accounts:\n  xdg:\n    maildir: /tmp/x\n")
    from_env = tmp_path / "env.yaml"
    from_env.write_text("accounts:\n  a:\n    maildir: /tmp/x\n  b:\n    maildir: /tmp/y\n")
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("accounts:\n  a:\n    maildir: /tmp/x\nrules: []\nbogus: 1\n")

    assert "OK (1 account, 0 rules)" in run_cli("check").stdout
    assert str(xdg / "rules.yaml") in run_cli("check").stdout
    via_env = run_cli("check", extra_env={"MAILRULES_CONFIG": str(from_env)})
    assert "OK (2 accounts, 0 rules)" in via_env.stdout
    via_flag = run_cli("check", "-c", str(explicit), extra_env={"MAILRULES_CONFIG": str(from_env)})
    assert via_flag.returncode == 2
    assert "unknown top-level key 'bogus'" in via_flag.stderr


def test_schema_is_json_schema_with_every_condition_and_action(run_cli):
    import json

    result = run_cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    conditions = schema["$defs"]["condition"]["anyOf"][0]["properties"]
    for name in (
        "from",
        "subject",
        "header",
        "body",
        "older_than",
        "attachment",
        "all",
        "not",
        "command",
        "list",
        "flags",
        "keywords",
    ):
        assert name in conditions
    actions = json.dumps(schema["$defs"]["action"])
    for name in ("move", "copy", "delete", "flag", "mark_read", "deliver", "run", "stop"):
        assert f'"{name}"' in actions
    assert "additionalProperties" in json.dumps(schema["$defs"]["AccountModel"])


def test_paths_expand_the_same_in_accounts_and_deliver(run_cli, tmp_path):
    """``~`` and ``${VAR}`` mean the same in ``maildir``, ``deliver_to`` and ``deliver``:
    an unset variable is the same error at each, a set one the same directory."""
    text = (
        "accounts:\n"
        "  a: {maildir: '${MR_UNSET_ONE}/Mail'}\n"
        "  p: {pop3: {host: pop.example, username: u, password: x}, "
        "deliver_to: '$MR_UNSET_TWO/Local'}\n"
        "rules:\n"
        "  - {name: d, accounts: [a], then: [{deliver: '${MR_UNSET_THREE}/Backup'}]}\n"
    )
    found = errors(check(run_cli, tmp_path, text)[0])
    for name in ("MR_UNSET_ONE", "MR_UNSET_TWO", "MR_UNSET_THREE"):
        assert any(f"environment variable {name} is not set" in e for e in found), found

    home = tmp_path / "home"
    (home / "Mail" / "cur").mkdir(parents=True)
    for sub in ("new", "tmp"):
        (home / "Mail" / sub).mkdir()
    (tmp_path / "rules.yaml").write_text(
        "accounts:\n  a: {maildir: ~/Mail, existing: process}\n"
        "rules:\n  - {name: d, then: [{deliver: '${HOME}/Backup'}]}\n"
    )
    (home / "Mail" / "new" / "1.M1P1.host").write_bytes(b"Subject: x\n\nbody\n")
    result = run_cli("run", "--once", "-c", str(tmp_path / "rules.yaml"))
    assert result.returncode == 0, result.stderr
    assert [p.read_bytes() for p in (home / "Backup" / "new").iterdir()] == [
        b"Subject: x\n\nbody\n"
    ]

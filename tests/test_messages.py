"""Messages a user reads: said once, counted right, and naming only what was really done."""

from __future__ import annotations

import re


def test_a_failed_action_is_printed_once_and_counted_as_failed(maildir, write_config, run_cli):
    config = write_config(
        "- {name: hook, when: {from: a@x.example}, then: [{run: [/bin/false]}]}\n"
    )
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    maildir.add(from_="a@x.example", subject="fails")
    result = run_cli("run", "--once", "-c", str(config))
    assert result.returncode == 1
    both = result.stdout + result.stderr
    assert both.count("exited 1") == 1, both
    assert "1 new message, 0 actions done, 1 failed" in result.stdout
    verbose = run_cli("run", "--once", "-v", "-c", str(config))  # the log line is there at -v
    assert "exited 1" in verbose.stderr


def test_a_failed_account_is_counted_in_the_summary(run_cli, tmp_path):
    config = tmp_path / "rules.yaml"
    config.write_text(
        f"accounts: {{gone: {{maildir: {tmp_path / 'missing'}}}}}\n"
        "rules: [{name: a, then: [{flag: flagged}]}]\n"
    )
    result = run_cli("run", "--once", "-c", str(config))
    assert result.returncode == 3
    assert re.search(r"0 new messages, 0 actions done, 0 failed, 1 account failed", result.stdout)


def test_explain_without_any_config_names_no_option_that_was_not_given(run_cli, tmp_path):
    message = tmp_path / "m.eml"
    message.write_bytes(b"From: a@x.example\n\nhi\n")
    result = run_cli("explain", str(message))
    assert result.returncode == 2
    assert "no config file found" in result.stderr
    assert "(config):1:1" not in result.stderr and "looked at -c" not in result.stderr
    assert "$MAILRULES_CONFIG" in result.stderr and "rules.example.yaml" in result.stderr


def test_a_rule_with_a_bad_when_still_has_its_then_checked(run_cli, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "accounts: {local: {maildir: /tmp/x}}\n"
        "rules:\n"
        "  - name: a\n"
        "    when: {form: x@y}\n"
        "    then: [{mvoe: X}]\n"
    )
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 2
    assert f"{path}:4:12: " in result.stderr and "unknown condition 'form'" in result.stderr
    assert f"{path}:5:13: " in result.stderr and "unknown action 'mvoe'" in result.stderr
    assert "2 problems in the config" in result.stderr


def test_check_warns_when_a_run_argument_starts_with_a_message_value(run_cli, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "accounts: {local: {maildir: /tmp/x}}\n"
        "rules:\n"
        "  - name: a\n"
        "    then: [{run: [/usr/bin/sort, '{subject}', 'x-{subject}', '{rule}']}]\n"
        "  - name: b\n"
        "    then: [{run: {argv: [/bin/echo, '{from.name} wrote']}}]\n"
        "  - name: c\n"
        "    then: [{run: [/bin/grep, -e, x, --, '{subject}']}]\n"
    )
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK (1 account, 3 rules, 2 warnings)" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if ": warning: " in line]
    assert len(warnings) == 2, result.stderr
    assert warnings[0].startswith(f"{path}:4:34: warning: rules[0].then[0].run[1]: '{{subject}}'")
    assert "'-'" in warnings[0] and "$MAILRULES_SUBJECT" in warnings[0] and "--" in warnings[0]
    assert warnings[1].startswith(f"{path}:6:37: warning: rules[1].then[0].run.argv[1]:")
    assert "$MAILRULES_FROM_NAME" in warnings[1]


def test_run_commands_get_the_message_fields_in_the_environment(
    maildir, write_config, run_cli, tmp_path
):
    out = tmp_path / "env.txt"
    config = write_config(
        "- {name: hook, when: {from: a@x.example},\n"
        f"   then: [{{run: [/bin/sh, -c, 'env > {out}']}}]}}\n"
    )
    assert run_cli("run", "--once", "-c", str(config)).returncode == 0
    maildir.add(from_="Ann <a@x.example>", subject="-o/tmp/owned")
    result = run_cli("run", "--once", "-c", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["MAILRULES_SUBJECT"] == "-o/tmp/owned"
    assert env["MAILRULES_FROM_ADDRESS"] == "a@x.example"
    assert env["MAILRULES_FROM_NAME"] == "Ann"
    assert env["MAILRULES_RULE"] == "hook"

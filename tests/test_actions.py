"""Every action, evaluation order, state and dry runs, through `mailrules run --once`."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import MaildirTree


def run(run_cli, config: Path, *extra: str):
    result = run_cli("run", "--once", "-c", str(config), *extra)
    return result


def test_move_copy_delete_and_flags(maildir, write_config, run_cli, tmp_path):
    a = maildir.add(from_="a@client.example", subject="order")
    b = maildir.add(from_="spam@x.example", subject="[SPAM] win")
    c = maildir.add(from_="gone@x.example", subject="purge me")
    d = maildir.add(from_="boss@example.com", subject="budget", flags="S")
    e = maildir.add(from_="news@shop.example", subject="news", flags="FS")
    config = write_config(
        """
        - {name: clients, when: {from: "*@client.example"}, then: [{move: Work/Clients}]}
        - {name: spam, when: {subject: "[SPAM]"}, then: [delete]}
        - {name: purge, when: {subject: purge}, then: [{delete: {expunge: true}}]}
        - {name: boss, when: {from: boss@example.com},
           then: [{copy: Boss}, {flag: [flagged, answered]}, mark_unread]}
        - {name: news, when: {from: news@shop.example},
           then: [{unflag: flagged}, mark_read, {keyword: [$News, Later]}]}
        """
    )
    result = run(run_cli, config, "--all")
    assert result.returncode == 0, result.stderr
    assert maildir.ids("Work/Clients") == [a]
    assert maildir.ids("Trash") == [b]
    assert c not in maildir.ids() + maildir.ids("Trash")
    assert sorted(maildir.ids()) == sorted([d, e])
    assert maildir.ids("Boss") == [d]
    assert maildir.flags(d) == "FR"  # flagged + answered, seen removed; letters sorted
    assert maildir.flags(d, "Boss") == "S"  # the copy was made before the flag changes
    assert maildir.flags(e)[:1] == "S" and "F" not in maildir.flags(e)
    keywords = (maildir.root / "dovecot-keywords").read_text().split("\n")
    table = {line.split(" ", 1)[1]: chr(97 + int(line.split(" ")[0])) for line in keywords if line}
    assert set(table) == {"$News", "Later"}
    assert set(table.values()) <= set(maildir.flags(e))
    # Maildir++ layout for the nested folder, as Dovecot and Courier read it
    assert (maildir.root / ".Work.Clients" / "maildirfolder").exists()
    # one line per action: rule, action, sender, subject
    assert "local/INBOX: move -> Work/Clients  by 'clients'  <a@client.example> 'order'" in (
        result.stdout
    )
    assert "5 new messages, 9 actions done, 0 failed" in result.stdout


def test_order_stop_and_continue(maildir, write_config, run_cli):
    m = maildir.add(from_="alice@example.org", subject="hello")
    config = write_config(
        """
        - {name: first, when: {from: alice@example.org}, then: [{flag: flagged}]}
        - {name: second, when: {subject: hello}, then: [{copy: Seen-By-Second}]}
        - {name: third, then: [{move: Third}]}
        - {name: fourth, then: [{copy: Never}]}
        """
    )
    assert run(run_cli, config, "--all").returncode == 0
    assert maildir.ids("Third") == [m]
    assert maildir.flags(m, "Third") == "F"
    assert maildir.ids("Seen-By-Second") == [m]
    assert not maildir.folder_path("Never").exists()
    assert maildir.ids() == []


def test_stop_ends_evaluation_and_message_stays(maildir, write_config, run_cli):
    m = maildir.add(from_="boss@example.com", subject="x")
    config = write_config(
        """
        - {name: boss, when: {from: boss@example.com}, then: [{flag: flagged}, stop]}
        - {name: archive, then: [{move: Archive}]}
        """
    )
    assert run(run_cli, config, "--all").returncode == 0
    assert maildir.ids() == [m]
    assert maildir.flags(m) == "F"
    assert not maildir.folder_path("Archive").exists()


def test_templates_and_captures_in_folder_names(maildir, write_config, run_cli):
    m1 = maildir.add(
        from_="x@y.example", subject="Invoice 4711", date=datetime(2024, 3, 5, tzinfo=UTC)
    )
    m2 = maildir.add(from_="kim@example.org", list_id="<dev.lists.example.org>", subject="a")
    m3 = maildir.add(from_="evil@x.example", subject="Invoice ../../etc")
    config = write_config(
        r"""
        - {name: invoices, when: {subject: {regex: 'invoice (?P<num>\S+)'}},
           then: [{move: "Invoices/{date.year}/{match.num}"}]}
        - {name: lists, when: {list: "*"}, then: [{move: "Lists/{list.id}"}]}
        """
    )
    assert run(run_cli, config, "--all").returncode == 0
    assert maildir.ids("Invoices/2024/4711") == [m1]
    # values cannot add folder levels or climb out of the Maildir
    assert maildir.ids("Lists/dev_lists_example_org") == [m2]
    year = str(datetime.now(UTC).year)
    assert maildir.ids(f"Invoices/{year}/______etc") == [m3]


def test_first_run_records_a_baseline_and_later_runs_see_only_new_mail(
    maildir, write_config, run_cli
):
    old = maildir.add(from_="a@x.example", subject="old")
    config = write_config("- {name: all, then: [{move: Done}]}\n")
    first = run(run_cli, config)
    assert first.returncode == 0
    assert "first run, 1 messages already there recorded as seen" in first.stdout
    assert maildir.ids() == [old]
    new = maildir.add(from_="b@x.example", subject="new")
    second = run(run_cli, config)
    assert second.returncode == 0
    assert maildir.ids("Done") == [new]
    assert maildir.ids() == [old]
    third = run(run_cli, config)
    assert "0 new messages, 0 actions done" in third.stdout


def test_existing_process_acts_on_mail_already_there(maildir, write_config, run_cli):
    old = maildir.add(from_="a@x.example", subject="old")
    config = write_config("- {name: all, then: [{move: Done}]}\n", "existing: process\n")
    assert run(run_cli, config).returncode == 0
    assert maildir.ids("Done") == [old]


def test_second_run_does_nothing_to_handled_mail(maildir, write_config, run_cli):
    m = maildir.add(from_="a@x.example", subject="s")
    config = write_config("- {name: copy, then: [{copy: Copies}, {flag: flagged}]}\n")
    assert run(run_cli, config, "--all").returncode == 0
    again = run(run_cli, config)
    assert "0 new messages, 0 actions done" in again.stdout
    assert maildir.ids("Copies") == [m]


def test_dry_run_prints_the_plan_and_changes_nothing(maildir, write_config, run_cli, env):
    maildir.add(from_="a@client.example", subject="order")
    maildir.add(from_="b@x.example", subject="hello", flags="S")
    config = write_config(
        """
        - {name: clients, when: {from: "*@client.example"}, then: [{move: Clients}]}
        - {name: unread, then: [mark_unread]}
        """
    )
    before = sorted(str(p) for p in maildir.root.rglob("*"))
    dry = run(run_cli, config, "--all", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "local/INBOX: move -> Clients  by 'clients'  <a@client.example> 'order'" in dry.stdout
    assert "local/INBOX: mark_unread -seen  by 'unread'  <b@x.example> 'hello'" in dry.stdout
    assert "2 actions planned" in dry.stdout
    assert sorted(str(p) for p in maildir.root.rglob("*")) == before
    assert not Path(env["XDG_STATE_HOME"]).exists()
    real = run(run_cli, config, "--all")
    planned = [line.split("  by ")[0] for line in dry.stdout.splitlines() if "  by " in line]
    done = [line.split("  by ")[0] for line in real.stdout.splitlines() if "  by " in line]
    assert planned == done


def test_dry_run_of_a_first_run_says_it_would_only_record_a_baseline(
    maildir, write_config, run_cli
):
    maildir.add(from_="a@x.example", subject="old")
    config = write_config("- {name: all, then: [{move: Done}]}\n")
    dry = run(run_cli, config, "--dry-run")
    assert "first run, 1 messages already there recorded as seen" in dry.stdout
    assert "0 actions planned" in dry.stdout


def test_run_action_gets_message_and_argv_without_a_shell(maildir, write_config, run_cli, tmp_path):
    out = tmp_path / "out.json"
    m = maildir.add(from_="Alice <alice@example.org>", subject="hi; rm -rf / $(reboot)")
    # braces are template syntax: {{ and }} stand for literal ones
    script = (
        "import json, os, sys; json.dump({{'argv': sys.argv[1:], 'stdin': sys.stdin.read(),"
        " 'env': sorted(os.environ)}}, open(sys.argv[1], 'w'))"
    )
    config = write_config(
        f"""
        - name: hook
          then:
            - {{move: Handled}}
            - run: [{sys.executable}, -c, "{script}", "{out}", "{{from.address}}", "{{subject}}"]
        """
    )
    result = run_cli("run", "--once", "--all", "-c", str(config), extra_env={"SECRET_TOKEN": "x"})
    assert result.returncode == 0, result.stderr
    seen = json.loads(out.read_text())
    assert seen["argv"][1:] == ["alice@example.org", "hi; rm -rf / $(reboot)"]
    assert m in seen["stdin"]
    assert "SECRET_TOKEN" not in seen["env"]
    assert "MAILRULES_RULE" in seen["env"]
    assert maildir.ids("Handled") == [m]


def test_failing_run_action_is_reported_and_retried(maildir, write_config, run_cli):
    maildir.add(from_="a@x.example", subject="s")
    config = write_config(f"- {{name: hook, then: [{{run: [{sys.executable}, -c, 'exit(3)']}}]}}\n")
    first = run(run_cli, config, "--all")
    assert first.returncode == 1
    assert "exited 3" in first.stdout
    assert "1 failed" in first.stdout
    second = run(run_cli, config)
    assert second.returncode == 1  # not marked seen: tried again
    assert "1 new message" in second.stdout


def test_deliver_action_writes_into_another_maildir(maildir, write_config, run_cli, tmp_path):
    m = maildir.add(from_="a@x.example", subject="keep a copy")
    other = tmp_path / "Backup"
    config = write_config(
        f"- {{name: backup, then: [{{deliver: {{path: '{other}', folder: Old}}}}]}}\n"
    )
    assert run(run_cli, config, "--all").returncode == 0
    assert MaildirTree(other).ids("Old") == [m]
    assert maildir.ids() == [m]


def test_state_command_shows_the_audit_log(maildir, write_config, run_cli):
    maildir.add(from_="a@client.example", subject="order 1")
    config = write_config("- {name: clients, then: [{move: Clients}]}\n")
    run(run_cli, config, "--all")
    shown = run_cli("state")
    assert shown.returncode == 0
    assert "local/INBOX 'clients': move -> Clients ok  <a@client.example> 'order 1'" in (
        shown.stdout
    )


def test_state_dir_follows_systemd_state_directory(maildir, write_config, run_cli, tmp_path):
    maildir.add(from_="a@x.example", subject="s")
    config = write_config("- {name: rule1, then: [{flag: flagged}]}\n")
    state = tmp_path / "svc-state"
    run_cli("run", "--once", "-c", str(config), extra_env={"STATE_DIRECTORY": str(state)})
    assert (state / "state.sqlite3").exists()


def test_folders_command_lists_decoded_names(maildir, write_config, run_cli):
    maildir.add(from_="a@x.example", subject="s")
    config = write_config("- {name: rule1, then: [{move: Entwürfe/Alt}]}\n")
    run(run_cli, config, "--all")
    assert (maildir.root / ".Entw&APw-rfe.Alt").is_dir()  # modified UTF-7, as Dovecot stores it
    listed = run_cli("folders", "-c", str(config), "local")
    assert listed.stdout.split() == ["INBOX", "Entwürfe/Alt"]


def test_dry_run_without_once_explains_itself(run_cli, write_config):
    config = write_config("- {name: rule1, then: [stop]}\n")
    result = run_cli("run", "--dry-run", "-c", str(config))
    assert result.returncode == 2
    assert "--dry-run and --all go with --once" in result.stderr


def test_missing_maildir_fails_the_account_with_exit_3(run_cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"accounts:\n  gone:\n    maildir: {tmp_path / 'nope'}\nrules: []\n")
    result = run_cli("run", "--once", "-c", str(config))
    assert result.returncode == 3
    assert "no Maildir at" in result.stderr + result.stdout


def test_fs_layout_folders(tmp_path, run_cli):
    root = tmp_path / "Mail"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "new" / "1.x").write_bytes(b"From: a@x.example\nSubject: s\nMessage-ID: <fs@t>\n\nhi\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"accounts:\n  local:\n    maildir: {root}\n    layout: fs\n"
        "rules:\n  - {name: rule1, then: [{move: Work/2026.Q1}]}\n"
    )
    assert run_cli("run", "--once", "--all", "-c", str(config)).returncode == 0
    assert len(os.listdir(root / "Work" / "2026.Q1" / "new")) == 1

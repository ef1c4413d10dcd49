"""`mailrules deliver`: the MDA. stdin -> rules -> a Maildir folder; exit 75 on any failure."""

from __future__ import annotations

import sys

MESSAGE = (
    b"From: Alice <alice@example.org>\nTo: sam@example.net\nSubject: Re: lunch\n"
    b"Message-ID: <lunch@example.org>\nIn-Reply-To: <l0@example.net>\n\nYes!\n"
)


def delivered(maildir, folder: str = "INBOX") -> list[tuple[str, bytes]]:
    return [(p.parent.name + "/" + p.name, p.read_bytes()) for p in maildir.files(folder)]


def test_no_matching_rule_delivers_to_inbox_new(maildir, write_config, run_cli):
    config = write_config("- {name: other, when: {from: bob@x.example}, then: [{move: Bob}]}\n")
    result = run_cli("deliver", "-c", str(config), input=MESSAGE)
    assert result.returncode == 0, result.stderr
    ((name, data),) = delivered(maildir)
    assert name.startswith("new/") and data == MESSAGE
    assert list((maildir.root / "tmp").iterdir()) == []


def test_rule_chooses_the_folder_and_flags(maildir, write_config, run_cli):
    config = write_config(
        """
        - {name: alice, when: {from: alice@example.org}, then: [{flag: flagged}, {copy: All}]}
        - {name: replies, when: {header: In-Reply-To, exists: true}, then: [{move: Replies}]}
        """
    )
    result = run_cli("deliver", "-c", str(config), input=MESSAGE)
    assert result.returncode == 0, result.stderr
    assert delivered(maildir) == []
    ((name, data),) = delivered(maildir, "Replies")
    assert name.startswith("cur/") and name.endswith(":2,F") and data == MESSAGE
    assert [d for _, d in delivered(maildir, "All")] == [MESSAGE]


def test_delete_goes_to_trash_or_nowhere(maildir, write_config, run_cli):
    config = write_config("- {name: spam, then: [delete]}\n")
    assert run_cli("deliver", "-c", str(config), input=MESSAGE).returncode == 0
    assert [d for _, d in delivered(maildir, "Trash")] == [MESSAGE]
    gone = write_config("- {name: spam, then: [{delete: {expunge: true}}]}\n", name="g.yaml")
    assert run_cli("deliver", "-c", str(gone), input=MESSAGE).returncode == 0
    assert len(delivered(maildir, "Trash")) == 1 and delivered(maildir) == []


def test_bad_config_exits_tempfail_and_writes_nothing(maildir, tmp_path, run_cli):
    config = tmp_path / "bad.yaml"
    config.write_text(f"accounts:\n  l:\n    maildir: {maildir.root}\nrules:\n  - {{name: x}}\n")
    result = run_cli("deliver", "-c", str(config), input=MESSAGE)
    assert result.returncode == 75
    assert "missing required key 'then'" in result.stderr
    assert delivered(maildir) == []


def test_unwritable_destination_exits_tempfail(maildir, write_config, run_cli):
    (maildir.root / ".Blocked").write_text("a file where the folder should be")
    config = write_config("- {name: x, then: [{move: Blocked}]}\n")
    result = run_cli("deliver", "-c", str(config), input=MESSAGE)
    assert result.returncode == 75
    assert "Blocked" in result.stderr
    assert delivered(maildir) == []


def test_rule_error_exits_tempfail(maildir, write_config, run_cli):
    config = write_config(
        f"- {{name: slow, when: {{command: {{argv: [{sys.executable}, -c, "
        f"'import time; time.sleep(5)'], timeout: 1s}}}}, then: [{{move: X}}]}}\n"
    )
    result = run_cli("deliver", "-c", str(config), input=MESSAGE)
    assert result.returncode == 75
    assert "did not finish within 1s" in result.stderr
    assert delivered(maildir) == [] and not maildir.folder_path("X").exists()


def test_delivered_mail_is_not_processed_again_by_run(maildir, write_config, run_cli):
    config = write_config("- {name: copyall, then: [{copy: Copies}]}\n", "existing: process\n")
    run_cli("run", "--once", "-c", str(config))  # baseline of the (empty) folders
    assert run_cli("deliver", "-c", str(config), input=MESSAGE).returncode == 0
    assert len(delivered(maildir, "Copies")) == 1
    again = run_cli("run", "--once", "-c", str(config))
    assert "0 new messages" in again.stdout
    assert len(delivered(maildir, "Copies")) == 1


def test_message_without_final_newline_and_crlf_is_stored_byte_exact(
    maildir, write_config, run_cli
):
    config = write_config("- {name: none, when: {from: nobody@x}, then: [stop]}\n")
    raw = MESSAGE.replace(b"\n", b"\r\n").rstrip(b"\r\n")
    assert run_cli("deliver", "-c", str(config), input=raw).returncode == 0
    assert [d for _, d in delivered(maildir)] == [raw]

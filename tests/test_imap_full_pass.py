"""Full passes (--all) on servers that lack something: UIDPLUS, or a message they cannot send."""

from __future__ import annotations

import pytest

from tests.test_imap import config, ids, message
from tests.test_imap_search import fault_tunnel

pytestmark = pytest.mark.timeout(120)

ALICE = "- {name: alice, when: {from: '*alice*'}, then: [{move: Alice}]}\n"


@pytest.mark.parametrize("server_search", ["true", "false"])
def test_without_uidplus_a_second_full_pass_moves_nothing_again(
    dovecot_preauth_factory, tmp_path, run_cli, server_search
):
    box = dovecot_preauth_factory(capability="IMAP4rev1 LITERAL+")  # Mailutils: no MOVE, UIDPLUS
    box.append("INBOX", message("a1", "alice@x.example", "one"))
    box.append("INBOX", message("a2", "alice@x.example", "two"))
    other = box.append("INBOX", message("a3", "alice@x.example", "deleted elsewhere"))
    box.append("INBOX", message("b1", "bob@x.example", "stays"))
    box.mark_deleted("INBOX", other)  # by another client, waiting for its expunge
    imap = "{tunnel: [" + ", ".join(box.argv) + f"], server_search: {server_search}}}"
    cfg = config(tmp_path, imap, rules=ALICE)

    first = run_cli("run", "--once", "--all", "-c", str(cfg))
    second = run_cli("run", "--once", "--all", "-c", str(cfg))

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert ids(box, "Alice") == ["<a1@t>", "<a2@t>"]  # once each, and not the one deleted
    assert "0 actions done" in second.stdout, second.stdout
    inbox = {m.message_id: m.flags for m in box.messages("INBOX")}
    assert all("\\Deleted" in inbox[m] for m in ("<a1@t>", "<a2@t>", "<a3@t>"))
    assert "\\Deleted" not in inbox["<b1@t>"]


def raw_message(mid: str, sender: str, subject: bytes) -> bytes:
    return (
        f"From: {sender}\r\nTo: me@example.net\r\nMessage-ID: <{mid}@t>\r\n".encode()
        + b"Subject: " + subject + b"\r\n\r\nhi\r\n"
    )  # fmt: skip


def test_a_message_whose_headers_the_server_cannot_send_is_read_whole(
    dovecot_preauth, tmp_path, run_cli
):
    box = dovecot_preauth
    for n in range(6):
        box.append("INBOX", message(f"a{n}", "alice@x.example", f"hello {n}"))
    box.append("INBOX", raw_message("bad", "alice@x.example", "Grüße von Jörg".encode()))
    for n in range(6, 9):
        box.append("INBOX", message(f"a{n}", "alice@x.example", f"hello {n}"))
    tunnel = fault_tunnel(box, tmp_path / "sent.log", "--drop-header-of", "Jörg")
    cfg = config(tmp_path, tunnel, rules=ALICE)

    result = run_cli("run", "--once", "--all", "-c", str(cfg))

    assert result.returncode == 0, result.stderr
    assert len(ids(box, "Alice")) == 10 and "<bad@t>" in ids(box, "Alice")
    assert "UID 7: reading its header fields failed" in result.stderr
    assert "read it whole" in result.stderr


@pytest.mark.slow  # six runs
def test_a_message_the_server_cannot_send_at_all_is_skipped_and_retried_a_few_times(
    dovecot_preauth, tmp_path, run_cli
):
    box = dovecot_preauth
    box.append("INBOX", message("old", "bob@x.example", "before"))
    tunnel = fault_tunnel(box, tmp_path / "sent.log", "--drop-fetch-of", "Poison")
    cfg = config(tmp_path, tunnel, rules=ALICE)
    assert run_cli("run", "--once", "-c", str(cfg)).returncode == 0  # the baseline
    box.append("INBOX", message("a1", "alice@x.example", "one"))
    box.append("INBOX", message("bad", "alice@x.example", "Poison"))
    box.append("INBOX", message("a2", "alice@x.example", "two"))

    runs = [run_cli("run", "--once", "-c", str(cfg)) for _ in range(4)]
    box.append("INBOX", message("a3", "alice@x.example", "three"))
    later = run_cli("run", "--once", "-c", str(cfg))

    assert ids(box, "Alice") == ["<a1@t>", "<a2@t>", "<a3@t>"]  # the rest went on at once
    for run in runs[:3]:
        assert run.returncode == 1, run.stderr
        assert "UID 3 skipped: the server cannot send it" in run.stderr
        assert "Traceback" not in run.stderr
    assert "could not be read in 3 runs; left alone" in runs[2].stderr
    assert "UID 3" not in runs[3].stderr and runs[3].returncode == 0, runs[3].stderr
    assert later.returncode == 0 and "1 new message, 1 action done, 0 failed" in later.stdout
    assert "<bad@t>" in ids(box, "INBOX")


def test_a_second_full_pass_copies_nothing_again(dovecot_preauth, tmp_path, run_cli):
    """A copy on IMAP is a new message: `--all` run again must not add another one each time
    (the audit log knows the copy was made), and a dry run must not plan it either."""
    box = dovecot_preauth
    box.append("INBOX", message("c1", "carol@x.example", "invoice 1"))
    box.append("INBOX", message("c2", "carol@x.example", "invoice 2"))
    rules = (
        "- {name: invoices, when: {subject: invoice}, then: [{copy: Invoices}, {flag: flagged}]}\n"
    )
    cfg = config(tmp_path, "{tunnel: [" + ", ".join(box.argv) + "]}", rules=rules)

    runs = [run_cli("run", "--once", "--all", "-c", str(cfg)) for _ in range(3)]
    plan = run_cli("run", "--once", "--all", "--dry-run", "-c", str(cfg))

    for result in runs:
        assert result.returncode == 0, result.stderr
    assert ids(box, "Invoices") == ["<c1@t>", "<c2@t>"]  # once each, after three passes
    assert "copy" not in plan.stdout, plan.stdout
    assert "flag +flagged" in plan.stdout  # the rest of the rule is still applied
    assert all("\\Flagged" in m.flags for m in box.messages("INBOX"))

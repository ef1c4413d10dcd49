"""Full passes (--all) on servers that lack something: UIDPLUS, or a message they cannot send."""

from __future__ import annotations

import pytest

from tests.test_imap import config, ids, message

pytestmark = pytest.mark.timeout(120)

ALICE = "- {name: alice, when: {from: '*alice*'}, then: [{move: Alice}]}\n"


@pytest.mark.parametrize("server_search", ["true", "false"])
def test_without_uidplus_a_second_full_pass_moves_nothing_again(
    dovecot_preauth_factory, tmp_path, run_cli, server_search
):
    box = dovecot_preauth_factory(capability="IMAP4rev1 LITERAL+")  # as Mailutils: no MOVE, UIDPLUS
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

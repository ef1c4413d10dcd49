"""IMAP folder names as the server needs them: namespaces, separators, special-use folders."""

from __future__ import annotations

import pytest

from tests.test_imap import config, ids, message
from tests.test_imap_search import fault_tunnel

pytestmark = pytest.mark.timeout(120)

BIN_IS_TRASH = (
    "inbox = yes\nseparator = /\nmailbox Bin {\n  special_use = \\Trash\n  auto = create\n}"
)


def test_special_use_attributes_in_lower_case_are_understood(
    dovecot_preauth_factory, tmp_path, run_cli
):
    box = dovecot_preauth_factory(namespace=BIN_IS_TRASH)
    box.append("INBOX", message("j1", "x@junk.example", "junk mail"))
    tunnel = fault_tunnel(box, tmp_path / "sent.log", "--lowercase-attributes")
    cfg = config(tmp_path, tunnel, rules="- {name: junk, when: {subject: junk}, then: [delete]}\n")

    listed = run_cli("folders", "work", "-c", str(cfg))
    result = run_cli("run", "--once", "--all", "-c", str(cfg))

    assert listed.returncode == 0, listed.stderr
    assert "Bin  \\Trash" in listed.stdout.splitlines()  # Cyrus sends \trash
    assert result.returncode == 0, result.stderr
    assert ids(box, "Bin") == ["<j1@t>"]
    assert "Trash" not in box.folders()


COURIER_NAMESPACE = "inbox = yes\nprefix = INBOX.\nseparator = ."
NAMESPACE_RULES = """
- {name: alice, when: {from: '*alice*'}, then: [{move: Moved}]}
- {name: junk, when: {subject: junk}, then: [delete]}
- {name: lists, when: {subject: news}, then: [{move: Lists/dev}]}
- {name: qualified, when: {subject: qualified}, then: [{copy: INBOX/Moved}]}
"""


def test_unqualified_folders_go_under_the_personal_namespace(
    dovecot_preauth_factory, tmp_path, run_cli
):
    box = dovecot_preauth_factory(namespace=COURIER_NAMESPACE)  # as Courier: INBOX. and "."
    box.append("INBOX", message("a1", "alice@x.example", "hello"))
    box.append("INBOX", message("j1", "x@junk.example", "junk mail"))
    box.append("INBOX", message("l1", "l@lists.example", "news"))
    box.append("INBOX", message("q1", "q@x.example", "qualified"))
    cfg = config(tmp_path, tunnel_of(box), rules=NAMESPACE_RULES)

    result = run_cli("run", "--once", "--all", "-c", str(cfg))
    again = run_cli("run", "--once", "-c", str(cfg))

    assert result.returncode == 0, result.stderr
    assert "4 new messages, 4 actions done, 0 failed" in result.stdout
    assert ids(box, "INBOX.Moved") == ["<a1@t>", "<q1@t>"]
    assert ids(box, "INBOX.Trash") == ["<j1@t>"]
    assert ids(box, "INBOX.Lists.dev") == ["<l1@t>"]
    assert ids(box, "INBOX") == ["<q1@t>"]
    assert again.returncode == 0, again.stderr
    assert "0 failed" in again.stdout
    listed = run_cli("folders", "work", "-c", str(cfg))
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == ["INBOX", "Lists", "Lists/dev", "Moved", "Trash"]


def test_a_folder_name_holding_the_servers_separator_is_an_error_naming_both(
    dovecot_preauth_factory, tmp_path, run_cli
):
    box = dovecot_preauth_factory(namespace=COURIER_NAMESPACE)
    box.append("INBOX", message("r1", "r@x.example", "release"))
    rules = "- {name: rel, when: {subject: release}, then: [{move: Release v1.2}]}\n"
    cfg = config(tmp_path, tunnel_of(box), rules=rules)

    result = run_cli("run", "--once", "--all", "-c", str(cfg))

    assert result.returncode == 1, result.stderr + result.stdout
    assert "folder 'Release v1.2' cannot be used on this server: it contains '.'" in (
        result.stderr + result.stdout
    )
    assert ids(box, "INBOX") == ["<r1@t>"]  # left where it was, not in Release v1 / 2
    assert box.folders() == ["INBOX"]


def tunnel_of(box) -> str:
    return "{tunnel: [" + ", ".join(box.argv) + "]}"

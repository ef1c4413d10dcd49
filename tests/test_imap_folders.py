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

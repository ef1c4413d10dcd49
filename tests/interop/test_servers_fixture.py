"""The server fixtures themselves: each server starts seeded and a reset undoes a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers.common import seed_id

pytestmark = pytest.mark.interop

ALL = sorted(seed_id(n) for n in range(1, 21))


def test_imap_inbox_is_the_seed_and_unseen(imap_server):
    stored = imap_server.stored("INBOX")
    assert sorted(m.message_id for m in stored) == ALL
    assert all("\\Seen" not in m.flags for m in stored)


def test_a_reset_undoes_what_a_test_did(imap_server):
    with imap_server.imap() as client:
        client.create(f'"{imap_server.folder("Scratch")}"')
        client.select("INBOX")
        client.store("1", "+FLAGS", "(\\Seen)")
    imap_server.reset()
    assert not imap_server.has_folder("Scratch")
    stored = imap_server.stored("INBOX")
    assert sorted(m.message_id for m in stored) == ALL
    assert all("\\Seen" not in m.flags for m in stored)


def test_pop3_maildrop_is_the_seed(pop3_server):
    assert pop3_server.pop3_count() == 20


README = Path(__file__).resolve().parents[2] / "README.md"
README_NAMES = {
    "dovecot": "Dovecot",
    "cyrus": "Cyrus IMAP",
    "courier": "Courier-IMAP",
    "mailutils": "GNU Mailutils",
    "twisted": "Twisted (twisted.mail)",
    "pymap": "pymap",
}
COLUMNS = ("MOVE", "UIDPLUS", "NAMESPACE", "UTF8=ACCEPT", "LITERAL+", "IDLE")


def readme_row(name: str) -> dict[str, str]:
    lines = README.read_text().split("## Servers\n", 1)[1].splitlines()
    header = next(line for line in lines if line.startswith("| server |"))
    keys = [cell.strip() for cell in header.strip("|").split("|")]
    for line in lines:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == README_NAMES[name]:
            return dict(zip(keys, cells, strict=True))
    raise AssertionError(f"no row for {README_NAMES[name]} in the README's Servers table")


def test_the_readme_matrix_is_what_the_server_advertises(imap_server):
    row = readme_row(imap_server.name)
    assert imap_server.version.endswith(" " + row["version"])
    with imap_server.imap() as client:
        _status, data = client.capability()  # after login: what mailrules sees
    advertised = set(data[0].decode().upper().split())
    claimed = {column for column in COLUMNS if row[column] == "yes"}
    assert claimed == advertised & set(COLUMNS)
    starttls_port = imap_server.imap_starttls_port
    assert (row["STARTTLS"] == "yes") == (starttls_port is not None)

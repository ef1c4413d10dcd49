"""The server fixtures themselves: each server starts seeded and a reset undoes a test."""

from __future__ import annotations

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

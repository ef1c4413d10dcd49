"""The same IMAP behaviour, through the CLI, on every real server of tests/servers.

Each test runs ``mailrules run --once`` with a config as a new user writes it from the
README, through a proxy that records what mailrules sent; the end state is then read on
the server by another client (imaplib, EXAMINE and BODY.PEEK only).
"""

from __future__ import annotations

import pytest

from tests.interop.imap_support import (
    ALICE,
    ATTACHMENT,
    CREME,
    ISSUE_RULES,
    OTHERS,
    append,
    assert_no_plain_expunge,
    assert_nothing_seen,
    assert_search_literals_exact,
    flagged,
    ids,
    message,
    output,
    snapshot,
    write_config,
)
from tests.servers.common import list_folders

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

MOVE_ALICE = """\
- name: alice
  when: {from: "*alice*"}
  then: [{move: Alice}]
"""


def run(run_cli, config, *args: str):
    return run_cli("run", "--once", "-c", str(config), *args)


def test_move(imap_server, recording_proxy, run_cli, tmp_path):
    proxy = recording_proxy(imap_server.imap_port)
    config = write_config(tmp_path, imap_server, MOVE_ALICE, port=proxy.port)
    result = run(run_cli, config, "--all")
    assert result.returncode == 0, output(result)
    assert imap_server.ids("Alice") == ids(ALICE)
    assert imap_server.ids("INBOX") == ids(OTHERS)
    assert_no_plain_expunge(proxy)
    assert_nothing_seen(imap_server)


def test_copy(imap_server, recording_proxy, run_cli, tmp_path):
    rules = '- {name: copies, when: {from: "*alice*"}, then: [{copy: Copies}]}\n'
    proxy = recording_proxy(imap_server.imap_port)
    result = run(run_cli, write_config(tmp_path, imap_server, rules, port=proxy.port), "--all")
    assert result.returncode == 0, output(result)
    assert imap_server.ids("Copies") == ids(ALICE)
    assert imap_server.ids("INBOX", deleted=True) == ids(list(range(1, 21)))
    assert_no_plain_expunge(proxy)
    assert_nothing_seen(imap_server)


def test_flag(imap_server, recording_proxy, run_cli, tmp_path):
    rules = "- {name: attachments, when: {subject: Attachment}, then: [{flag: flagged}]}\n"
    proxy = recording_proxy(imap_server.imap_port)
    result = run(run_cli, write_config(tmp_path, imap_server, rules, port=proxy.port), "--all")
    assert result.returncode == 0, output(result)
    assert flagged(imap_server) == ids(ATTACHMENT)
    assert imap_server.ids("INBOX") == ids(list(range(1, 21)))
    assert_nothing_seen(imap_server)


def test_delete_goes_to_the_servers_trash(imap_server, recording_proxy, run_cli, tmp_path):
    rules = "- {name: attachments, when: {subject: Attachment}, then: [delete]}\n"
    trash_before = imap_server.has_folder("Trash")
    proxy = recording_proxy(imap_server.imap_port)
    result = run(run_cli, write_config(tmp_path, imap_server, rules, port=proxy.port), "--all")
    assert result.returncode == 0, output(result)
    assert imap_server.ids("Trash") == ids(ATTACHMENT)
    assert imap_server.ids("INBOX") == ids([n for n in range(1, 21) if n not in ATTACHMENT])
    if trash_before:  # the server's own Trash was used, not a second one beside it
        assert sum(name.upper().endswith("TRASH") for name in imap_server.folders()) == 1
    assert_no_plain_expunge(proxy)
    assert_nothing_seen(imap_server)


def test_nested_and_non_ascii_rules(imap_server, recording_proxy, run_cli, tmp_path):
    """The issue's config: the narrowing SEARCH is an OR of three criteria, one not ASCII."""
    proxy = recording_proxy(imap_server.imap_port)
    result = run(
        run_cli, write_config(tmp_path, imap_server, ISSUE_RULES, port=proxy.port), "--all"
    )
    assert result.returncode == 0, output(result)
    assert imap_server.ids("Alice") == ids(ALICE)
    assert imap_server.ids("INBOX") == ids(OTHERS)
    assert flagged(imap_server) == ids(ATTACHMENT + CREME)
    assert_search_literals_exact(proxy, {"crème".encode()})
    assert not [a for a in proxy.refused() if b"SEARCH" in a.upper()], proxy.refused()
    assert_no_plain_expunge(proxy)
    assert_nothing_seen(imap_server)


@pytest.mark.slow  # two runs of the CLI
def test_full_pass_then_a_poll(imap_server, recording_proxy, run_cli, tmp_path):
    proxy = recording_proxy(imap_server.imap_port)
    config = write_config(tmp_path, imap_server, ISSUE_RULES, port=proxy.port)
    first = run(run_cli, config, "--all")
    assert first.returncode == 0, output(first)
    append(imap_server, message(1, "Alice <alice@example.org>", "Lunch?"))
    append(imap_server, message(2, "Bob <bob@example.net>", "Crème caramel"))
    append(imap_server, message(3, "Bob <bob@example.net>", "Nothing to do"))
    poll = run(run_cli, config)
    assert poll.returncode == 0, output(poll)
    assert "3 new messages" in poll.stdout, output(poll)
    assert imap_server.ids("Alice") == sorted([*ids(ALICE), "<new-1@interop.test>"])
    assert flagged(imap_server) == sorted([*ids(ATTACHMENT + CREME), "<new-2@interop.test>"])
    assert imap_server.ids("INBOX") == sorted(
        [*ids(OTHERS), "<new-2@interop.test>", "<new-3@interop.test>"]
    )
    assert_no_plain_expunge(proxy)
    assert_nothing_seen(imap_server)


def test_dry_run_changes_nothing(imap_server, recording_proxy, run_cli, tmp_path):
    before = snapshot(imap_server)
    proxy = recording_proxy(imap_server.imap_port)
    config = write_config(tmp_path, imap_server, ISSUE_RULES, port=proxy.port)
    result = run(run_cli, config, "--all", "--dry-run")
    assert result.returncode == 0, output(result)
    assert "Alice" in result.stdout, output(result)  # the plan is printed
    assert snapshot(imap_server) == before
    changing = {"APPEND", "CREATE", "STORE", "COPY", "MOVE", "EXPUNGE", "DELETE", "RENAME"}
    sent = {c.removeprefix("UID ") for c in proxy.commands()}
    assert not sent & changing, proxy.command_lines()


@pytest.mark.slow  # two runs of the CLI
def test_a_second_full_pass_changes_nothing(imap_server, recording_proxy, run_cli, tmp_path):
    proxy = recording_proxy(imap_server.imap_port)
    config = write_config(tmp_path, imap_server, ISSUE_RULES, port=proxy.port)
    first = run(run_cli, config, "--all")
    assert first.returncode == 0, output(first)
    after_first = snapshot(imap_server)
    second_proxy = recording_proxy(imap_server.imap_port)
    config = write_config(tmp_path, imap_server, ISSUE_RULES, port=second_proxy.port)
    second = run(run_cli, config, "--all")
    assert second.returncode == 0, output(second)
    assert snapshot(imap_server) == after_first
    # Flags already set may be set again (no change); nothing is copied, moved or created.
    acting = {"APPEND", "CREATE", "COPY", "MOVE", "EXPUNGE"}
    sent = {c.removeprefix("UID ") for c in second_proxy.commands()}
    assert not sent & acting, second_proxy.command_lines()


@pytest.mark.slow  # two runs of the CLI
def test_a_second_full_pass_moves_nothing_again(imap_server, recording_proxy, run_cli, tmp_path):
    """Moved originals that keep \\Deleted (no UIDPLUS) are not moved a second time."""
    first = run(run_cli, write_config(tmp_path, imap_server, MOVE_ALICE), "--all")
    assert first.returncode == 0, output(first)
    after_first = snapshot(imap_server)
    proxy = recording_proxy(imap_server.imap_port)
    second = run(run_cli, write_config(tmp_path, imap_server, MOVE_ALICE, port=proxy.port), "--all")
    assert second.returncode == 0, output(second)
    assert snapshot(imap_server) == after_first
    sent = {c.removeprefix("UID ") for c in proxy.commands()}
    assert not sent & {"COPY", "MOVE", "STORE", "EXPUNGE"}, proxy.command_lines()


def _moves(line: bytes) -> bool:
    words = line.upper().split()
    return len(words) > 2 and words[1] == b"UID" and words[2] in (b"MOVE", b"COPY")


@pytest.mark.slow  # two runs of the CLI
def test_a_connection_cut_mid_move_loses_nothing(imap_server, recording_proxy, run_cli, tmp_path):
    """The cut comes right after the server carried out the move, before mailrules heard."""
    cutting = recording_proxy(imap_server.imap_port, cut_when=_moves)
    config = write_config(tmp_path, imap_server, MOVE_ALICE, port=cutting.port)
    cut = run(run_cli, config, "--all")
    assert cutting.was_cut, output(cut)
    everywhere = {m.message_id for messages in snapshot(imap_server).values() for m in messages}
    assert everywhere >= set(ids(list(range(1, 21)))), "a message was lost by the cut"

    proxy = recording_proxy(imap_server.imap_port)
    config = write_config(tmp_path, imap_server, MOVE_ALICE, port=proxy.port)
    again = run(run_cli, config, "--all")
    assert again.returncode == 0, output(again)
    assert imap_server.ids("INBOX") == ids(OTHERS)
    assert set(imap_server.ids("Alice")) == set(ids(ALICE))
    assert_no_plain_expunge(cutting)
    assert_no_plain_expunge(proxy)
    assert_nothing_seen(imap_server)


def test_starttls_with_the_servers_ca(imap_server, run_cli, tmp_path):
    """The issue's config exactly: STARTTLS, ``ca_file``, ``password_file``, three rules."""
    if imap_server.imap_starttls_port is None:
        pytest.skip(f"{imap_server.name} offers no STARTTLS")
    config = write_config(
        tmp_path,
        imap_server,
        ISSUE_RULES,
        port=imap_server.imap_starttls_port,
        security="starttls",
    )
    result = run(run_cli, config, "--all")
    assert result.returncode == 0, output(result)
    assert imap_server.ids("Alice") == ids(ALICE)
    assert flagged(imap_server) == ids(ATTACHMENT + CREME)
    assert_nothing_seen(imap_server)


def test_a_search_twisted_refuses_is_decided_here(
    mail_server_named, recording_proxy, run_cli, tmp_path
):
    """Twisted answers BAD to SEARCH SUBJECT: mailrules says so in one line, naming the
    server's answer, decides every message itself, and the account does not fail."""
    server = mail_server_named("twisted")
    rules = "- {name: attachments, when: {subject: Attachment}, then: [{flag: flagged}]}\n"
    proxy = recording_proxy(server.imap_port)
    result = run(run_cli, write_config(tmp_path, server, rules, port=proxy.port), "--all")
    assert result.returncode == 0, output(result)
    warnings = [line for line in result.stderr.splitlines() if "refused" in line]
    assert len(warnings) == 1, output(result)
    assert "SEARCH failed: must be str, not bytes" in warnings[0], output(result)
    assert "Traceback" not in result.stderr
    assert flagged(server) == ids(ATTACHMENT)
    assert_no_plain_expunge(proxy)
    assert_nothing_seen(server)


SPECIAL_USE = {"\\all", "\\archive", "\\drafts", "\\flagged", "\\junk", "\\sent", "\\trash"}


def test_folders_are_shown_as_the_user_writes_them(imap_server, run_cli, tmp_path):
    """``mailrules folders``: names without the personal namespace's prefix, ``/`` between
    levels, and the server's special-use attributes (RFC 6154, any letter case)."""
    result = run_cli("folders", "mail", "-c", str(write_config(tmp_path, imap_server, "[]\n")))
    assert result.returncode == 0, output(result)
    shown = {line.split("  ")[0]: line.lower() for line in result.stdout.splitlines() if line}
    with imap_server.imap() as client:
        listed = list_folders(client)
    for attributes, name in listed:
        if "\\noselect" in attributes or "\\nonexistent" in attributes:
            continue
        written = name.removeprefix(imap_server.prefix).replace(imap_server.separator, "/")
        assert written in shown, f"{name!r} not shown as {written!r}:\n{result.stdout}"
        for special in attributes & SPECIAL_USE:
            assert special in shown[written], f"{special} missing:\n{result.stdout}"

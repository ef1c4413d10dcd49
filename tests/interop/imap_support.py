"""Configs as a new user writes them from the README, and what the IMAP tests assert.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import email.header
import textwrap
from pathlib import Path

from tests.servers.common import MailServer, Stored, examine, list_folders, seed_id
from tests.servers.proxy import RecordingProxy

ALICE = [1, 3, 6, 8, 11, 15, 18, 20]  # corpus messages from alice@example.org
ATTACHMENT = [4, 5]  # Subject contains "Attachment"
CREME = [7]  # Subject contains "crème"
OTHERS = [n for n in range(1, 21) if n not in ALICE]

# The issue's config: one move, two flags, one of them on non-ASCII text.
ISSUE_RULES = """\
- name: alice
  when: {from: "*alice*"}
  then: [{move: Alice}]
- name: attachments
  when: {subject: Attachment}
  then: [{flag: flagged}]
- name: crème
  when: {subject: crème}
  then: [{flag: flagged}]
"""


def ids(numbers: list[int]) -> list[str]:
    return sorted(seed_id(n) for n in numbers)


def write_config(
    tmp_path: Path,
    server: MailServer,
    rules: str,
    *,
    port: int | None = None,
    security: str = "plain",
    name: str = "rules.yaml",
) -> Path:
    """An IMAP account config: password in a file, ``ca_file`` for STARTTLS, INBOX watched.

    ``timeout: 5s`` rather than the default minute: a server that never answers a command
    (Twisted, to some SEARCHes) then costs the test ten seconds, not sixty.
    """
    password_file = tmp_path / "password"
    password_file.write_text(server.password + "\n")
    password_file.chmod(0o600)
    tls = f"      ca_file: {server.ca_file}\n" if security != "plain" else ""
    text = (
        "accounts:\n"
        "  mail:\n"
        "    imap:\n"
        f"      host: {server.host}\n"
        f"      port: {port if port is not None else server.imap_port}\n"
        f"      security: {security}\n"
        f"      username: {server.username}\n"
        f"      password_file: {password_file}\n"
        f"{tls}"
        "      timeout: 5s\n"
        "    folders: [INBOX]\n"
        "rules:\n" + textwrap.indent(rules, "  ")
    )
    path = tmp_path / name
    path.write_text(text)
    return path


def snapshot(server: MailServer) -> dict[str, list[Stored]]:
    """Every folder's messages (Message-ID, flags): the server's whole state, as read."""
    with server.imap() as client:
        state = {}
        for attributes, name in sorted(list_folders(client), key=lambda f: f[1]):
            if "\\noselect" in attributes or "\\nonexistent" in attributes:
                continue
            state[name] = sorted(
                examine(client, name), key=lambda m: (m.message_id or "", sorted(m.flags))
            )
        return state


def assert_nothing_seen(server: MailServer) -> None:
    """No message anywhere got \\Seen: reading them (headers or bodies) must not set it."""
    seen = {
        folder: [m.message_id for m in messages if "\\Seen" in m.flags]
        for folder, messages in snapshot(server).items()
    }
    assert not any(seen.values()), f"\\Seen set by reading: {seen}"


def assert_no_plain_expunge(proxy: RecordingProxy) -> None:
    """Only UID EXPUNGE of exactly the moved UIDs: a plain EXPUNGE also removes what another
    client marked \\Deleted."""
    assert "EXPUNGE" not in proxy.commands(), proxy.command_lines()


def flagged(server: MailServer, folder: str = "INBOX") -> list[str]:
    return sorted(
        m.message_id or "?"
        for m in server.stored(folder)
        if "\\Flagged" in m.flags and "\\Deleted" not in m.flags
    )


def append(server: MailServer, raw: bytes, folder: str = "INBOX") -> None:
    """Deliver one more message, as the MTA would (flag list given: Twisted needs one)."""
    with server.imap() as client:
        status, data = client.append(folder, "()", None, raw)
        assert status == "OK", data


def message(number: int, sender: str, subject: str) -> bytes:
    """A new message as an MTA delivers it: non-ASCII header text RFC 2047-encoded."""
    encoded = email.header.Header(subject, "utf-8").encode() if not subject.isascii() else subject
    return (
        f"From: {sender}\r\nTo: testuser@lab.test\r\nSubject: {encoded}\r\n"
        f"Message-ID: <new-{number}@interop.test>\r\nDate: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nHello.\r\n"
    ).encode()


def output(result) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def assert_search_literals_exact(proxy: RecordingProxy, expected: set[bytes]) -> None:
    """Each literal in a SEARCH holds exactly one criterion's text, nothing of the syntax."""
    sent = proxy.literals(b"SEARCH")
    assert set(sent) <= expected, f"SEARCH literals {sent}; lines {proxy.command_lines()}"

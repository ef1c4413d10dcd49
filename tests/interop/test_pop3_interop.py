"""The same POP3 fetch and delete behaviour, through the CLI, on every real POP3 server.

The config is the README's POP3 account: STLS with the server's ``ca_file`` where the
server offers it (plain USER/PASS on loopback otherwise), ``password_file``, mail
delivered into a local Maildir, ``existing: process`` so the seeded maildrop is fetched.
The server is then read with poplib, the Maildir from disk.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests.interop.imap_support import ALICE, ids, output
from tests.servers.common import MailServer

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

ALL = list(range(1, 21))
_MESSAGE_ID = re.compile(rb"(?im)^message-id:\s*(<[^>\r\n]*>)")


def write_config(tmp_path: Path, server: MailServer, rules: str, extra: str = "") -> Path:
    password_file = tmp_path / "password"
    password_file.write_text(server.password + "\n")
    password_file.chmod(0o600)
    security = "starttls" if server.pop3_stls else "plain"
    tls = f"      ca_file: {server.ca_file}\n" if server.pop3_stls else ""
    text = (
        "accounts:\n"
        "  home:\n"
        "    pop3:\n"
        f"      host: {server.host}\n"
        f"      port: {server.pop3_port}\n"
        f"      security: {security}\n"
        f"      username: {server.username}\n"
        f"      password_file: {password_file}\n"
        f"{tls}"
        "      timeout: 5s\n"
        f"    deliver_to: {tmp_path / 'Mail'}\n"
        "    existing: process\n" + textwrap.indent(extra, "    ") + "rules:\n" + rules
    )
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def local_ids(root: Path, folder: str = "INBOX") -> list[str]:
    """Message-IDs of the messages in a local Maildir folder (Maildir++: ``.Trash``)."""
    directory = root if folder == "INBOX" else root / f".{folder}"
    out = []
    for sub in ("new", "cur"):
        for path in sorted((directory / sub).glob("*")) if (directory / sub).is_dir() else ():
            found = _MESSAGE_ID.search(path.read_bytes().split(b"\n\n", 1)[0])
            out.append(found.group(1).decode() if found else f"? {path.name}")
    return sorted(out)


def server_ids(server: MailServer) -> list[str]:
    """Message-IDs left on the server, read with RETR (TOP is wrong on some servers)."""
    with server.pop3() as client:
        count = client.stat()[0]
        out = []
        for number in range(1, count + 1):
            lines = client.retr(number)[1]
            head = b"\n".join(lines).split(b"\n\n", 1)[0].replace(b"\r", b"")
            found = _MESSAGE_ID.search(head)
            out.append(found.group(1).decode() if found else "?")
        return sorted(out)


def run(run_cli, config: Path):
    return run_cli("run", "--once", "-c", str(config))


@pytest.mark.slow  # two runs of the CLI
def test_fetch_everything_and_leave_it_on_the_server(pop3_server, run_cli, tmp_path):
    config = write_config(tmp_path, pop3_server, "  []\n")
    first = run(run_cli, config)
    assert first.returncode == 0, output(first)
    assert local_ids(tmp_path / "Mail") == ids(ALL)
    assert pop3_server.pop3_count() == 20  # by default mail stays on the server
    again = run(run_cli, config)
    assert again.returncode == 0, output(again)
    assert local_ids(tmp_path / "Mail") == ids(ALL), "a second run fetched mail again"


@pytest.mark.slow  # two runs of the CLI
def test_a_delete_rule_removes_from_the_server(pop3_server, run_cli, tmp_path):
    rules = textwrap.indent('- {name: alice, when: {from: "*alice*"}, then: [delete]}\n', "  ")
    config = write_config(tmp_path, pop3_server, rules)
    first = run(run_cli, config)
    assert first.returncode == 0, output(first)
    others = [n for n in ALL if n not in ALICE]
    assert local_ids(tmp_path / "Mail") == ids(others)
    assert local_ids(tmp_path / "Mail", "Trash") == ids(ALICE)  # the local copy is kept
    assert server_ids(pop3_server) == ids(others)
    again = run(run_cli, config)
    assert again.returncode == 0, output(again)
    assert local_ids(tmp_path / "Mail") == ids(others)
    assert local_ids(tmp_path / "Mail", "Trash") == ids(ALICE)


def test_delete_after_delivery_empties_the_maildrop(pop3_server, run_cli, tmp_path):
    config = write_config(tmp_path, pop3_server, "  []\n", extra="delete_after_delivery: true\n")
    first = run(run_cli, config)
    assert first.returncode == 0, output(first)
    assert local_ids(tmp_path / "Mail") == ids(ALL)
    assert pop3_server.pop3_count() == 0


# Cyrus stores raw 8-bit header bytes as "X"; tcllib pop3d re-encodes them (mojibake).
ALTERS_8BIT_HEADERS = {"cyrus", "tclpop3d"}


def test_raw_utf8_headers_arrive_as_stored(pop3_server, run_cli, tmp_path):
    """Corpus message 12 has raw UTF-8 in Subject and From; Courier sends it only after UTF8."""
    if pop3_server.name in ALTERS_8BIT_HEADERS:
        pytest.skip(f"{pop3_server.name} alters raw 8-bit headers itself")
    result = run(run_cli, write_config(tmp_path, pop3_server, "  []\n"))
    assert result.returncode == 0, output(result)
    files = [p for sub in ("new", "cur") for p in (tmp_path / "Mail" / sub).iterdir()]
    twelve = [p.read_bytes() for p in files if b"<lab-12@interop.lab.test>" in p.read_bytes()]
    assert len(twelve) == 1
    assert "Überraschung".encode() in twelve[0] and "Jürgen".encode() in twelve[0]

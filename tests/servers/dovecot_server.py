"""Dovecot 2.3 for the interop tier: the daemon of tests/dovecot.py, seeded with the corpus.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests import dovecot
from tests.servers.common import (
    MailServer,
    ServerError,
    ServerUnavailable,
    chown_tree,
    require_root,
    write_seed_maildir,
)


class _Cert:
    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key


def version() -> str:
    done = subprocess.run([str(dovecot.DOVECOT), "--version"], capture_output=True, text=True)
    return "Dovecot " + done.stdout.split()[0] if done.returncode == 0 else "Dovecot"


def start(base: Path, cert: Path, key: Path) -> tuple[MailServer, object]:
    missing = [
        p for p in (dovecot.DOVECOT, dovecot.IMAP_BINARY, dovecot.POP3_BINARY) if not p.exists()
    ]
    if missing:
        raise ServerUnavailable(f"{dovecot.INSTALL_HINT}; missing {missing[0]}")
    require_root("Dovecot")
    daemon = dovecot._Daemon(base, _Cert(cert, key), None, True)
    try:
        daemon.start()
    except dovecot.DovecotError as exc:
        daemon.close()
        raise ServerError(str(exc)) from None

    def reset() -> None:
        daemon.fresh_mailbox()
        write_seed_maildir(daemon.maildir)
        chown_tree(daemon.maildir)

    server = MailServer(
        name="dovecot",
        version=version(),
        username=dovecot.USERNAME,
        password=dovecot.PASSWORD,
        imap_port=daemon.imap_port,
        imap_starttls_port=daemon.imap_port,
        pop3_port=daemon.pop3_port,
        pop3_stls=True,
        ca_file=str(cert),
        reset_hook=reset,
    )
    return server, daemon

"""Twisted 26 (twisted.mail, PyPI, in install.sh's venv): IMAP4Server and POP3.

twisted_serve.py runs them: stock protocol code over an in-memory IMAP mailbox (Twisted
ships none) and Twisted's own MaildirMailbox for POP3, with two Python 3 fixes to the
latter. Twisted advertises LOGINDISABLED whenever it can STARTTLS, so one IMAP port has no
TLS (plain LOGIN) and another offers STARTTLS. IMAP is reset over IMAP, POP3 by swapping
its Maildir. Stock bugs kept: UID SEARCH FROM/HEADER answers BAD, FETCH of header fields
of a message with raw 8-bit headers drops the connection, names are upper-cased, POP3
DELE takes effect at once.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.servers.common import (
    CACHE,
    HERE,
    PASSWORD,
    USERNAME,
    Daemon,
    MailServer,
    ServerError,
    free_ports,
    imap_reset,
    list_folders,
    replace_tree,
    require_files,
    tail,
    wait_greeting,
    write_seed_maildir,
)

PYTHON = CACHE / "venv" / "bin" / "python"


def version() -> str:
    done = subprocess.run(
        [str(PYTHON), "-I", "-c", "import twisted; print(twisted.__version__)"],
        capture_output=True,
        text=True,
    )
    return f"Twisted {done.stdout.strip()}"


def start(base: Path, cert: Path, key: Path) -> tuple[MailServer, Daemon]:
    require_files("Twisted", PYTHON)
    template, maildir = base / "template", base / "mail" / "Maildir"
    write_seed_maildir(template)
    for sub in ("cur", "new", "tmp"):  # MaildirMailbox.deleteMessage moves files here
        (template / ".Trash" / sub).mkdir(parents=True)
    maildir.parent.mkdir()
    replace_tree(maildir, template, None)
    imap_port, tls_port, pop3_port = free_ports(3)
    log = base / "twisted.log"
    daemon = Daemon(
        [str(PYTHON), str(HERE / "twisted_serve.py"), str(maildir), USERNAME, PASSWORD,
         "--imap-port", str(imap_port), "--imap-tls-port", str(tls_port),
         "--pop3-port", str(pop3_port), "--cert", str(cert), "--key", str(key)],
        log,
    )  # fmt: skip
    try:
        wait_greeting(imap_port, b"* OK", daemon, "Twisted IMAP", timeout=60)
        wait_greeting(tls_port, b"* OK", daemon, "Twisted IMAP (STARTTLS)")
        wait_greeting(pop3_port, b"+OK", daemon, "Twisted POP3")
    except ServerError as exc:
        daemon.stop()
        raise ServerError(f"{exc}\n{tail(log)}") from None
    server = MailServer(
        name="twisted",
        version=version(),
        imap_port=imap_port,
        imap_starttls_port=tls_port,
        pop3_port=pop3_port,
        ca_file=str(cert),
        case_insensitive_names=True,
    )
    with server.imap() as client:
        baseline = {name for _flags, name in list_folders(client)}

    def reset() -> None:
        imap_reset(server, baseline)
        replace_tree(maildir, template, None)

    server.reset_hook = reset
    return server, daemon

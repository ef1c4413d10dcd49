"""pymap 0.36 (PyPI, in install.sh's venv), ``dict`` backend: in memory, IMAP only.

Started without demo data; Drafts, Sent, Trash, Junk and Archive are created after start
and the corpus appended over IMAP, and a reset works over IMAP too. UIDs start at 101.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.servers.common import (
    CACHE,
    PASSWORD,
    USERNAME,
    Daemon,
    MailServer,
    ServerError,
    free_ports,
    imap_reset,
    list_folders,
    quote,
    require_files,
    tail,
    wait_greeting,
)

VENV = CACHE / "venv"
FOLDERS = ("Drafts", "Sent", "Trash", "Junk", "Archive")


def version() -> str:
    done = subprocess.run(
        [str(VENV / "bin" / "python"), "-I", "-c",
         "import importlib.metadata as m; print(m.version('pymap'))"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    return f"pymap {done.stdout.strip()}"


def start(base: Path, cert: Path, key: Path) -> tuple[MailServer, Daemon]:
    require_files("pymap", VENV / "bin" / "pymap")
    (port,) = free_ports(1)
    log = base / "pymap.log"
    daemon = Daemon(
        [str(VENV / "bin" / "pymap"), "--host", "127.0.0.1", "--port", str(port),
         "--cert", str(cert), "--key", str(key),
         "dict", "--demo-user", USERNAME, "--demo-password", PASSWORD],
        log,
    )  # fmt: skip
    try:
        wait_greeting(port, b"* OK", daemon, "pymap", timeout=60)
    except ServerError as exc:
        daemon.stop()
        raise ServerError(f"{exc}\n{tail(log)}") from None
    server = MailServer(
        name="pymap",
        version=version(),
        imap_port=port,
        imap_starttls_port=port,
        ca_file=str(cert),
        keep_session=True,
    )
    with server.imap() as client:
        for folder in FOLDERS:
            client.create(quote(folder))
        baseline = {name for _flags, name in list_folders(client)}
    server.reset_hook = lambda: imap_reset(server, baseline)
    return server, daemon

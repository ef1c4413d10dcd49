"""tcllib 1.21 pop3d (Tcl 8.6, Debian's tcllib): POP3 only, no TLS, one session at a time.

tclpop3d.tcl serves a directory of message files (LF line ends: with CRLF files tcllib's
MIME parser appends "]" to header values). Stock tcllib bugs are kept: every line goes out
as CR CR LF, headers are rewritten, 8-bit text is double-encoded, no UIDL, TOP sends only
the headers, LIST gives the file size. A reset swaps in a fresh copy of the directory.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.servers.common import (
    HERE,
    PASSWORD,
    USERNAME,
    Daemon,
    MailServer,
    ServerError,
    free_ports,
    replace_tree,
    require_files,
    seed,
    tail,
    wait_greeting,
)


def version() -> str:
    done = subprocess.run(
        ["tclsh"], input="package require pop3d; puts [package present pop3d]\n",
        capture_output=True, text=True,
    )  # fmt: skip
    return f"tcllib pop3d {done.stdout.strip()}"


def start(base: Path, cert: Path, key: Path) -> tuple[MailServer, Daemon]:
    tclsh = shutil.which("tclsh")
    require_files("tcllib pop3d (Debian: tcl tcllib)", tclsh or "/usr/bin/tclsh",
                  "/usr/share/tcltk/tcllib1.21/pop3d")  # fmt: skip
    template, live = base / "template", base / "mail" / USERNAME
    template.mkdir()
    for number, raw in enumerate(seed(), 1):
        (template / f"{number:02d}.eml").write_bytes(raw.replace(b"\r\n", b"\n"))
    live.parent.mkdir()
    replace_tree(live, template, None)
    (port,) = free_ports(1)
    log = base / "tclpop3d.log"
    daemon = Daemon(
        [tclsh or "tclsh", str(HERE / "tclpop3d.tcl"), str(base / "mail"), str(port), USERNAME,
         PASSWORD],
        log,
    )  # fmt: skip
    try:
        wait_greeting(port, b"+OK", daemon, "tcllib pop3d")
    except ServerError as exc:
        daemon.stop()
        raise ServerError(f"{exc}\n{tail(log)}") from None
    return (
        MailServer(
            name="tclpop3d",
            version=version(),
            pop3_port=port,
            reset_hook=lambda: replace_tree(live, template, None),
        ),
        daemon,
    )

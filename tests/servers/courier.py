"""Courier-IMAP 5.0 and Courier POP3 (Debian's courier-imap/courier-pop, unpacked by
install.sh), private, in a mount namespace (see courier-run.sh).

The personal namespace is ``INBOX.`` with separator ``.``; the Maildir++ store has
Drafts, Sent, Trash, Junk and Archive, as a Courier user's mail client would have made.
A reset swaps in a fresh copy of that Maildir. No MOVE; IDLE without FAM polls every 10 s.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import signal
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
    mail_ids,
    replace_tree,
    require_files,
    require_root,
    tail,
    wait_greeting,
    write_seed_maildir,
)

ROOT = CACHE / "pkgroot" / "courier"
FOLDERS = ("Drafts", "Sent", "Trash", "Junk", "Archive")
DH_PARAMS = (Path("/etc/courier/dhparams.pem"), Path("/usr/share/dovecot/dh.pem"))


class CourierDaemon(Daemon):
    """couriertcpd detaches into its own session, out of the process group: after the
    group, each listener is stopped by the pid it wrote (courier-run.sh does it too)."""

    def __init__(self, argv: list[str], log: Path, base: Path) -> None:
        super().__init__(argv, log)
        self.pid_files = [base / "imapd.pid", base / "pop3d.pid"]

    def stop(self) -> None:
        super().stop()
        for path in self.pid_files:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(path.read_text().split()[0]), signal.SIGTERM)


def start(base: Path, cert: Path, key: Path) -> tuple[MailServer, Daemon]:
    require_files(
        "Courier",
        ROOT / "usr" / "bin" / "imapd",
        ROOT / "usr/lib/courier/courier/courierpop3d",
        "/usr/sbin/couriertcpd",
        "/usr/sbin/makeuserdb",
        "/usr/lib/courier/courier-authlib/authdaemond",
        "/etc/courier",
        "/run/courier",
    )
    require_root("Courier")
    etc, run, home = base / "etc", base / "run", base / "home" / USERNAME
    for directory in (etc / "shared", run / "authdaemon", home):
        directory.mkdir(parents=True)
    (etc / "shared" / "index").touch()
    (etc / "combined.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    dh = next((p for p in DH_PARAMS if p.is_file()), None)
    if dh is not None:
        shutil.copyfile(dh, etc / "dhparams.pem")
    else:
        subprocess.run(
            ["openssl", "dhparam", "-dsaparam", "-out", str(etc / "dhparams.pem"), "2048"],
            check=True,
            capture_output=True,
        )
    (etc / "authdaemonrc").write_text(
        'authmodulelist="authuserdb"\nauthmodulelistorig="authuserdb"\ndaemons=3\n'
        'authdaemonvar=/run/courier/authdaemon\nDEBUG_LOGIN=0\nDEFAULTOPTIONS=""\n'
        'LOGGEROPTS=""\n'
    )
    uid, gid = mail_ids()
    hashed = subprocess.run(
        ["openssl", "passwd", "-6", PASSWORD], check=True, capture_output=True, text=True
    ).stdout.strip()
    maildir = home / "Maildir"
    (etc / "userdb").write_text(
        f"{USERNAME}\tuid={uid}|gid={gid}|home={home}|mail={maildir}|systempw={hashed}\n"
    )
    (etc / "userdb").chmod(0o600)
    run.chmod(0o755)
    (run / "authdaemon").chmod(0o755)
    # couriertls runs as user courier: the key material is root:courier 0640, as in Debian.
    courier_gid = grp.getgrnam("courier").gr_gid
    for path in (etc, etc / "dhparams.pem", etc / "authdaemonrc", etc / "combined.pem"):
        shutil.chown(path, group=courier_gid)
        path.chmod(0o750 if path.is_dir() else 0o640)
    template = base / "template"
    _write_template(template)
    replace_tree(maildir, template, (uid, gid))
    (base / "home").chmod(0o755)
    shutil.chown(home, uid, gid)

    imap_port, pop3_port = free_ports(2)
    log = base / "courier-run.log"
    daemon = CourierDaemon(
        ["unshare", "-m", "--propagation", "private", "bash", str(HERE / "courier-run.sh"),
         str(base), str(ROOT), str(imap_port), str(pop3_port)],
        log,
        base,
    )  # fmt: skip
    try:
        wait_greeting(imap_port, b"* OK", daemon, "Courier IMAP")
        wait_greeting(pop3_port, b"+OK", daemon, "Courier POP3")
    except ServerError as exc:
        daemon.stop()
        logs = tail(log, base / "imapd.log", base / "pop3d.log", base / "authdaemond.log")
        raise ServerError(f"{exc}\n{logs}") from None
    return (
        MailServer(
            name="courier",
            version=f"Courier-IMAP {_version('courier-imap')}",
            imap_port=imap_port,
            imap_starttls_port=imap_port,
            pop3_port=pop3_port,
            pop3_stls=True,
            ca_file=str(cert),
            prefix="INBOX.",
            separator=".",
            reset_hook=lambda: replace_tree(maildir, template, (uid, gid)),
        ),
        daemon,
    )


def _write_template(maildir: Path) -> None:
    write_seed_maildir(maildir)
    for folder in FOLDERS:
        for sub in ("cur", "new", "tmp"):
            (maildir / f".{folder}" / sub).mkdir(parents=True)
        (maildir / f".{folder}" / "maildirfolder").touch()
    (maildir / "courierimapsubscribed").write_text("".join(f"INBOX.{f}\n" for f in FOLDERS))


def _version(package: str) -> str:
    debs = CACHE / "debs"
    for path in sorted(debs.glob(f"{package}_*.deb")) if debs.is_dir() else ():
        return path.name.split("_")[1].split("+")[0]
    return "5.0"

"""GNU Mailutils 3.15 imap4d and pop3d (Debian packages), in a mount namespace.

Maildir store; folders Drafts, Sent, Trash, Junk and Archive are created over IMAP after
start, then the store is kept as the template a reset copies back. No MOVE, no UIDPLUS;
IDLE never pushes; pop3d writes an ``X-UIDL:`` header into each message file the first
time UIDL is used (a reset undoes that too).

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
    chown_tree,
    free_ports,
    mail_ids,
    quote,
    replace_tree,
    require_files,
    require_root,
    tail,
    wait_greeting,
    write_seed_maildir,
)

FOLDERS = ("Drafts", "Sent", "Trash", "Junk", "Archive")


def version() -> str:
    done = subprocess.run(["/usr/sbin/imap4d", "--version"], capture_output=True, text=True)
    words = done.stdout.split("\n", 1)[0].split()
    return f"GNU Mailutils {words[-1]}" if words else "GNU Mailutils"


def start(base: Path, cert: Path, key: Path) -> tuple[MailServer, Daemon]:
    require_files("GNU Mailutils", "/usr/sbin/imap4d", "/usr/sbin/pop3d")
    require_root("GNU Mailutils")
    uid, gid = mail_ids()
    etc, lock, home = base / "etc", base / "lock", base / "home" / USERNAME
    for directory in (etc, lock, home):
        directory.mkdir(parents=True)
    lock.chmod(0o1777)
    (base / "home").chmod(0o755)
    passwd = Path("/etc/passwd").read_text()
    if f"\n{USERNAME}:" in "\n" + passwd:
        raise ServerError(f"a system user {USERNAME} exists already; Mailutils would use it")
    hashed = subprocess.run(
        ["openssl", "passwd", "-6", PASSWORD], check=True, capture_output=True, text=True
    ).stdout.strip()
    (etc / "passwd").write_text(
        passwd + f"{USERNAME}:x:{uid}:{gid}:test user:{home}:/usr/sbin/nologin\n"
    )
    shadow = Path("/etc/shadow").read_text()
    (etc / "shadow").write_text(shadow + f"{USERNAME}:{hashed}:19000:0:99999:7:::\n")
    (etc / "passwd").chmod(0o644)
    (etc / "shadow").chmod(0o640)
    shutil.chown(etc / "shadow", group="shadow")
    imap_port, pop3_port = free_ports(2)
    for program, port in (("imap4d", imap_port), ("pop3d", pop3_port)):
        (etc / f"{program}.conf").write_text(f"""\
# A private {program} for one pytest session; made by tests/servers/mailutils.py.
logging {{ syslog false; severity info; }};
auth {{ authentication generic:system; authorization system; }};
mailbox {{ mailbox-pattern "maildir://{base}/home/${{user}}/Maildir"; }};
namespace personal {{ prefix "" {{ directory "{base}/home/${{user}}/Maildir"; delimiter "/"; mailbox-type maildir; }}; }};
tcp-wrappers {{ enable false; }};
pidfile "{base}/{program}.pid";
tls {{ ssl-certificate-file "{cert}"; ssl-key-file "{key}"; }};
tls-file-checks {{ key-file none; cert-file none; ca-file none; }};
mandatory-locking {{ enable true; lock-directory "{lock}"; }};
server 127.0.0.1:{port} {{ tls-mode stls; transcript false; }};
""")  # noqa: E501
    maildir = home / "Maildir"
    write_seed_maildir(maildir)
    chown_tree(base / "home", (uid, gid))
    log = base / "mailutils-run.log"
    daemon = Daemon(
        ["unshare", "-m", "--propagation", "private", "bash", str(HERE / "mailutils-run.sh"),
         str(base)],
        log,
    )  # fmt: skip
    try:
        wait_greeting(imap_port, b"* OK", daemon, "Mailutils imap4d")
        wait_greeting(pop3_port, b"+OK", daemon, "Mailutils pop3d")
    except ServerError as exc:
        daemon.stop()
        raise ServerError(f"{exc}\n{tail(log, base / 'imap4d.log', base / 'pop3d.log')}") from None
    server = MailServer(
        name="mailutils",
        version=version(),
        imap_port=imap_port,
        imap_starttls_port=imap_port,
        pop3_port=pop3_port,
        pop3_stls=True,
        ca_file=str(cert),
    )
    with server.imap() as client:
        for folder in FOLDERS:
            status, data = client.create(quote(folder))
            if status != "OK":
                raise ServerError(f"Mailutils: CREATE {folder}: {data}")
    template = base / "template"
    shutil.copytree(maildir, template, symlinks=True)
    server.reset_hook = lambda: replace_tree(maildir, template, (uid, gid))
    return server, daemon

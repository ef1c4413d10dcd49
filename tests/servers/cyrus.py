"""Cyrus IMAP 3.6 (Debian's cyrus-imapd/cyrus-pop3d, unpacked by install.sh), private.

The packages conflict with Dovecot's, so they run from the cache directory. ``master`` does
not pass ``-C`` to its children and ignores ``service_path``, so every ``cmd=`` carries the
binary's absolute path and the config; Cyrus logs only through syslog(3), which the shim
install.sh builds writes to ``syslog.log``. Mailboxes are autocreated at the first login
(INBOX plus Drafts, Sent, Trash, Junk, Archive with special-use flags) and the corpus is
appended over IMAP, so the store is Cyrus's own format; a reset works over IMAP too.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.servers.common import (
    CACHE,
    Daemon,
    MailServer,
    ServerError,
    chown_tree,
    free_ports,
    imap_reset,
    list_folders,
    require_files,
    require_root,
    tail,
    wait_greeting,
)

ROOT = CACHE / "pkgroot" / "cyrus"
BIN = ROOT / "usr" / "lib" / "cyrus" / "bin"
SHIM = CACHE / "lib" / "syslog2file.so"
SPECIAL = "Drafts | Sent | Trash | Junk | Archive"


def start(base: Path, cert: Path, key: Path) -> tuple[MailServer, Daemon]:
    require_files("Cyrus", BIN / "master", BIN / "imapd", BIN / "pop3d", SHIM)
    require_files("Cyrus (sasl2-bin)", "/usr/sbin/saslpasswd2")
    require_root("Cyrus")
    config = base / "config"
    for sub in ("db", "socket", "proc", "log", "msg", "ptclient", "quota", "sieve", "user",
                "lock", "sync"):  # fmt: skip
        (config / sub).mkdir(parents=True)
    for sub in ("spool", "run", "ssl"):
        (base / sub).mkdir()
    (base / "ssl" / "cert.pem").write_bytes(cert.read_bytes())
    (base / "ssl" / "key.pem").write_bytes(key.read_bytes())
    imap_port, pop3_port = free_ports(2)
    conf = base / "imapd.conf"
    conf.write_text(f"""\
# A private Cyrus for one pytest session; made by tests/servers/cyrus.py.
configdirectory: {config}
partition-default: {base}/spool
servername: localhost
cyrus_user: nobody
cyrus_group: nogroup
admins: cyrusadmin
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {base}/sasldb2
sasl_mech_list: PLAIN LOGIN
unixhierarchysep: yes
altnamespace: yes
autocreate_quota: 0
autocreate_inbox_folders: {SPECIAL}
autocreate_subscribe_folders: {SPECIAL}
xlist-drafts: Drafts
xlist-sent: Sent
xlist-trash: Trash
xlist-junk: Junk
xlist-archive: Archive
specialusealways: yes
delete_mode: immediate
expunge_mode: immediate
lmtpsocket: {base}/run/lmtp
idlesocket: {base}/run/idle
notifysocket: {base}/run/notify
tls_server_cert: {base}/ssl/cert.pem
tls_server_key: {base}/ssl/key.pem
syslog_prefix: mailrules-test-cyrus
popminpoll: 0
""")
    c = f"-C {conf}"
    (base / "cyrus.conf").write_text(f"""\
START {{
  recover  cmd="{BIN}/ctl_cyrusdb {c} -r"
}}
SERVICES {{
  imap     cmd="{BIN}/imapd {c}"  listen="127.0.0.1:{imap_port}" prefork=0
  pop3     cmd="{BIN}/pop3d {c}"  listen="127.0.0.1:{pop3_port}" prefork=0
}}
EVENTS {{
  checkpoint cmd="{BIN}/ctl_cyrusdb {c} -c" period=30
}}
DAEMON {{
  idled    cmd="{BIN}/idled {c}"
}}
""")
    for user, password in (("testuser", "testpass"), ("cyrusadmin", "adminpass")):
        subprocess.run(
            ["/usr/sbin/saslpasswd2", "-p", "-c", "-f", str(base / "sasldb2"), "-u", "localhost",
             user],
            input=password.encode(),
            check=True,
            capture_output=True,
        )  # fmt: skip
    chown_tree(base)
    (base / "sasldb2").chmod(0o640)
    (base / "ssl" / "key.pem").chmod(0o600)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LD_LIBRARY_PATH": str(ROOT / "usr" / "lib" / "x86_64-linux-gnu"),
        "LD_PRELOAD": str(SHIM),
        "MAILRULES_SYSLOG_FILE": str(base / "syslog.log"),
    }
    log = base / "master.log"
    daemon = Daemon(
        [str(BIN / "master"), "-C", str(conf), "-M", str(base / "cyrus.conf"),
         "-p", str(base / "master.pid")],
        log,
        env,
    )  # fmt: skip
    try:
        wait_greeting(imap_port, b"* OK", daemon, "Cyrus IMAP")
        wait_greeting(pop3_port, b"+OK", daemon, "Cyrus POP3")
    except ServerError as exc:
        daemon.stop()
        raise ServerError(f"{exc}\n{tail(log, base / 'syslog.log')}") from None
    server = MailServer(
        name="cyrus",
        version=f"Cyrus IMAP {_version()}",
        imap_port=imap_port,
        imap_starttls_port=imap_port,
        pop3_port=pop3_port,
        pop3_stls=True,
        ca_file=str(cert),
    )
    with server.imap() as client:  # the first login autocreates INBOX and the special folders
        baseline = {name for _flags, name in list_folders(client)}
    server.reset_hook = lambda: imap_reset(server, baseline)
    return server, daemon


def _version() -> str:
    for name in os.listdir(CACHE / "debs") if (CACHE / "debs").is_dir() else ():
        if name.startswith("cyrus-imapd_"):
            return name.split("_")[1].split("-")[0]
    return "3.6"

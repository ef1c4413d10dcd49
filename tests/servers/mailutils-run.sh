#!/bin/bash
# GNU Mailutils imap4d and pop3d for tests/servers/mailutils.py, run INSIDE a private mount
# namespace (`unshare -m`). Mailutils authenticates against the system user database
# (its virtual-domain path only works under inetd), so copies of /etc/passwd and
# /etc/shadow holding one more user are bind-mounted over the originals; only the
# processes started here see them.
# Usage: mailutils-run.sh DIR
set -euo pipefail
D=$1
mount --make-rprivate /
mount --bind "$D/etc/passwd" /etc/passwd
mount --bind "$D/etc/shadow" /etc/shadow
/usr/sbin/imap4d --config-file="$D/etc/imap4d.conf" --daemon --foreground >>"$D/imap4d.log" 2>&1 &
/usr/sbin/pop3d --config-file="$D/etc/pop3d.conf" --daemon --foreground >>"$D/pop3d.log" 2>&1 &
wait

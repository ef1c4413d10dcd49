#!/bin/bash
# Courier-IMAP and Courier POP3 for tests/servers/courier.py, run INSIDE a private mount
# namespace (`unshare -m`): courier-authlib has /etc/courier (config, userdb) and
# /run/courier/authdaemon (its socket) compiled in, so this instance's own directories are
# bind-mounted over those two paths. Only the processes started here see the binds.
# Usage: courier-run.sh DIR PKGROOT IMAP_PORT POP3_PORT
set -euo pipefail
D=$1 R=$2 IMAP_PORT=$3 POP3_PORT=$4
mount --make-rprivate /
mount --bind "$D/etc" /etc/courier
mount --bind "$D/run" /run/courier
cd "$D/etc"
/usr/sbin/makeuserdb  # userdb (text) -> userdb.dat / userdbshadow.dat

# The real authdaemond (/usr/sbin/authdaemond is only a courierlogger wrapper), foreground.
/usr/lib/courier/courier-authlib/authdaemond >>"$D/authdaemond.log" 2>&1 &
auth=$!
# couriertcpd puts itself in the background (its own session): stop it by its pid file.
stop() {
    local f
    for f in "$D/imapd.pid" "$D/pop3d.pid"; do
        [ -s "$f" ] && /usr/sbin/couriertcpd -pid="$f" -stop 2>/dev/null
    done
    kill "$auth" 2>/dev/null
}
trap stop EXIT
trap 'exit 0' TERM INT HUP
for _ in $(seq 1 100); do [ -S /run/courier/authdaemon/socket ] && break; sleep 0.05; done

common_env=(
  COURIERTLS=/usr/bin/couriertls TLS_CERTFILE=$D/etc/combined.pem TLS_DHPARAMS=$D/etc/dhparams.pem
  TLS_VERIFYPEER=NONE MAILDIRPATH=Maildir PATH=/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8
)
capability="IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE"
imap_env=(
  "${common_env[@]}"
  "IMAP_CAPABILITY=$capability" "IMAP_CAPABILITY_TLS=$capability AUTH=PLAIN"
  IMAP_KEYWORDS=1 IMAP_ACL=1 IMAP_PROXY=0 IMAP_IDLE_TIMEOUT=10
  IMAP_MAILBOX_SANITY_CHECK=1 IMAP_DISABLETHREADSORT=0 IMAP_CHECK_ALL_FOLDERS=0
  IMAP_OBSOLETE_CLIENT=0 IMAP_UMASK=022 IMAP_USELOCKS=1 IMAP_ENHANCEDIDLE=0
  IMAP_TRASHFOLDERNAME=Trash IMAP_EMPTYTRASH=Trash:7 IMAP_MOVE_EXPUNGE_TO_TRASH=0
  IMAP_SHAREDINDEXFILE=$D/etc/shared/index IMAP_STARTTLS=YES IMAP_TLS_REQUIRED=0
  HEADERFROM=X-IMAP-Sender SENDMAIL=/bin/false
)
pop_env=(
  "${common_env[@]}" "POP3AUTH=LOGIN PLAIN" "POP3AUTH_TLS=LOGIN PLAIN"
  POP3_PROXY=0 POP3_STARTTLS=YES POP3_TLS_REQUIRED=0
)
tcpd=(/usr/sbin/couriertcpd -address=127.0.0.1 -maxprocs=40 -maxperip=40 -nodnslookup -noidentlookup)
env -i "${imap_env[@]}" "${tcpd[@]}" -pid="$D/imapd.pid" "$IMAP_PORT" \
    "$R/usr/lib/courier/courier/imaplogin" "$R/usr/bin/imapd" Maildir >>"$D/imapd.log" 2>&1
env -i "${pop_env[@]}" "${tcpd[@]}" -pid="$D/pop3d.pid" "$POP3_PORT" \
    "$R/usr/lib/courier/courier/courierpop3login" "$R/usr/lib/courier/courier/courierpop3d" Maildir \
    >>"$D/pop3d.log" 2>&1
wait "$auth"

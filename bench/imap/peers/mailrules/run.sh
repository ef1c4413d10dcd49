#!/bin/sh
# mailrules as a bench tool. Its state lives in $BENCH_BASE/mailrules-state and is thrown
# away whenever the harness has reset the mailbox (reset_mailbox.sh puts a new directory
# in place, so the live Maildir's inode changes). A "filter" run is therefore mailrules'
# first contact with the mailbox (existing: process), and a "poll" run a steady-state poll
# with the state the filter run left, as in real use.
set -eu
# As installed for a user, Python compiles mailrules' modules once and caches them; an
# environment that forbids the cache would time their compilation on every run.
unset PYTHONDONTWRITEBYTECODE
here=$(cd "$(dirname "$0")" && pwd)
state=${BENCH_BASE:-/tmp/mailbench}/mailrules-state
# The inode alone can be reused by the new directory; its birth time cannot. (Not its
# ctime: Dovecot's own index writes change that, and a poll would start over.)
mailbox=$(stat -c '%i %W' "$BENCH_MAILDIR")
if [ "$(cat "$state/mailbox-inode" 2>/dev/null || true)" != "$mailbox" ]; then
    rm -rf "$state"
    mkdir -p "$state"
    echo "$mailbox" > "$state/mailbox-inode"
fi
sed -e "s/@HOST@/$BENCH_HOST/" -e "s/@PORT@/$BENCH_IMAP_PORT/" \
    -e "s/@USER@/$BENCH_USER/" -e "s/@PASS@/$BENCH_PASS/" \
    "$here/rules.yaml.in" > "$state/rules.yaml"
exec "${MAILRULES:-mailrules}" run --once -q -c "$state/rules.yaml" --state-dir "$state"

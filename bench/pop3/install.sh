#!/usr/bin/env bash
# Sets up the POP3 peers (run as root):
#   * Debian packages fetchmail, procmail and maildrop (installed without recommends, which
#     would otherwise pull in exim4 as a mail transport agent);
#   * the unprivileged system user $POP3_USER (default mailfetch), that every POP3 peer runs
#     as. getmail6 refuses to deliver as root, fetchmail warns against it, and a real user
#     runs a fetcher under their own account. Its home is $BENCH_BASE/pop3/home;
#   * mailrules from this repository, in the venv $BENCH_BASE/pop3/mailrules-venv made from
#     Debian's /usr/bin/python3 (installed, not editable, so that the unprivileged user can
#     import it; run install.sh again after changing mailrules);
#   * getmail6 from PyPI in a virtual environment, $BENCH_BASE/pop3/venv, made from
#     Debian's /usr/bin/python3 (the Python that the floor runs with too), so that the
#     unprivileged user can run it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# The lab: the directory above, else $BENCH_LAB, else shared/bench beside the repository.
for lab in "$here/.." "$here/../imap" "${BENCH_LAB:-}" "$here/../../../shared/bench" /work/shared/bench; do
    [ -n "$lab" ] && [ -f "$lab/lib/env.sh" ] && break
done
. "$lab/lib/env.sh"
. "$here/env.sh"

[ "$(id -u)" = 0 ] || bench_die "run as root"

missing=()
for p in fetchmail procmail maildrop; do
    command -v "$p" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

if ! id "$POP3_USER" >/dev/null 2>&1; then
    echo "creating system user $POP3_USER"
    useradd --system --user-group --no-create-home --home-dir "$POP3_HOME" \
        --shell /usr/sbin/nologin "$POP3_USER"
elif [ "$(getent passwd "$POP3_USER" | cut -d: -f6)" != "$POP3_HOME" ]; then
    usermod --home "$POP3_HOME" "$POP3_USER"
fi
mkdir -p "$POP3_HOME"
chown "$POP3_USER:$POP3_USER" "$POP3_HOME"
chmod 700 "$POP3_HOME"

VERSION=${GETMAIL6_VERSION:-6.20.2}
if [ ! -x "$POP3_VENV/bin/getmail" ] || ! "$POP3_VENV/bin/pip" show getmail6 2>/dev/null | grep -qx "Version: $VERSION"; then
    "$POP3_PYTHON" -m venv "$POP3_VENV"
    "$POP3_VENV/bin/pip" install -q "getmail6==$VERSION"
fi
echo "getmail6 $("$POP3_VENV/bin/pip" show getmail6 | sed -n 's/^Version: //p') ($POP3_VENV, $("$POP3_PYTHON" -V))"
echo "fetchmail $(dpkg-query -W -f '${Version}' fetchmail), procmail $(dpkg-query -W -f '${Version}' procmail), maildrop $(dpkg-query -W -f '${Version}' maildrop)"
echo "POP3 peers run as $(id "$POP3_USER")"

repo=$(cd "$here/../.." && pwd)
"$POP3_PYTHON" -m venv --clear "$MAILRULES_VENV"
"$MAILRULES_VENV/bin/pip" install -q "$repo"
rm -rf "$repo/build"
echo "mailrules $("$MAILRULES_VENV/bin/mailrules" --version | cut -d' ' -f2) ($MAILRULES_VENV, from $repo)"

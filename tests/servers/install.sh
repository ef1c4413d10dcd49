#!/usr/bin/env bash
# Install the IMAP/POP3 servers the interop tests start themselves (tests/servers/).
#
#   Dovecot 2.3, GNU Mailutils 3.15 imap4d/pop3d, tcllib pop3d   from apt
#   Cyrus IMAP 3.6, Courier-IMAP 5.0 / Courier POP3               .debs unpacked privately
#   Twisted (twisted.mail), pymap                                 a venv from PyPI
#
# Debian 12, as root. Idempotent: what is already there is left alone, so a second run
# takes about a second. No service is started: a policy-rc.d that answers 101 ("action
# forbidden") is in place while apt runs, and any policy-rc.d that was there before is put
# back afterwards.
#
# cyrus-imapd, cyrus-pop3d, courier-imap and courier-pop declare Conflicts: imap-server /
# pop3-server, so installing them with apt would remove Dovecot. They are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` into the cache directory instead, and
# run from there; only their libraries (which conflict with nothing) come from apt.
#
# Everything that is not a Debian package goes to $MAILRULES_SERVERS_CACHE (default
# /var/cache/mailrules-test-servers), which the tests read; it must stay world-readable,
# because Cyrus and Courier run their servers as 'nobody'.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${MAILRULES_SERVERS_CACHE:-/var/cache/mailrules-test-servers}
apt_options=(-o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
export DEBIAN_FRONTEND=noninteractive

say() { echo "install.sh: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "not root, so nothing installed. As root run: $0"
    say "  Without the servers the interop tests skip (fail when MAILRULES_REQUIRE_SERVERS=1)."
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    say "no apt-get here: this installer is for Debian 12; install the servers by hand"
    exit 1
fi

# --- apt packages (none conflicts with Dovecot) -----------------------------------------
apt_packages=(
    dovecot-imapd dovecot-pop3d openssl ca-certificates
    mailutils-imap4d mailutils-pop3d
    tcl tcllib
    sasl2-bin libsasl2-modules libsasl2-modules-db
    courier-base courier-authlib courier-authdaemon courier-authlib-userdb gamin
    util-linux gcc libc6-dev python3-venv
)

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
            || echo "$p"
    done
}

policy=/usr/sbin/policy-rc.d
policy_set=
backup=
restore_policy() {
    if [ -n "$backup" ]; then mv -f "$backup" "$policy"; else rm -f "$policy"; fi
}
forbid_service_starts() {  # once per run; the EXIT trap puts back what was there
    [ -n "$policy_set" ] && return 0
    if [ -e "$policy" ]; then
        backup=$(mktemp)
        cp -p "$policy" "$backup"
    fi
    trap restore_policy EXIT
    printf '#!/bin/sh\n# tests/servers/install.sh: install packages without starting services\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    policy_set=1
}
apt_updated=
apt_install() {
    local missing
    mapfile -t missing < <(missing_packages "$@")
    [ ${#missing[@]} -eq 0 ] && return 0
    forbid_service_starts
    if [ -z "$apt_updated" ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        apt_updated=1
    fi
    say "apt-get install ${missing[*]}"
    apt-get "${apt_options[@]}" install "${missing[@]}" >/dev/null
}

apt_install "${apt_packages[@]}"

# --- Cyrus and Courier: unpacked privately --------------------------------------------
mkdir -p "$cache/debs" "$cache/pkgroot"
chmod 755 "$cache" "$cache/pkgroot"

download() {  # download PACKAGE: its .deb in $cache/debs (apt's candidate version)
    local package=$1 file
    file=$(ls "$cache/debs/${package}"_*.deb 2>/dev/null | head -1 || true)
    if [ -z "$file" ]; then
        if ! (cd "$cache/debs" && apt-get download -qq "$package" 2>/dev/null); then
            apt-get -o DPkg::Lock::Timeout=600 update -qq
            (cd "$cache/debs" && apt-get download -qq "$package")
        fi
        file=$(ls "$cache/debs/${package}"_*.deb | head -1)
    fi
    echo "$file"
}

library_depends() {  # the lib* packages a .deb depends on (first of each alternative)
    dpkg-deb -f "$1" Depends | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/:any//; s/ //g' \
        | grep -E '^lib' || true
}

private_install() {  # private_install NAME PACKAGE...: unpacked into $cache/pkgroot/NAME
    local name=$1 root=$cache/pkgroot/$1 package file libraries=()
    shift
    mkdir -p "$root"
    for package in "$@"; do
        [ -e "$root/.unpacked-$package" ] && continue
        file=$(download "$package")
        mapfile -t -O "${#libraries[@]}" libraries < <(library_depends "$file")
        dpkg-deb -x "$file" "$root"
        touch "$root/.unpacked-$package"
        say "unpacked $(basename "$file") into $root"
    done
    [ ${#libraries[@]} -eq 0 ] || apt_install "${libraries[@]}"
}

private_install cyrus cyrus-common cyrus-imapd cyrus-pop3d
private_install courier courier-imap courier-pop
chmod -R a+rX "$cache/pkgroot"

cyrus_bin=$cache/pkgroot/cyrus/usr/lib/cyrus/bin
courier_root=$cache/pkgroot/courier
unresolved=$(LD_LIBRARY_PATH=$cache/pkgroot/cyrus/usr/lib/x86_64-linux-gnu \
    ldd "$cyrus_bin/master" "$cyrus_bin/imapd" "$cyrus_bin/pop3d" \
    "$courier_root/usr/bin/imapd" "$courier_root/usr/lib/courier/courier/courierpop3d" \
    | grep 'not found' || true)
if [ -n "$unresolved" ]; then
    say "libraries still missing: $unresolved"
    exit 1
fi

# Cyrus logs only through syslog(3); this shim writes those lines to $MAILRULES_SYSLOG_FILE.
shim=$cache/lib/syslog2file.so
if [ ! -s "$shim" ] || [ "$here/syslog2file.c" -nt "$shim" ]; then
    mkdir -p "$cache/lib"
    gcc -shared -fPIC -O2 -o "$shim" "$here/syslog2file.c"
    chmod 755 "$cache/lib" "$shim"
    say "built $shim"
fi

# --- Twisted and pymap from PyPI --------------------------------------------------------
venv=$cache/venv
python_requirements=("twisted[tls]==26.10.0" "pymap==0.36.7")
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -I -c 'import twisted.mail, OpenSSL, service_identity, pymap' 2>/dev/null; then
    say "pip install ${python_requirements[*]} into $venv"
    "$venv/bin/pip" install -q "${python_requirements[@]}"
fi
chmod -R a+rX "$venv"

say "ready: $(/usr/sbin/dovecot --version | cut -d' ' -f1) Dovecot, Cyrus and Courier in $cache/pkgroot,"\
" $("$venv/bin/python" -I -c 'import twisted, importlib.metadata as m; print("Twisted", twisted.__version__, "pymap", m.version("pymap"))')"

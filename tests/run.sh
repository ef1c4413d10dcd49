#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, real IMAP/POP3 servers included.
#
#   tests/run.sh [PYTEST ARGS...]      as root (CI runs exactly this: .ci/run)
#
# Creates .venv if it is missing, installs mailrules with its test extras, installs the
# servers the tests start themselves (tests/servers/install.sh: idempotent, a second run
# takes about a second), then runs pytest with MAILRULES_REQUIRE_SERVERS=1, so a server
# that is missing fails its tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "run.sh: the test servers are installed and run as root (Dovecot, Cyrus and Courier" >&2
    echo "  drop to 'nobody' themselves). Run: sudo tests/run.sh $*" >&2
    echo "  Without root, .venv/bin/pytest runs the rest and skips the server tests, naming why." >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q -e '.[test]'
tests/servers/install.sh
export MAILRULES_REQUIRE_SERVERS=1 MAILRULES_REQUIRE_DOVECOT=1
exec .venv/bin/pytest "$@"

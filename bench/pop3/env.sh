# Settings for the POP3 benchmark. Source this after lib/env.sh; do not run it.
export POP3_DIR=$BENCH_BASE/pop3
# The unprivileged user that every POP3 peer runs as (install.sh creates it).
export POP3_USER=${POP3_USER:-mailfetch}
export POP3_HOME=$POP3_DIR/home
# Debian's own Python: the floor runs with it, and getmail6's venv is made from it. (A Python
# in root's home, such as a pyenv build, cannot be run by the unprivileged user.)
export POP3_PYTHON=${POP3_PYTHON:-/usr/bin/python3}
export POP3_VENV=$POP3_DIR/venv
# mailrules from this repository (install.sh puts it there).
export MAILRULES_VENV=$POP3_DIR/mailrules-venv

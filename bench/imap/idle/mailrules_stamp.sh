#!/bin/sh
# The command mailrules' rule runs for a new message: like stamp.sh, but mailrules gives
# its commands a minimal environment (no IDLE_STAMPS), so the stamps file is the first
# argument, and the message is named by its Message-ID ($MAILRULES_MESSAGE_ID), which
# run_idle.py maps back to the probe's UID.
exec date "+%s.%N mailrules ${MAILRULES_MESSAGE_ID:-?}" >>"${1:?usage: mailrules_stamp.sh STAMPS}"

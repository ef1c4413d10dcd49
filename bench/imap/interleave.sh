#!/usr/bin/env bash
# interleave.sh N ROUNDS: the floor, imapfilter and mailrules, one first pass (plus 3 polls)
# each per round, round after round; round 0 is a warm-up. On a shared machine whose speed
# drifts over minutes, comparing tools run side by side is fairer than one tool's block
# of repetitions after another's. Prints every run, then medians over rounds 1..ROUNDS and
# each round's ratio to the floor's first pass (interleaved_summary.py).
#
# mailrules is $MAILRULES (default: mailrules on PATH), through peers/mailrules/run.sh.
# With MAILRULES_BEFORE set to another mailrules executable (an earlier release, say), it
# runs too, as "mailrules-before", in every round: a before/after comparison side by side.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
N=${1:?usage: interleave.sh N ROUNDS}
ROUNDS=${2:?usage: interleave.sh N ROUNDS}
log=${BENCH_BASE:-/tmp/mailbench}/interleave-n$N-$(date +%Y%m%dT%H%M%S).txt
tools=(floor imapfilter mailrules)
if [ -n "${MAILRULES_BEFORE:-}" ]; then
    tools+=(mailrules-before)
fi
for round in $(seq 0 "$ROUNDS"); do
    for tool in "${tools[@]}"; do
        if [ "$tool" = mailrules ]; then
            args=(--label mailrules -- "$here/peers/mailrules/run.sh")
        elif [ "$tool" = mailrules-before ]; then
            args=(--label mailrules-before -- env MAILRULES="$MAILRULES_BEFORE" "$here/peers/mailrules/run.sh")
        else
            args=("$tool")
        fi
        "$here/run_tool.sh" -n "$N" -r 1 -w 0 -p 3 "${args[@]}" 2>&1 \
            | grep -E "^  (first|poll) " | sed "s/^/round $round $tool /" | tee -a "$log"
    done
done
python3 "$here/lib/interleaved_summary.py" "$log"

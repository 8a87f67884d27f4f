#!/usr/bin/env bash
# Crash-restart harness for the continuous trigger: a real `sluice run`
# process runs rate -> filter -> files sink under trigger = 'continuous'
# (short epochs), and is killed again and again (kill -9 at random moments,
# and aborts at the crash points between the offset log, the sink's commit
# and the commit log), then restarted on the same checkpoint. At the end it
# runs once more and is stopped cleanly; every kept value up to the largest
# committed one must be in the committed output exactly once.
#
#   tests/crash/continuous_crash_test.sh [--cycles N] [--seed S] [--bin PATH] [--keep DIR]
#
# The last line is `cycles=N kills=N rows_in=N rows_out=N lost=N duplicated=N`;
# the exit code is 0 only with nothing lost and nothing duplicated.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cycles=100 files=0 rows=0
# shellcheck source=tests/crash/harness_args.sh
. "$here/harness_args.sh"
points=(after_offset_log during_sink_write after_sink_write during_state_commit before_commit_log)
export RATE=2000 INTERVAL='200 ms' OUT="$work/out" CK="$work/ck"
START_MS=$(($(date +%s%3N) + 500))
export START_MS

kills=0
for ((c = 0; c < cycles; c++)); do
  if ((c % 4 == 3)); then
    # An abort at one of the crash points, at its first or second hit.
    point=${points[$(((c / 4) % ${#points[@]}))]}
    set +e
    timeout 20 env SLUICE_CRASH_POINT="$point" SLUICE_CRASH_AFTER=$((1 + RANDOM % 2)) \
      "$bin" run "$here/continuous_queries.sql" >> "$work/console" 2>> "$work/log"
    status=$?
    set -e
    [ $status -ne 0 ] && [ $status -ne 124 ] && kills=$((kills + 1))
  else
    "$bin" run "$here/continuous_queries.sql" >> "$work/console" 2>> "$work/log" &
    pid=$!
    sleep "0.$(printf %03d $((150 + RANDOM % 700)))"
    if kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); fi
    wait "$pid" 2>/dev/null || true
  fi
done
# A last run, stopped cleanly (SIGINT stops the queries, committing the open epoch).
"$bin" run "$here/continuous_queries.sql" >> "$work/console" 2>> "$work/log" &
pid=$!
sleep 2
kill -INT "$pid"
wait "$pid" || true
python3 "$here/continuous_check.py" "$work/out" "$cycles" "$kills"

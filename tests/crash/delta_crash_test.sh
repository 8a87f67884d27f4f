#!/usr/bin/env bash
# Delta crash-restart harness: a real `sluice run` process writing files ->
# Delta (tests/crash/delta_queries.sql: rows appended, totals merged) is
# killed again and again (kill -9 at random moments, and aborts at the
# crash points around the Delta commit and the query's logs), restarted on
# the same checkpoints, then drained. An independent reader (the `deltalake`
# Python package, through scripts/delta-py.sh) then reads both tables.
#
#   tests/crash/delta_crash_test.sh [--cycles N] [--files F] [--rows R] [--seed S] [--bin PATH] [--keep DIR]
#
# The last line is `cycles=N kills=N rows_in=N rows_out=N lost=N duplicated=N`;
# the exit code is 0 only with nothing lost and nothing duplicated.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cycles=20 files=40 rows=20
# shellcheck source=tests/crash/harness_args.sh
. "$here/harness_args.sh"
points=(before_delta_commit after_delta_commit after_offset_log before_commit_log during_source_listing)

write_file() { # index dir
  local i=$1 dir=$2 f
  f="$dir/.part-$(printf %05d "$i").csv"
  {
    echo "id,ts,k,v"
    for ((r = 0; r < rows; r++)); do
      local id=$((i * rows + r))
      printf '%d,2024-01-01 00:00:%02d,k%d,%d\n' "$id" $((id % 60)) $((id % 5)) $((id * 7 % 1001))
    done
  } > "$f"
  mv "$f" "$dir/part-$(printf %05d "$i").csv"
}

run() { # trigger [env...]
  local trigger=$1; shift
  env IN="$work/in" OUT="$work/out" CK="$work/ck" TRIGGER="$trigger" "$@" "$bin" run "$here/delta_queries.sql" \
    >> "$work/console" 2>> "$work/log"
}

mkdir -p "$work/in" "$work/out"
added=0 kills=0
for ((c = 0; c < cycles; c++)); do
  for ((n = 0; n < RANDOM % 3 && added < files; n++)); do write_file "$added" "$work/in"; added=$((added + 1)); done
  if ((c % 2 == 1)); then
    # A deterministic crash at one of the crash points.
    point=${points[$(((c / 2) % ${#points[@]}))]}
    set +e
    timeout 30 env SLUICE_CRASH_POINT="$point" SLUICE_CRASH_AFTER=$((1 + RANDOM % 2)) \
      IN="$work/in" OUT="$work/out" CK="$work/ck" TRIGGER=available_now "$bin" run "$here/delta_queries.sql" \
      >> "$work/console" 2>> "$work/log"
    status=$?
    set -e
    [ $status -ne 0 ] && kills=$((kills + 1))
  else
    IN="$work/in" OUT="$work/out" CK="$work/ck" TRIGGER=processing_time "$bin" run "$here/delta_queries.sql" \
      >> "$work/console" 2>> "$work/log" &
    pid=$!
    sleep "0.$(printf %03d $((100 + RANDOM % 800)))"
    if kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); fi
    wait "$pid" 2>/dev/null || true
  fi
done
while ((added < files)); do write_file "$added" "$work/in"; added=$((added + 1)); done
run available_now
"$root/scripts/delta-py.sh" "$here/delta_check.py" "$work/out" $((files * rows)) "$cycles" "$kills"

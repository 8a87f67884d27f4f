#!/usr/bin/env bash
# Crash-restart harness: runs a real `sluice run` process on four queries
# (a files-to-files ETL, a windowed aggregation in append mode and a
# stream-stream join with a time range, all into files sinks, and an
# update-mode aggregation into the at-least-once console sink, checked by
# batch id), kills it again and again (kill -9 at random moments,
# and aborts at every crash point of sluice_engine::faults), restarts it on
# the same checkpoints, then drains and compares the committed output with
# an uninterrupted run of the same queries over the same files.
#
#   tests/crash/crash_test.sh [--cycles N] [--files F] [--rows R] [--seed S] [--bin PATH] [--keep DIR]
#                             [--state-every K]
#
# --state-every K checkpoints the stateful queries' state every K batches
# (state_checkpoint_interval): a restart then replays up to K - 1 batches.
#
# The last line is `cycles=N kills=N rows_in=N rows_out=N lost=N duplicated=N`;
# the exit code is 0 only with nothing lost and nothing duplicated.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cycles=20 files=40 rows=50
# shellcheck source=tests/crash/harness_args.sh
. "$here/harness_args.sh"
points=(after_offset_log during_sink_write after_sink_write during_state_commit during_snapshot before_commit_log during_source_listing)

# Input: monotone event times (so no row is ever late, whatever the batching).
write_file() { # index dir
  local i=$1 dir=$2 f
  f="$dir/.part-$(printf %05d "$i").csv"
  {
    echo "id,ts,k,v"
    for ((r = 0; r < rows; r++)); do
      local id=$((i * rows + r))
      local sec=$((id / 7))
      printf '%d,2024-01-01 %02d:%02d:%02d,k%d,%d\n' "$id" $((sec / 3600 % 24)) $((sec / 60 % 60)) $((sec % 60)) $((id % 5)) "$id"
    done
  } > "$f"
  mv "$f" "$dir/part-$(printf %05d "$i").csv"
}

run() { # in out ck trigger [extra env...]
  local in=$1 out=$2 ck=$3 trigger=$4; shift 4
  env IN="$in" OUT="$out" CK="$ck" TRIGGER="$trigger" "$@" "$bin" run "$here/queries.sql" >> "$out.console" 2>> "$work/log"
}

# The uninterrupted reference.
mkdir -p "$work/ref/in"
for ((i = 0; i < files; i++)); do write_file "$i" "$work/ref/in"; done
run "$work/ref/in" "$work/ref/out" "$work/ref/ck" available_now

# The crashed run: files arrive while the process is killed again and again.
mkdir -p "$work/in"
added=0 kills=0
for ((c = 0; c < cycles; c++)); do
  for ((n = 0; n < 1 + RANDOM % 3 && added < files; n++)); do write_file "$added" "$work/in"; added=$((added + 1)); done
  if ((c % 3 == 2)); then
    # A deterministic crash at one of the crash points.
    point=${points[$(((c / 3) % ${#points[@]}))]}
    set +e
    timeout 20 env SLUICE_CRASH_POINT="$point" SLUICE_CRASH_AFTER=$((1 + RANDOM % 2)) \
      IN="$work/in" OUT="$work/out" CK="$work/ck" TRIGGER=available_now "$bin" run "$here/queries.sql" >> "$work/out.console" 2>> "$work/log"
    status=$?
    set -e
    [ $status -ne 0 ] && kills=$((kills + 1))
  else
    IN="$work/in" OUT="$work/out" CK="$work/ck" TRIGGER=processing_time "$bin" run "$here/queries.sql" >> "$work/out.console" 2>> "$work/log" &
    pid=$!
    sleep "0.$(printf %03d $((20 + RANDOM % 600)))"
    if kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); fi
    wait "$pid" 2>/dev/null || true
  fi
done
while ((added < files)); do write_file "$added" "$work/in"; added=$((added + 1)); done
run "$work/in" "$work/out" "$work/ck" available_now
python3 "$here/check.py" "$work/out" "$work/ref/out" $((files * rows)) "$cycles" "$kills"

#!/usr/bin/env bash
# Crash-restart harness for the sessionization example
# (examples/sessionize.rs: flat_map_groups_with_state with an event-time
# timeout, files source -> Parquet files sink). CSV click files arrive while
# the example is killed again and again (kill -9 at random moments, and
# aborts at every crash point of sluice_engine::faults) and restarted on the
# same checkpoint; a last run drains the rest. The committed sessions must
# equal those of an uninterrupted run over the same files: nothing lost,
# nothing duplicated.
#
#   tests/crash/sessionize_crash_test.sh [--cycles N] [--files F] [--rows R] [--seed S] [--bin PATH] [--keep DIR]
#
# --bin is the example binary (default: built with `cargo build --example
# sessionize`). The last line is
# `cycles=N kills=N rows_in=N rows_out=N lost=N duplicated=N`; the exit code
# is 0 only with nothing lost and nothing duplicated. Reads Parquet with
# pyarrow (installed into the kafka-py virtualenv on first use).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cycles=30 files=60 rows=40
bin_given=""
for a in "$@"; do [ "$a" = "--bin" ] && bin_given=1; done
if [ -z "$bin_given" ]; then
  (cd "$root" && cargo build --quiet --example sessionize)
  set -- "$@" --bin "${CARGO_TARGET_DIR:-$root/target}/debug/examples/sessionize"
fi
# shellcheck source=tests/crash/harness_args.sh
. "$here/harness_args.sh"
points=(after_offset_log during_sink_write after_sink_write during_state_commit during_snapshot before_commit_log during_source_listing)
"$root/scripts/kafka-py.sh" -c 'import pyarrow' 2>/dev/null ||
  "$root/scripts/kafka-py.sh" -m pip install --quiet --disable-pip-version-check pyarrow

# Input: file i holds `rows` clicks of 12 users over 100 s of event time
# starting at i * 60 s, so sessions span files, gaps close some, and some
# rows arrive late (behind the watermark) and are ignored.
write_file() { # index dir
  local i=$1 dir=$2 f
  f="$dir/.clicks-$(printf %05d "$i").csv"
  {
    echo "ts,user_id,action"
    for ((r = 0; r < rows; r++)); do
      local h=$(( (i * 7919 + r * 104729) % 1000 ))
      local sec=$(( i * 60 + (h % 100) ))
      printf '2024-01-01 %02d:%02d:%02d,u%d,a%d\n' $((sec / 3600 % 24)) $((sec / 60 % 60)) $((sec % 60)) $(( (h / 7) % 12 )) $((r % 3))
    done
  } > "$f"
  mv "$f" "$dir/clicks-$(printf %05d "$i").csv"
}

run() { # in out [env...]
  local in=$1 out=$2; shift 2
  env "$@" "$bin" --input "$in" --output "$out" >> "$work/log" 2>&1
}

mkdir -p "$work/ref/in"
for ((i = 0; i < files; i++)); do write_file "$i" "$work/ref/in"; done
run "$work/ref/in" "$work/ref/out"

mkdir -p "$work/in"
added=0 kills=0
for ((c = 0; c < cycles; c++)); do
  for ((n = 0; n < 1 + RANDOM % 3 && added < files; n++)); do write_file "$added" "$work/in"; added=$((added + 1)); done
  if ((c % 3 == 2)); then
    point=${points[$(((c / 3) % ${#points[@]}))]}
    set +e
    timeout 30 env SLUICE_CRASH_POINT="$point" SLUICE_CRASH_AFTER=$((1 + RANDOM % 2)) \
      "$bin" --input "$work/in" --output "$work/out" >> "$work/log" 2>&1
    status=$?
    set -e
    [ $status -ne 0 ] && kills=$((kills + 1))
  else
    "$bin" --input "$work/in" --output "$work/out" >> "$work/log" 2>&1 &
    pid=$!
    sleep "0.$(printf %03d $((20 + RANDOM % 500)))"
    if kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); fi
    wait "$pid" 2>/dev/null || true
  fi
done
while ((added < files)); do write_file "$added" "$work/in"; added=$((added + 1)); done
run "$work/in" "$work/out"
"$root/scripts/kafka-py.sh" "$here/sessionize_check.py" "$work/out" "$work/ref/out" $((files * rows)) "$cycles" "$kills"

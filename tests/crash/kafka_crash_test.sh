#!/usr/bin/env bash
# Kafka crash-restart harness: runs a real `sluice run` process on a
# Kafka-to-Kafka exactly-once query (tests/crash/kafka_queries.sql: JSON
# input, a filter and a projection, one Kafka transaction per batch), kills
# it again and again (kill -9 at random moments, and aborts at crash points,
# the Kafka sink's before/after commit_transaction among them), restarts it
# on the same checkpoint while input keeps arriving, then drains and reads
# the output topic with read_committed (tests/crash/kafka_check.py).
# Needs the broker of scripts/kafka.sh (`scripts/kafka.sh start`).
#
#   tests/crash/kafka_crash_test.sh [--cycles N] [--records R] [--seed S] [--bin PATH] [--keep DIR]
#
# The last line is `cycles=N kills=N rows_in=N rows_out=N lost=N duplicated=N`;
# the exit code is 0 only with nothing lost, duplicated or wrong.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cycles=20 records=2600 seed=$$ bin="" keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cycles) cycles=$2; shift 2 ;;
    --records) records=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
"$root/scripts/kafka.sh" status > /dev/null || { echo "no Kafka broker: run scripts/kafka.sh start" >&2; exit 2; }
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --quiet --bin sluice)
  bin="${CARGO_TARGET_DIR:-$root/target}/debug/sluice"
fi
RANDOM=$seed
export BOOTSTRAP IN_TOPIC OUT_TOPIC CK NO_COLOR=1
BOOTSTRAP=$("$root/scripts/kafka.sh" bootstrap)
IN_TOPIC=sluice-crash-$seed-$$-$(date +%s)-in
OUT_TOPIC=${IN_TOPIC%-in}-out
if [ -n "$keep" ]; then
  work=$keep
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"; "$root/scripts/kafka.sh" topic-delete "$IN_TOPIC" > /dev/null 2>&1 || true
        "$root/scripts/kafka.sh" topic-delete "$OUT_TOPIC" > /dev/null 2>&1 || true' EXIT
fi
CK=$work/ck
log=$work/log
# (during_sink_write is a files-sink point; the Kafka sink has its own two.)
points=(after_offset_log before_kafka_commit after_kafka_commit after_sink_write before_commit_log)
py() { "$root/scripts/kafka-py.sh" "$here/kafka_check.py" "$@"; }
# The last batch id in the offset (or commit) log, -1 if none.
last() { { ls "$CK/out/$1" 2> /dev/null || true; } | grep -E '^[0-9]+$' | sort -n | tail -n 1 | grep . || echo -1; }
# After a run: log where it stopped; count the kills inside a batch
# (planned in the offset log, not committed).
after_run() { # status
  local o c
  o=$(last offsets) c=$(last commits)
  echo "=== exit status $1 (offset log $o, commit log $c)" >> "$log"
  if [ "$1" -eq 134 ] || [ "$1" -eq 137 ]; then
    kills=$((kills + 1))
    ((o > c)) && in_batch=$((in_batch + 1))
  fi
  return 0
}

"$root/scripts/kafka.sh" topic-create "$IN_TOPIC" 3 > /dev/null
"$root/scripts/kafka.sh" topic-create "$OUT_TOPIC" 2 > /dev/null
echo "topics $IN_TOPIC $OUT_TOPIC, work dir $work" >&2

# Input arrives in chunks (about records/cycles a cycle; a killed run gets
# through about 100 records, so 130 a cycle keeps a backlog and kills land
# in batches) while the process is killed again and again. A run that ends
# by itself other than at its crash point (an error, a timeout) is a failure.
added=0 kills=0 in_batch=0 failures=0
per=$(((records + cycles - 1) / cycles))
for ((c = 0; c < cycles; c++)); do
  n=$((1 + RANDOM % (2 * per)))
  ((added + n > records)) && n=$((records - added))
  if ((n > 0)); then py produce "$BOOTSTRAP" "$IN_TOPIC" "$added" $((added + n)); added=$((added + n)); fi
  if ((c % 3 == 2)); then
    # A deterministic crash at one of the crash points (exit 0: not reached,
    # no new input).
    point=${points[$(((c / 3) % ${#points[@]}))]} after=$((1 + RANDOM % 2))
    echo "=== cycle $c: crash point $point after $after (ids < $added)" >> "$log"
    set +e
    # (in a subshell that logs bash's "Aborted" message too)
    (timeout 120 env SLUICE_CRASH_POINT="$point" SLUICE_CRASH_AFTER=$after TRIGGER=available_now \
      "$bin" run -v "$here/kafka_queries.sql"; exit $?) >> "$log" 2>&1
    status=$?
    set -e
    after_run $status
    if [ $status -ne 134 ] && [ $status -ne 0 ]; then
      failures=$((failures + 1))
      echo "cycle $c: exit status $status at crash point $point (log: $log)" >&2
    fi
  else
    # kill -9 after 0.3 to 2 s, mostly in a batch (a batch is about 0.5 s).
    ms=$((300 + RANDOM % 1701))
    delay=$((ms / 1000)).$(printf %03d $((ms % 1000)))
    echo "=== cycle $c: kill -9 after ${delay}s (ids < $added)" >> "$log"
    env -u SLUICE_CRASH_POINT TRIGGER=processing_time "$bin" run -v "$here/kafka_queries.sql" >> "$log" 2>&1 &
    pid=$!
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null || true
    set +e
    wait "$pid" 2>/dev/null
    status=$?
    set -e
    after_run $status
    if [ $status -ne 137 ]; then
      failures=$((failures + 1))
      echo "cycle $c: exit status $status before the kill (log: $log)" >&2
    fi
  fi
done
if ((added < records)); then py produce "$BOOTSTRAP" "$IN_TOPIC" "$added" "$records"; fi
echo "=== drain" >> "$log"
timeout 600 env -u SLUICE_CRASH_POINT TRIGGER=available_now "$bin" run -v "$here/kafka_queries.sql" >> "$log" 2>&1 ||
  { failures=$((failures + 1)); echo "the final drain failed (log: $log)" >&2; }
echo "$in_batch of $kills kills inside a batch; $failures runs failed" >&2
set +e
py check "$BOOTSTRAP" "$IN_TOPIC" "$OUT_TOPIC" "$records" "$cycles" "$kills"
status=$?
set -e
((failures == 0)) || exit 1
exit $status

#!/usr/bin/env bash
# Soak test: a rate source -> a windowed aggregation with a watermark -> the
# files sink, at a fixed rate, for N minutes. Samples the process's RSS and
# the watermark lag every 10 seconds and ends with one line
#
#   minutes=... batches=... rss_start_mib=... rss_end_mib=... rss_max_mib=... lag_max_s=...
#
# rss_start_mib is taken after a one-minute warm-up (or after a sixth of the
# run for runs shorter than six minutes). Fails (exit 1) when memory is not
# flat -- rss_end_mib more than 20% above rss_start_mib --, when the query
# dies, or when it runs fewer batches than half the seconds (1 s trigger).
#
# Usage: tests/soak/soak.sh --minutes N [--rate ROWS_PER_SECOND]
# SLUICE_BIN selects the binary (default: target/release/sluice, built if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes=2
rate=20000
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    *) echo "unknown argument $1; usage: soak.sh --minutes N [--rate R]" >&2; exit 2 ;;
  esac
done
target="${CARGO_TARGET_DIR:-target}"
bin="${SLUICE_BIN:-$target/release/sluice}"
if [ ! -x "$bin" ]; then
  cargo build --release --quiet
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-soak.XXXXXX")
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
export SOAK_DIR="$dir" SOAK_RATE="$rate"
RUST_LOG=warn "$bin" run tests/soak/soak.sql >"$dir/stdout.log" 2>"$dir/progress.log" &
pid=$!

total_s=$((minutes * 60))
warmup_s=60
[ "$total_s" -lt 360 ] && warmup_s=$((total_s / 6))
rss_mib() { awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$pid/status"; }
# Watermark lag: now minus the watermark of the last reported batch.
lag_s() {
  local wm
  wm=$(grep -o 'watermark [0-9T:.-]*Z' "$dir/progress.log" | tail -n 1 | cut -d' ' -f2)
  if [ -z "$wm" ]; then echo 0; return; fi
  echo $(( $(date +%s) - $(date -d "$wm" +%s) ))
}

start=$(date +%s)
rss_start="" rss_max=0 lag_max=0 rss_end=0
while :; do
  sleep 10
  now=$(date +%s)
  elapsed=$((now - start))
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "the query process died after ${elapsed}s:" >&2
    tail -n 20 "$dir/progress.log" >&2
    exit 1
  fi
  rss=$(rss_mib)
  lag=$(lag_s)
  [ "$elapsed" -ge "$warmup_s" ] && [ -z "$rss_start" ] && rss_start=$rss
  [ "$rss" -gt "$rss_max" ] && rss_max=$rss
  [ "$elapsed" -ge "$warmup_s" ] && [ "$lag" -gt "$lag_max" ] && lag_max=$lag
  rss_end=$rss
  echo "t=${elapsed}s rss_mib=$rss lag_s=$lag" >&2
  [ "$elapsed" -ge "$total_s" ] && break
done
kill -INT "$pid"
wait "$pid" || true
batches=$(grep -c "^query 'soak' batch" "$dir/progress.log" || true)
echo "minutes=$minutes batches=$batches rss_start_mib=$rss_start rss_end_mib=$rss_end rss_max_mib=$rss_max lag_max_s=$lag_max"
limit=$(( rss_start + rss_start / 5 ))
if [ "$rss_end" -gt "$limit" ]; then
  echo "memory is not flat: rss_end_mib=$rss_end is more than 20% above rss_start_mib=$rss_start" >&2
  exit 1
fi
if [ "$batches" -lt $((total_s / 2)) ]; then
  echo "too few batches ($batches in ${total_s}s at a 1 s trigger)" >&2
  exit 1
fi

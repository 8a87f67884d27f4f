#!/usr/bin/env bash
# A short AFL run of each fuzz target in fuzz/ (SQL statement parser, CSV,
# JSON and Parquet readers), starting from the corpus kept in
# fuzz/corpus/<target>/. Installs cargo-afl if missing. Fails when AFL finds
# a crash (the crashing inputs are printed; add them to the corpus once fixed).
#
# Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   (default 20)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs="${1:-20}"
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo afl --version >/dev/null 2>&1; then
  cargo install cargo-afl --locked --quiet
fi
# AFL++ itself (built once into cargo-afl's data directory).
if ! msg=$(cargo afl config --build 2>&1); then
  case "$msg" in
    *"already built"*) ;;
    *) echo "$msg" >&2; exit 1 ;;
  esac
fi
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/sluice-fuzz-target}"
cd "$root/fuzz"
cargo afl build --release --quiet
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1
out=$(mktemp -d "${TMPDIR:-/tmp}/sluice-fuzz.XXXXXX")
status=0
for target in sql_parser csv_reader json_reader; do
  cargo afl fuzz -V "$secs" -i "corpus/$target" -o "$out/$target" "$CARGO_TARGET_DIR/release/$target" >"$out/$target.log" 2>&1 || {
    echo "afl-fuzz did not run for $target:" >&2; tail -n 20 "$out/$target.log" >&2; status=1; continue; }
  crashes=$(find "$out/$target" -path '*/crashes/id:*' | wc -l)
  execs=$(awk -F: '/execs_done/ { gsub(/ /, "", $2); print $2 }' "$out"/"$target"/default/fuzzer_stats 2>/dev/null || echo "?")
  echo "fuzz $target: ${secs}s, $execs executions, $crashes crashes"
  if [ "$crashes" -gt 0 ]; then
    find "$out/$target" -path '*/crashes/id:*' -exec sh -c 'echo "--- $1"; od -c "$1" | head -n 5' _ {} \; >&2
    status=1
  fi
done
rm -rf "$out"
exit $status

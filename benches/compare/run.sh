#!/usr/bin/env bash
# Sluice vs Spark Structured Streaming on the Nexmark queries (benches/nexmark).
#
#   benches/compare/run.sh --events 10000000
#
# Installs PySpark into a virtualenv, builds Sluice (release) unless SLUICE_BIN
# is set, generates the events once, then runs compare.py. See README.md.
#
# Options (the rest are passed to compare.py):
#   --events N       events in the stream (default 10000000)
#   --query NAME     a query of benches/nexmark (repeatable; default all)
#   --skip-sluice    run only Spark          --skip-spark   run only Sluice
#   --check          compare rows per micro-batch (Sluice vs Spark) instead of
#                    timing; use a small N, e.g. --events 200000
#   --out FILE       Markdown results (default target/compare/results.md)
#   --spark-runs K   measured Spark runs per query, median reported (default 1)
#   --driver-memory M, --spark-conf KEY=VALUE (repeatable): Spark settings
#   --sluice-arg=ARG extra argument of `sluice bench nexmark` (repeatable), e.g.
#                    --sluice-arg=--state-checkpoint-interval=10
# Environment:
#   SLUICE_BIN             use this sluice binary instead of `cargo build --release`
#   SLUICE_COMPARE_VENV    virtualenv (default ~/.cache/sluice-compare-venv)
#   DATA                   events directory (default ~/.cache/sluice-nexmark/events-N)
#   OUT                    same as --out
#   PYTHON                 interpreter for the virtualenv (default python3, >= 3.11)
#   SPARK_DRIVER_MEMORY    default 4g
set -euo pipefail

PYSPARK_VERSION=4.3.0
PY4J_VERSION=0.10.9.9

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

events=10000000
pass=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --events=*) events="${1#--events=}"; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#--out=}"; shift ;;
    --query) pass+=(--query "$2"); shift 2 ;;
    --query=*) pass+=(--query "${1#--query=}"); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done
[[ "$events" =~ ^[0-9]+$ ]] || { echo "--events needs a number, got '$events'" >&2; exit 2; }

say() { printf '\n== %s\n' "$*"; }

# ---- Java (Spark 4 needs 17 or newer)
command -v java >/dev/null || { echo "java not found: install a JDK 17+ (e.g. apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
java_line="$(java -version 2>&1 | head -n1)"
java_major="$(sed -E 's/.*version "([0-9]+)(\.[^"]*)?".*/\1/' <<<"$java_line")"
if [[ ! "$java_major" =~ ^[0-9]+$ ]] || (( java_major < 17 )); then
  echo "Spark $PYSPARK_VERSION needs Java 17 or newer; java -version says: $java_line" >&2
  exit 1
fi
say "java: $java_line"

# ---- PySpark in a virtualenv
venv="${SLUICE_COMPARE_VENV:-$HOME/.cache/sluice-compare-venv}"
if ! "$venv/bin/python" -c "import pyspark, sys; sys.exit(pyspark.__version__ != '$PYSPARK_VERSION')" 2>/dev/null; then
  py="${PYTHON:-python3}"
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "pyspark $PYSPARK_VERSION needs Python 3.11+; $py is $("$py" --version 2>&1)" >&2; exit 1; }
  say "installing pyspark==$PYSPARK_VERSION into $venv"
  [[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet "pyspark==$PYSPARK_VERSION" "py4j==$PY4J_VERSION"
fi
say "pyspark $("$venv/bin/python" -c 'import pyspark; print(pyspark.__version__)') in $venv"

# ---- Sluice
if [[ -n "${SLUICE_BIN:-}" ]]; then
  sluice="$SLUICE_BIN"
else
  say "cargo build --release"
  (cd "$repo" && cargo build --release --bin sluice)
  target_dir="${CARGO_TARGET_DIR:-target}"
  [[ "$target_dir" = /* ]] || target_dir="$repo/$target_dir"
  sluice="$target_dir/release/sluice"
fi
[[ -x "$sluice" ]] || { echo "no sluice binary at $sluice" >&2; exit 1; }
say "sluice: $sluice ($("$sluice" --version))"

# ---- Events, generated once per N
data="${DATA:-$HOME/.cache/sluice-nexmark/events-$events}"
marker="$data/.generated"
if [[ -f "$marker" ]]; then
  grep -qx "events=$events .*" <(head -n1 "$marker") ||
    { echo "$data holds other events ($(head -n1 "$marker")), not $events: set DATA to another directory" >&2; exit 1; }
  say "reusing $events events in $data ($(head -n1 "$marker"))"
else
  # Only ever delete what an interrupted generation left.
  if [[ -d "$data" ]] && [[ -n "$(ls -A "$data" | grep -vxE 'person|auction|bid' || true)" ]]; then
    echo "$data exists and was not written by this script (no $marker): remove it or set DATA elsewhere" >&2
    exit 1
  fi
  say "generating $events events as Parquet under $data"
  rm -rf "$data"
  mkdir -p "$(dirname "$data")"
  "$sluice" nexmark generate --events "$events" --out "$data" --format parquet
  # Both engines take files oldest first (Sluice: by modification time, then
  # path; Spark: by modification time). Give every file its own second, in
  # path order, so both see the same file in each micro-batch.
  base=$(( $(date +%s) - 86400 ))
  for table in person auction bid; do
    i=0
    while IFS= read -r f; do
      touch -d "@$(( base + i ))" "$f"
      i=$(( i + 1 ))
    done < <(find "$data/$table" -maxdepth 1 -type f -name '*.parquet' | sort)
  done
  printf 'events=%s by %s at %s\n' "$events" "$("$sluice" --version)" "$(date -u +%FT%TZ)" >"$marker"
fi

# ---- Compare
out="${OUT:-$repo/target/compare/results.md}"
args=(--events "$events" --data "$data" --sluice "$sluice" --out "$out"
      --driver-memory "${SPARK_DRIVER_MEMORY:-4g}")
cd "$repo"
exec "$venv/bin/python" "$here/compare.py" "${args[@]}" "${pass[@]+"${pass[@]}"}"

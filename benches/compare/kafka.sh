#!/usr/bin/env bash
# Sluice vs Spark Structured Streaming with the Nexmark bids in Kafka.
#
#   benches/compare/kafka.sh --events 10000000            # throughput: q0, q1, tumble_count
#   benches/compare/kafka.sh --events 200000 --check      # same rows per micro-batch on both?
#   benches/compare/kafka.sh latency --rate 10000 --seconds 60 [--engine spark]
#
# Starts the broker of scripts/kafka.sh unless it is running (and leaves it
# running: `scripts/kafka.sh stop` ends it; a start wipes its data), writes
# the bids of the N generated events into the topic nexmark-bids-N once
# (kafka_load.py; skipped when the topic already holds them), then runs
# kafka_compare.py (or kafka_latency.py). See README.md, "Kafka".
#
# Options (throughput; the rest are passed to kafka_compare.py):
#   --events N        events generated (default 10000000; the topic holds their bids)
#   --partitions P    partitions of the topic when it is created (default 2)
#   --query NAME      repeatable (default q0, q1, tumble_count)
#   --max-offsets M   records per micro-batch at most, both engines (default bids / 20)
#   --runs K          measured runs per query and engine, median (default 1)
#   --warmup W        discarded runs first (default 1)
#   --skip-sluice, --skip-spark, --check, --out FILE, --driver-memory M, --spark-conf K=V
# Options of `latency` are kafka_latency.py's (--help lists them).
# Environment:
#   SLUICE_BIN            sluice binary (default: cargo build --release)
#   SPARK_VENV            virtualenv with pyspark (default ~/.cache/sluice-compare-venv-4.2.0,
#                         made with pyspark==$SPARK_VERSION when missing)
#   SPARK_VERSION         Spark version of that venv and of spark-sql-kafka-0-10_2.13 (default 4.2.0,
#                         the newest spark-sql-kafka-0-10 on Maven Central)
#   SPARK_KAFKA_PACKAGE   override the package coordinate (e.g. to pair pyspark 4.3.0 with the 4.2.0 connector)
#   DATA                  events directory (default ~/.cache/sluice-nexmark/events-N)
#   SLUICE_KAFKA_BOOTSTRAP broker address (default 127.0.0.1:19092)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
say() { printf '\n== %s\n' "$*"; }

mode=throughput
if [[ "${1:-}" == latency ]]; then mode=latency; shift; fi

events=10000000
partitions=2
pass=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --events) events="$2"; shift 2 ;;
    --events=*) events="${1#--events=}"; shift ;;
    --partitions) partitions="$2"; shift 2 ;;
    --partitions=*) partitions="${1#--partitions=}"; shift ;;
    -h|--help)
      if [[ "$mode" == latency ]]; then exec "$repo/scripts/kafka-py.sh" "$here/kafka_latency.py" --help; fi
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done
[[ "$events" =~ ^[0-9]+$ ]] || { echo "--events needs a number, got '$events'" >&2; exit 2; }
bootstrap="${SLUICE_KAFKA_BOOTSTRAP:-127.0.0.1:19092}"

# ---- Spark (pyspark and spark-sql-kafka-0-10 of the same version)
spark_version="${SPARK_VERSION:-4.2.0}"
spark_venv="${SPARK_VENV:-$HOME/.cache/sluice-compare-venv-$spark_version}"
package="${SPARK_KAFKA_PACKAGE:-org.apache.spark:spark-sql-kafka-0-10_2.13:$spark_version}"
if ! "$spark_venv/bin/python" -c "import pyspark" 2>/dev/null; then
  py="${PYTHON:-python3}"
  say "installing pyspark==$spark_version into $spark_venv"
  [[ -x "$spark_venv/bin/python" ]] || "$py" -m venv "$spark_venv"
  "$spark_venv/bin/python" -m pip install --quiet "pyspark==$spark_version"
fi
say "pyspark $("$spark_venv/bin/python" -c 'import pyspark; print(pyspark.__version__)') in $spark_venv, $package"

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

# ---- Broker, and pyarrow next to confluent-kafka for the loader
if "$repo/scripts/kafka.sh" status >/dev/null 2>&1; then
  say "broker: $("$repo/scripts/kafka.sh" status)"
else
  say "starting the broker (scripts/kafka.sh start; it stays running: scripts/kafka.sh stop)"
  "$repo/scripts/kafka.sh" start
fi
"$repo/scripts/kafka-py.sh" -c 'import pyarrow' 2>/dev/null ||
  "$repo/scripts/kafka-py.sh" -m pip install --quiet --disable-pip-version-check pyarrow

if [[ "$mode" == latency ]]; then
  exec "$repo/scripts/kafka-py.sh" "$here/kafka_latency.py" --sluice "$sluice" --spark-python "$spark_venv/bin/python" \
    --spark-package "$package" --bootstrap "$bootstrap" ${pass[@]+"${pass[@]}"}
fi

# ---- Events (as run.sh generates them), then the topic
data="${DATA:-$HOME/.cache/sluice-nexmark/events-$events}"
if [[ ! -f "$data/.generated" ]]; then
  [[ ! -e "$data" ]] || { echo "$data exists but has no .generated marker: remove it or set DATA" >&2; exit 1; }
  say "generating $events events as Parquet under $data"
  mkdir -p "$(dirname "$data")"
  "$sluice" nexmark generate --events "$events" --out "$data" --format parquet
  # As run.sh does, so that run.sh can reuse the directory: one second per file, in path order.
  base=$(( $(date +%s) - 86400 ))
  for table in person auction bid; do
    i=0
    while IFS= read -r f; do
      touch -d "@$(( base + i ))" "$f"
      i=$(( i + 1 ))
    done < <(find "$data/$table" -maxdepth 1 -type f -name '*.parquet' | sort)
  done
  printf 'events=%s by %s at %s\n' "$events" "$("$sluice" --version)" "$(date -u +%FT%TZ)" >"$data/.generated"
fi
topic="nexmark-bids-$events"
say "topic $topic ($partitions partitions)"
summary="$("$repo/scripts/kafka-py.sh" "$here/kafka_load.py" --data "$data" --topic "$topic" \
  --partitions "$partitions" --bootstrap "$bootstrap" | tail -n1)"
records="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["records"])' "$summary")"

# ---- Compare
cd "$repo"
exec "$spark_venv/bin/python" "$here/kafka_compare.py" --topic "$topic" --records "$records" \
  --partitions "$partitions" --bootstrap "$bootstrap" --sluice "$sluice" --spark-package "$package" \
  ${pass[@]+"${pass[@]}"}

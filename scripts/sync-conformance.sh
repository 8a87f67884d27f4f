#!/usr/bin/env bash
# Refresh tests/stt/conformance/ from ../shared/conformance/ (the shared,
# Spark-generated conformance suite). Never edit the copies by hand.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/../shared/conformance"
[ -d "$src" ] || { echo "no $src to sync from" >&2; exit 1; }
rm -f "$root"/tests/stt/conformance/*.stt
cp "$src"/*.stt "$root/tests/stt/conformance/"
echo "synced $(ls "$root"/tests/stt/conformance/*.stt | wc -l) files from $src"

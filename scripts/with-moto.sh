#!/usr/bin/env bash
# Run a command with a local S3 server (moto) and the AWS_* variables
# pointing at it, e.g.:
#   scripts/with-moto.sh cargo test --test integration -- --ignored
# Installs moto into a virtualenv under $SLUICE_TOOLS (default
# ~/.cache/sluice-tools) the first time.
set -euo pipefail
tools="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"
port="${SLUICE_MOTO_PORT:-15000}"
if [ ! -x "$tools/moto/bin/moto_server" ]; then
  python3 -m venv "$tools/moto"
  "$tools/moto/bin/pip" install --quiet 'moto[server]'
fi
"$tools/moto/bin/moto_server" -H 127.0.0.1 -p "$port" > "$tools/moto.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -s "http://127.0.0.1:$port/" > /dev/null && break
  sleep 0.1
done
export SLUICE_TEST_S3_BUCKET=sluice-test
curl -s -X PUT "http://127.0.0.1:$port/$SLUICE_TEST_S3_BUCKET" > /dev/null
export AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
"$@"

#!/usr/bin/env bash
# Run Python with the confluent-kafka client (librdkafka, the same client
# family as the Rust rdkafka crate) installed, e.g. to produce or check test
# data against the broker of scripts/kafka.sh:
#   scripts/kafka-py.sh -c 'import confluent_kafka; print(confluent_kafka.version())'
#   scripts/kafka-py.sh tests/some_check.py ARGS...
# Creates the virtualenv $SLUICE_KAFKA_VENV (default
# ~/.cache/sluice-kafka-venv) from PyPI the first time.
set -euo pipefail
venv="${SLUICE_KAFKA_VENV:-$HOME/.cache/sluice-kafka-venv}"
# The marker is written only after a successful install.
if [ ! -f "$venv/.installed" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check confluent-kafka
  "$venv/bin/python" -c 'import confluent_kafka'
  touch "$venv/.installed"
fi
exec "$venv/bin/python" "$@"

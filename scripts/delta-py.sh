#!/usr/bin/env bash
# Run Python with the `deltalake` package (delta-rs's Python binding, an
# independent reader of Delta tables) and pyarrow installed, e.g. to check a
# table the delta sink wrote:
#   scripts/delta-py.sh -c 'import deltalake; print(deltalake.__version__)'
#   scripts/delta-py.sh tests/crash/delta_check.py ARGS...
# Creates the virtualenv $SLUICE_DELTA_VENV (default
# ~/.cache/sluice-delta-venv) from PyPI the first time.
set -euo pipefail
venv="${SLUICE_DELTA_VENV:-$HOME/.cache/sluice-delta-venv}"
# The marker is written only after a successful install.
if [ ! -f "$venv/.installed" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check deltalake pyarrow
  "$venv/bin/python" -c 'import deltalake, pyarrow'
  touch "$venv/.installed"
fi
exec "$venv/bin/python" "$@"

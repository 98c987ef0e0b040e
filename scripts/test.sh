#!/usr/bin/env bash
# Set up a virtual environment (CPU torch) and run the test suite.
# usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -r requirements.txt
"$VENV/bin/python" -m pytest -q "$@"

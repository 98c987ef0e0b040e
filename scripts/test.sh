#!/usr/bin/env bash
# Set up a virtual environment (CPU torch) and run the test suite.
# usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -r requirements.txt
# In parallel (pytest-xdist): one worker per logical CPU (PYTEST_WORKERS=N to choose; "-n 0" in the
# arguments runs serially). --dist loadfile runs each test file on one worker, so a module-scoped
# fixture (an end-to-end run several tests check) is computed once.
"$VENV/bin/python" -m pytest -q -n "${PYTEST_WORKERS:-logical}" --dist loadfile "$@"

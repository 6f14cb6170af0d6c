#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run all tests under the `test` profile: ruff, the unit tests of
# course_lib, every notebook in book/ executed by nbmake (in parallel, one torch thread each),
# then the browser tests of the built book (built here under `test` if _build/html is missing;
# skipped with a message when Chromium is not installed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VENV:-.venv}"
export COURSE_PROFILE=test COURSE_THREADS=1 MPLBACKEND=Agg
WORKERS="${WORKERS:-2}"
"$VENV/bin/ruff" check .
"$VENV/bin/python" -m pytest tests/ -q -n "$WORKERS"
if compgen -G "book/*.ipynb" >/dev/null; then
  "$VENV/bin/python" -m pytest --nbmake book/ -q -n "$WORKERS" --nbmake-timeout=600
fi
"$VENV/bin/python" -m pytest browser_tests/ -q -rs

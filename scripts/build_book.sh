#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and build the HTML book into _build/html, executing every
# chapter under $COURSE_PROFILE (default: the hardware's profile, `gpu` with CUDA, else `cpu`).
# Warnings fail the build (-W); a notebook that fails to execute fails it and is named.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VENV:-.venv}"
"$VENV/bin/python" -m jupyter_book build . -W -n --keep-going "$@"
echo "The book is in _build/html/index.html (profile: ${COURSE_PROFILE:-hardware default})"

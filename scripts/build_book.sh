#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and build the HTML book into _build/html, executing every
# chapter under $COURSE_PROFILE (default: the hardware's profile, `gpu` with CUDA, else `cpu`).
# Warnings fail the build (-W); a notebook that fails to execute fails it and is named.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VENV:-.venv}"
profile=$("$VENV/bin/python" -c 'from course_lib.config import get_profile; print(get_profile())')
# The execution cache does not know the profile: results of another profile are stale.
if [ -f _build/.profile ] && [ "$(cat _build/.profile)" != "$profile" ]; then
  echo "profile changed from $(cat _build/.profile) to $profile: clearing the execution cache"
  rm -rf _build/.jupyter_cache
fi
mkdir -p _build && echo "$profile" > _build/.profile
"$VENV/bin/jupyter-book" build . -W -n --keep-going "$@"
echo "The book is in _build/html/index.html (profile: $profile)"

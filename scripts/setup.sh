#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install everything the course needs.
#   TORCH_SPEC       what to install for torch when none is present (default: torch==2.13.0)
#   TORCH_INDEX_URL  an extra index for torch, e.g. https://download.pytorch.org/whl/cu126
#   VENV             where the environment lives (default: .venv in the repository)
# torch is installed first and on its own; pyproject.toml gives torch as a range that the
# installed version meets, so pip never swaps it for another build. Never add `-U` here.
# Then course_lib (editable) with the extras `book` and `test`, the book's Sphinx stack held at
# the versions in constraints/book.txt (requirements.txt points to the same).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "Python 3.10 or newer is needed (found $("$PYTHON" --version))" >&2; exit 1; }
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c 'import torch' 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install --extra-index-url "$TORCH_INDEX_URL" "${TORCH_SPEC:-torch==2.13.0}"
  else
    "$PY" -m pip install "${TORCH_SPEC:-torch==2.13.0}"
  fi
fi
"$PY" -m pip install -c constraints/book.txt -e ".[book,test]"
"$PY" -c 'import torch, course_lib; print("torch", torch.__version__, "| course_lib", course_lib.__version__, "| CUDA:", torch.cuda.is_available())'

#!/usr/bin/env bash
# Run every chapter under COURSE_PROFILE=gpu on a machine with a CUDA GPU, each training loop capped
# at a few steps, and print the measured peak GPU memory (torch.cuda.max_memory_allocated) and the
# wall time of each chapter: a check that "Run all" works on a GPU, in well under 10 minutes.
#
#   bash benchmarks/gpu_smoke.sh [--chapters "ch5 ch6"] [--max-steps N] [--timeout SECONDS]
#   bash benchmarks/gpu_smoke.sh --dry-run [--chapters ch2]   # no GPU needed: same path, `test` profile, CPU
#
# The step cap: COURSE_MAX_STEPS=N is set, and a sitecustomize.py written to a temporary folder on
# PYTHONPATH caps course_lib.training.Trainer.run at N steps in the notebook kernels (every training
# loop of the course runs through it: fit, the IRN/HCFlow/KernelGAN loops). The cells' time limits
# and all non-training work run as in a real "Run all". Checkpoints go to a temporary folder
# (IRN_RUN_DIR, HCFLOW_RUN_DIR), so nothing is resumed from an earlier run. Exit status: 0 when
# every notebook ran, 1 otherwise, 2 for bad arguments or no GPU without --dry-run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
DRY=0
CHAPTERS=""
MAX_STEPS=20
TIMEOUT=900

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --chapters) CHAPTERS="${2:?--chapters needs a list, e.g. \"ch5 ch6\"}"; shift ;;
    --max-steps) MAX_STEPS="${2:?--max-steps needs a number}"; shift ;;
    --timeout) TIMEOUT="${2:?--timeout needs seconds}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_smoke.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$MAX_STEPS" in ''|*[!0-9]*) echo "gpu_smoke.sh: --max-steps must be a positive integer" >&2; exit 2 ;; esac

if [ "$DRY" = 1 ]; then
  export COURSE_PROFILE=test COURSE_THREADS=${COURSE_THREADS:-1}
else
  export COURSE_PROFILE=gpu
  if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_smoke.sh: no CUDA GPU here; use --dry-run to check the script on the CPU (test profile)" >&2
    exit 2
  fi
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/shim"
cat > "$WORK/shim/sitecustomize.py" <<'EOF'
# Written by benchmarks/gpu_smoke.sh: cap every course_lib training loop at $COURSE_MAX_STEPS steps.
import os

_cap = int(os.environ.get("COURSE_MAX_STEPS") or 0)
if _cap > 0:
    try:
        from course_lib import training as _training
    except Exception:  # not the course's environment: leave it alone
        _training = None
    if _training is not None:
        _run = _training.Trainer.run

        def _capped(self, steps, *args, **kwargs):
            return _run(self, min(steps, _cap), *args, **kwargs)

        _training.Trainer.run = _capped
EOF
export PYTHONPATH="$WORK/shim${PYTHONPATH:+:$PYTHONPATH}"
export COURSE_MAX_STEPS="$MAX_STEPS" MPLBACKEND=Agg
export IRN_RUN_DIR="$WORK/irn" HCFLOW_RUN_DIR="$WORK/hcflow"

echo "profile $COURSE_PROFILE, training loops capped at $COURSE_MAX_STEPS steps, $([ "$DRY" = 1 ] && echo 'dry run on the CPU' || echo 'on the GPU')"
cd "$ROOT"
"$PYTHON" - "$TIMEOUT" $CHAPTERS <<'EOF'
import json
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

timeout, wanted = int(sys.argv[1]), sys.argv[2:]
books = sorted(Path("book").glob("ch*.ipynb"))
if wanted:
    books = [b for b in books if any(b.name.startswith(w) for w in wanted)]
    if not books:
        sys.exit(f"gpu_smoke.sh: no chapter matches {wanted}")
PROBE = ("import json as _j, resource as _r, torch as _t\n"
         "print('SMOKE ' + _j.dumps({'cuda': _t.cuda.is_available(), 'peak_gb': _t.cuda.max_memory_allocated() / 1e9 "
         "if _t.cuda.is_available() else None, 'rss_gb': _r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1e6}))")
rows, failed, start_all = [], [], time.perf_counter()
for book in books:
    nb = nbformat.read(book, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(book.parent)}}).execute()
        text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
        probe = json.loads(text.split("SMOKE ", 1)[1])
        status = "ok"
    except Exception as err:  # noqa: BLE001 - report every chapter, then fail
        probe, status = {}, f"FAILED: {type(err).__name__}: {str(err).strip().splitlines()[-1][:200] if str(err).strip() else ''}"
        failed.append(book.stem)
    seconds = time.perf_counter() - start
    peak = probe.get("peak_gb")
    memory = f"{peak:.2f} GB GPU" if peak is not None else (f"{probe['rss_gb']:.2f} GB RSS (no GPU)" if probe else "-")
    rows.append((book.stem, f"{seconds:.0f} s", memory, status))
    print(f"{book.stem:<24}{seconds:>8.0f} s   {memory:<24}{status}", flush=True)
print(f"{'total':<24}{time.perf_counter() - start_all:>8.0f} s")
print("peak GPU memory = torch.cuda.max_memory_allocated() in the notebook's kernel (without the CUDA context)")
sys.exit(1 if failed else 0)
EOF

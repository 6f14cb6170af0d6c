"""Print the wall time of the book build, of each notebook under the `test` profile, of the
unit tests and of the browser tests, so that chapters can be held to a budget (60 s per notebook under `test`).

    .venv/bin/python benchmarks/run_times.py [--skip-build] [--profile test] [notebooks...]

The build is timed into a temporary folder with a fresh execution cache, so it measures a full
execution; notebooks are executed one at a time with nbclient (as nbmake does).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from course_lib.config import PROFILES

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = str(Path(sys.executable).with_name("jupyter-book"))


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode:
        print(proc.stderr[-2000:], file=sys.stderr)
    return time.perf_counter() - start, proc.returncode


def time_notebook(path: Path, env: dict[str, str]) -> float:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    old = dict(os.environ)
    os.environ.update(env)
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        return time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(old)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to time (default: all in book/)")
    parser.add_argument("--profile", default="test", choices=PROFILES)
    parser.add_argument("--skip-build", action="store_true", help="do not time the book build")
    parser.add_argument("--skip-tests", action="store_true", help="do not time the unit tests")
    parser.add_argument("--skip-browser", action="store_true", help="do not time the browser tests")
    args = parser.parse_args()
    env = {**os.environ, "COURSE_PROFILE": args.profile, "MPLBACKEND": "Agg"}
    if args.profile == "test":
        env["COURSE_THREADS"] = "1"
    rows: list[tuple[str, float, str]] = []

    notebooks = [Path(p).resolve() for p in args.notebooks] or sorted((ROOT / "book").glob("*.ipynb"))
    for path in notebooks:
        try:
            seconds, status = time_notebook(path, env), "ok"
        except Exception as err:  # report and go on: a benchmark prints figures, it does not stop
            seconds, status = float("nan"), f"FAILED: {type(err).__name__}"
        rows.append((f"notebook {path.relative_to(ROOT)}", seconds, status))
        print(f"{rows[-1][0]:<55} {seconds:8.1f} s  {status}", flush=True)

    if not args.skip_tests:
        seconds, rc = run([sys.executable, "-m", "pytest", "tests/", "-q", "-n", "2"], env)
        rows.append(("unit tests (pytest -n 2)", seconds, "ok" if rc == 0 else f"exit {rc}"))
        print(f"{rows[-1][0]:<55} {seconds:8.1f} s  {rows[-1][2]}", flush=True)

    if not args.skip_browser:
        seconds, rc = run([sys.executable, "-m", "pytest", "browser_tests/", "-q"], env)
        rows.append(("browser tests (needs _build/html; builds it if missing)", seconds,
                      "ok" if rc == 0 else f"exit {rc}"))
        print(f"{rows[-1][0]:<55} {seconds:8.1f} s  {rows[-1][2]}", flush=True)

    if not args.skip_build:
        with tempfile.TemporaryDirectory() as tmp:
            seconds, rc = run([JUPYTER_BOOK, "build", ".", "-W", "-n",
                               "--keep-going", "--path-output", tmp], env)
        rows.append((f"book build ({args.profile} profile, fresh cache)", seconds,
                     "ok" if rc == 0 else f"exit {rc}"))
        print(f"{rows[-1][0]:<55} {seconds:8.1f} s  {rows[-1][2]}", flush=True)

    print(f"\nsummary (profile {args.profile})")
    for name, seconds, status in rows:
        print(f"  {name:<55} {seconds:8.1f} s  {status}")
    return 0 if all(s == "ok" for *_, s in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

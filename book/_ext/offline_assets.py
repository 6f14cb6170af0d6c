"""Sphinx extension: make the built book work without any outside connection.

* MathJax 3 is served from the book's own ``_static/mathjax`` folder, copied from the
  ``django-static-mathjax`` package (MathJax 3.2.2, Apache-2.0) instead of a CDN, so formulas
  render offline and in the browser tests.
* Notebooks executed for the book see ``COURSE_STATIC_BUILD=1`` (kernels inherit the build's
  environment): ``course_lib`` then prints one summary line instead of a live progress bar, skips
  ipywidgets explorers, and ``TQDM_DISABLE=1`` silences other tqdm bars, so no page needs the
  widget JavaScript from a CDN.
* Script tags that an extension registers twice (sphinx-thebe's configuration under
  Jupyter Book 1.0) are dropped, which otherwise raise "Identifier ... has already been declared".
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

MATHJAX_DIR = "mathjax"  # under _static


def _mathjax_source() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise ExtensionError("MathJax is not installed: pip install django-static-mathjax "
                             "(it is in requirements.txt)")
    es5 = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").exists():
        raise ExtensionError(f"MathJax files not found in {es5}")
    return es5


def _use_local_mathjax(app: Sphinx) -> None:
    _mathjax_source()  # fail early, with a clear message, if MathJax is missing
    app.config.mathjax_path = f"{MATHJAX_DIR}/tex-chtml.js"


def _copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    es5 = _mathjax_source()
    target = Path(app.outdir) / "_static" / MATHJAX_DIR
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / "tex-chtml.js", target / "tex-chtml.js")
    # What tex-chtml.js loads on demand: TeX extensions (e.g. boldsymbol), the CHTML fonts, the
    # menu and accessibility components. The SVG output and the other combined builds are skipped.
    for part in ("input", Path("output") / "chtml", "ui", "a11y", "sre", "adaptors"):
        shutil.copytree(es5 / part, target / part, dirs_exist_ok=True)


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        # an inline script has filename None or "" depending on who added it
        name = getattr(script, "filename", script) or ""
        key = (str(name), tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app: Sphinx) -> dict:
    os.environ["COURSE_STATIC_BUILD"] = "1"
    os.environ.setdefault("TQDM_DISABLE", "1")
    app.connect("builder-inited", _use_local_mathjax)
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

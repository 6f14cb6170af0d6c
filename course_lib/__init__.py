"""course_lib: the library behind the executable course on super-resolution as an inverse problem.

Every chapter of the book imports from here; the notebooks teach and plot, the library holds the
reusable code (degradation operators, metrics, flows, the paper models, one training loop).

The subpackages and modules load lazily (PEP 562): ``import course_lib`` is instant, and
``course_lib.data``, ``course_lib.hcflow``, ... are imported the first time they are touched
(``from course_lib import *`` imports them all). Your own images from the command line:
``python -m course_lib --help`` (:mod:`course_lib.cli`).
"""

# The one place the version lives: pyproject.toml reads it without importing course_lib, which
# works while it stays a plain string literal.
__version__ = "0.2.0"

__all__ = [
    "amortised_map", "checks", "config", "data", "degradation", "evaluation", "features", "flows", "hcflow",
    "irn", "kernelgan", "losses", "metrics", "models", "rescaling", "training", "viz", "zssr",
]

# importable as attributes too, but not part of the library that `import *` brings in
_ALSO = ("cli",)


def __getattr__(name: str):
    """Import a subpackage or module the first time it is used as ``course_lib.<name>``."""
    if name in __all__ or name in _ALSO:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")  # sets the attribute: called once per name
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}; its subpackages and modules: "
                         f"{', '.join(__all__)}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_ALSO))

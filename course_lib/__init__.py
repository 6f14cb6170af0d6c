"""course_lib: the library behind the executable course on super-resolution as an inverse problem.

Every chapter of the book imports from here; the notebooks teach and plot, the library holds the
reusable code (degradation operators, metrics, flows, the paper models, one training loop).
"""

# The one place the version lives: pyproject.toml reads it without importing course_lib, which
# works while it stays a plain string literal.
__version__ = "0.2.0"

"""course_lib: the library behind the executable course on super-resolution as an inverse problem.

Every chapter of the book imports from here; the notebooks teach and plot, the library holds the
reusable code (degradation operators, metrics, flows, the paper models, one training loop).
"""

__version__ = "0.1.0"

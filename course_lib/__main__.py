"""``python -m course_lib``: your own images with the course's methods (:mod:`course_lib.cli`)."""

import sys

from course_lib.cli import main

if __name__ == "__main__":
    sys.exit(main())

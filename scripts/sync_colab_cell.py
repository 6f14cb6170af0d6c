"""Write the Colab set-up cell into every chapter from its one source, templates/chapter.ipynb.

The repository URL, the git ref to install and the oldest course_lib version the chapters need live
in that template cell only; tests/test_book.py checks that every chapter carries the same cell and
that the URL is _config.yml's and the version is course_lib's. Run after editing the template:

    python scripts/sync_colab_cell.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def template_cell() -> list[str]:
    template = json.loads((ROOT / "templates/chapter.ipynb").read_text())
    return next(c for c in template["cells"] if c["cell_type"] == "code")["source"]


def main() -> int:
    source = template_cell()
    changed = []
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        if cell["source"] != source:
            cell["source"] = list(source)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(path.name)
    print(f"Colab set-up cell updated in {len(changed)} notebook(s): {', '.join(changed) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

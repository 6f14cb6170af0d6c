"""Convert chapter citations to per-page footnote citations (run once per new chapter).

Sphinxcontrib-bibtex gives "duplicate citation" warnings (fatal under -W) when one key is cited
on several pages that each have a local bibliography. Footnote citations ({footcite} and one
{footbibliography} per page) are local to the page and never collide.

    python scripts/footcite.py book/intro.md book/*.ipynb
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

CITE = re.compile(r"\{cite(:[a-z]+)?\}`")
BIBLIOGRAPHY = re.compile(r"```\{bibliography\}[^`]*```", re.S)


def convert(text: str) -> str:
    text = CITE.sub(lambda m: "{footcite" + (m.group(1) or ":p") + "}`", text)
    return BIBLIOGRAPHY.sub("```{footbibliography}\n```", text)


def main(paths: list[str]) -> None:
    for name in paths:
        path = Path(name)
        if path.suffix == ".ipynb":
            nb = json.loads(path.read_text())
            for cell in nb["cells"]:
                if cell["cell_type"] == "markdown":
                    src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
                    cell["source"] = convert(src).splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        else:
            path.write_text(convert(path.read_text()))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Structure of the book: every chapter follows the template and the configuration is sound."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
NOTEBOOKS = sorted(p for p in (ROOT / "book").glob("*.ipynb"))


def toc_files(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root"):
                yield value
            else:
                yield from toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from toc_files(item)


def test_toc_points_at_existing_files():
    for entry in toc_files(TOC):
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")), entry


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_template(path):
    nb = json.loads(path.read_text())
    assert f"book/{path.stem}" in set(toc_files(TOC)), f"{path.name} is not in _toc.yml"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not any(c.get("outputs") for c in code), f"{path.name} was committed with outputs"
    first = "".join(code[0]["source"])
    assert "google.colab" in first, "the first code cell must be the Colab set-up cell"
    assert f'REPOSITORY, REF, NEEDED = "{CONFIG["repository"]["url"]}", ' in first, (
        "Colab installs from another repository than _config.yml's")
    assert "config.setup(" in "".join(code[1]["source"]), "second code cell sets profile and seed"
    text = "\n".join("".join(c["source"]) for c in nb["cells"])
    assert "{exercise}" in text and "{solution}" in text, "chapters have exercises with solutions"
    assert "{footbibliography}" in text, "chapters end with their references"
    assert not re.search(r"\{cite(:[a-z]+)?\}|\{bibliography\}", text), (
        "use {footcite} and {footbibliography} (scripts/footcite.py converts): page-local "
        "bibliographies with {cite} collide across pages under -W")
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_colab_cell_needs_the_version_this_repository_has():
    import course_lib

    template = json.loads((ROOT / "templates/chapter.ipynb").read_text())
    cell = "".join(next(c for c in template["cells"] if c["cell_type"] == "code")["source"])
    needed = re.search(r'REPOSITORY, REF, NEEDED = "[^"]+", "[^"]+", "([^"]+)"', cell).group(1)
    assert needed == course_lib.__version__, "bump NEEDED with __version__, then run scripts/sync_colab_cell.py"


def test_template_matches_the_chapters_set_up_cell():
    template = json.loads((ROOT / "templates/chapter.ipynb").read_text())
    cell = "".join(next(c for c in template["cells"] if c["cell_type"] == "code")["source"])
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        first = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
        assert first == cell, (f"{path.name}: Colab set-up cell differs from the template "
                               "(run scripts/sync_colab_cell.py)")


def test_config_executes_and_fails_on_errors():
    execute = CONFIG["execute"]
    assert execute["execute_notebooks"] == "cache"
    assert execute["allow_errors"] is False and execute["timeout"] > 0
    excluded = CONFIG["exclude_patterns"]
    for pattern in (".*", "_build", ".venv"):
        assert pattern in excluded
    assert "sphinx_exercise" in CONFIG["sphinx"]["extra_extensions"]
    assert CONFIG["bibtex_bibfiles"] == ["book/references.bib"]
    assert CONFIG["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")


def test_every_citation_has_a_bibtex_entry():
    bib = (ROOT / "book/references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    sources = [(ROOT / "book/intro.md").read_text()] + [p.read_text() for p in NOTEBOOKS]
    cited = set()
    for text in sources:
        for group in re.findall(r"\{(?:foot)?cite(?::[a-z]+)?\}`([^`]+)`", text):
            cited.update(k.strip() for k in group.split(","))
    assert cited, "no citations found"
    assert cited <= keys, f"missing BibTeX entries: {sorted(cited - keys)}"


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["bash scripts/build_book.sh", "bash scripts/test.sh"]
    ci = (ROOT / ".ci/run").read_text()
    assert "scripts/build_book.sh" in ci and "scripts/test.sh" in ci
    test_script = (ROOT / "scripts/test.sh").read_text()
    assert "--nbmake book/" in test_script and "COURSE_PROFILE=test" in test_script
    setup = (ROOT / "scripts/setup.sh").read_text()
    assert "torch==2.13.0" in setup and " -U" not in setup and "--upgrade" not in setup

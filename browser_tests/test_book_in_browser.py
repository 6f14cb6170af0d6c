"""Open every page of the built book in headless Chromium and check what a reader would see."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml
from conftest import JUPYTER_BOOK, ROOT, SCREENSHOTS

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("file", "root"):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return list(dict.fromkeys(found))


PAGES = toc_pages()
NOTEBOOK_PAGES = [p for p in PAGES if (ROOT / f"{p}.ipynb").exists()]

# Visible text without code, scripts and MathJax's own output, where raw TeX must not remain.
VISIBLE_TEXT_JS = """
const clone = document.querySelector('article, main, body').cloneNode(true);
clone.querySelectorAll('pre, code, script, style, mjx-container, .MathJax, textarea')
     .forEach(e => e.remove());
return clone.textContent;
"""

WAIT_MATHJAX_JS = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) { done('no-mathjax'); return; }
MathJax.startup.promise.then(() => done('ok')).catch(e => done('error: ' + e));
"""

IMAGES_JS = """
return Array.from(document.images).map(img => ({src: img.currentSrc || img.src,
    complete: img.complete, w: img.naturalWidth, h: img.naturalHeight}));
"""


def open_page(browser, url: str) -> list[dict]:
    browser.get_log("browser")  # drop messages of the previous page
    browser.get(url)
    browser.set_script_timeout(60)
    status = browser.execute_async_script(WAIT_MATHJAX_JS)
    assert not status.startswith("error"), f"MathJax failed on {url}: {status}"
    # Load lazy images: scroll through the page, then wait for every image to finish.
    height = browser.execute_script("return document.body.scrollHeight")
    for y in range(0, int(height) + 900, 900):
        browser.execute_script(f"window.scrollTo(0, {y})")
    deadline = time.time() + 30
    while time.time() < deadline and not browser.execute_script(
            "return Array.from(document.images).every(i => i.complete)"):
        time.sleep(0.2)
    browser.execute_script("window.scrollTo(0, 0)")
    return [m for m in browser.get_log("browser") if m["level"] == "SEVERE"]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(browser, server, page):
    errors = open_page(browser, f"{server}/{page}.html")
    assert not errors, f"JavaScript errors on {page}: {json.dumps(errors, indent=1)[:2000]}"
    text = browser.execute_script(VISIBLE_TEXT_JS)
    for raw in ("$$", "\\begin{", "\\(", "\\["):
        assert raw not in text, f"raw TeX {raw!r} left unrendered on {page}"
    images = browser.execute_script(IMAGES_JS)
    broken = [i["src"][:120] for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not broken, f"images that did not load on {page}: {broken}"
    assert "Traceback (most recent call last)" not in browser.page_source, \
        f"a Python traceback is shown on {page}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / (page.replace("/", "__") + ".png")))


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_colab_link_points_at_the_notebook(browser, server, page):
    open_page(browser, f"{server}/{page}.html")
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('a')).map(a => a.href)"
        ".filter(h => h.includes('colab.research.google.com'))")
    repo = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    branch = CONFIG["repository"].get("branch", "main")
    expected = f"https://colab.research.google.com/github/{repo}/blob/{branch}/{page}.ipynb"
    assert expected in links, f"no Colab link {expected} on {page}; found {links}"


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_kernel_free_explorers_respond(browser, server, page):
    open_page(browser, f"{server}/{page}.html")
    players = browser.execute_script(
        "return Array.from(document.querySelectorAll('img[id^=\"_anim_img\"]')).map(i => i.id)")
    if not players:
        pytest.skip(f"{page} has no kernel-free explorer")
    for img_id in players:
        uid = img_id.removeprefix("_anim_img")
        before = browser.execute_script(f"return document.getElementById('{img_id}').src")
        browser.execute_script(
            f"const s = document.getElementById('_anim_slider{uid}'); s.value = s.max;"
            "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'));")
        time.sleep(0.3)
        after = browser.execute_script(f"return document.getElementById('{img_id}').src")
        assert after != before, f"moving the slider of explorer {uid} on {page} changed nothing"


def test_search_finds_haar(browser, server):
    browser.get(f"{server}/search.html?q=Haar")
    deadline = time.time() + 30
    results: list[str] = []
    while time.time() < deadline and not results:
        results = browser.execute_script(
            "return Array.from(document.querySelectorAll('#search-results li a, ul.search li a'))"
            ".map(a => a.textContent)")
        time.sleep(0.3)
    assert results, "the search page returned no result for 'Haar'"


def test_failing_notebook_fails_the_build_and_names_the_cell(tmp_path):
    """Bad input: a chapter that raises must fail the build with the notebook and cell named."""
    import nbformat

    for name in ("_config.yml", "book/references.bib", "book/_ext/offline_assets.py",
                 "book/images/favicon.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Broken chapter"),
                nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise RuntimeError('deliberate failure in cell two')")]
    nbformat.write(nb, tmp_path / "book/broken.ipynb")
    (tmp_path / "book/intro.md").write_text("# Intro\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/broken\n")
    proc = subprocess.run([JUPYTER_BOOK, "build", str(tmp_path), "-W",
                           "--keep-going"], capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, "the build passed although a notebook raised"
    assert "broken" in out and "deliberate failure in cell two" in out, out[-3000:]
    assert re.search(r"cell", out, re.I), out[-3000:]

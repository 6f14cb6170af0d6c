"""Fixtures for the browser tests: the built book served on localhost, and headless Chromium.

Chromium comes from the system (Debian's `chromium` and `chromium-driver` packages, which
`.ci/run` installs when missing); nothing is downloaded. Without it the tests are skipped with a
message that says so. The book is built under the `test` profile if `_build/html` is missing.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = str(Path(sys.executable).with_name("jupyter-book"))
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"


def find_chromium() -> tuple[str | None, str | None]:
    browser = os.environ.get("CHROMIUM") or next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    return browser, driver


@pytest.fixture(scope="session")
def built_book() -> Path:
    if not (HTML / "index.html").exists():
        env = {**os.environ, "COURSE_PROFILE": os.environ.get("COURSE_PROFILE", "test")}
        proc = subprocess.run([JUPYTER_BOOK, "build", ".", "-W", "-n",
                               "--keep-going"], cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode:
            pytest.fail("the book build failed:\n" + proc.stdout[-4000:] + proc.stderr[-4000:])
    return HTML


@pytest.fixture(scope="session")
def server(built_book):
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output readable
        pass


@pytest.fixture(scope="session")
def browser():
    browser_path, driver_path = find_chromium()
    if not browser_path or not driver_path:
        pytest.skip("Chromium or chromedriver not found: install Debian's 'chromium' and "
                    "'chromium-driver' (.ci/run does) to run the browser tests")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    profile_dir = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps",
                 "--disable-extensions", "--metrics-recording-only", "--mute-audio",
                 "--window-size=1280,900", f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile_dir, ignore_errors=True)

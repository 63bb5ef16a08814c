"""The explorer in a real browser: `marimo run` serves it over a hand-built store, headless Chromium
(Debian's package, installed with apt-get when missing and running as root, as in CI) loads it,
the scorecard renders with its rows, choosing a metric draws its SPC chart with data, and the
address can turn publication mode on. A screenshot goes to test-artifacts/explorer.png."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from app_stores import NOTEBOOKS, PROJECT, handbuilt_store  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = PROJECT / "test-artifacts"
METRIC = "Patients discharged on their discharge ready date"


def _ensure_chromium() -> str:
    """Debian's chromium; installed with apt-get when missing and we are root (CI). Never a browser
    download of Playwright's own."""
    if not CHROMIUM.exists():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.fail(f"{CHROMIUM} is missing: install Debian's package (apt-get install -y chromium)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True, env=env,
                       capture_output=True, timeout=900)
    return str(CHROMIUM)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`marimo run notebooks/explorer.py --headless` on a free port, serving a hand-built store."""
    root = tmp_path_factory.mktemp("browser")
    url = handbuilt_store(root)
    port = _free_port()
    env = {**os.environ, "OUTCOMES_DATABASE_URL": url}
    env.pop("OUTCOMES_PUBLICATION", None)
    log = root / "marimo.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "marimo", "run", str(NOTEBOOKS / "explorer.py"), "--headless", "--host",
             "127.0.0.1", "--port", str(port)], cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"marimo run did not start:\n{log.read_text()}")
                time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = _ensure_chromium()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_explorer_renders_the_scorecard_and_a_chosen_metrics_spc_chart(server, browser):
    started = time.monotonic()
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.set_default_timeout(30_000)
    page.goto(server)
    # The scorecard: one row per metric and place, with Making Data Count badges in words.
    rows = page.locator("table.oe-scorecard tbody tr")
    rows.first.wait_for()
    assert rows.count() == 14
    assert page.locator("table.oe-scorecard .oe-badge.oe-variation").count() == 14
    assert "Common cause" in page.locator("table.oe-scorecard").inner_text()
    # Choose a metric: its SPC chart is drawn, with its points.
    picker = page.locator("select").filter(has_text=METRIC)
    picker.select_option(label=METRIC)
    chart = page.locator(".vega-embed svg").filter(has_text=f"{METRIC}: statistical process control")
    chart.first.wait_for()
    points = chart.first.locator('[aria-roledescription="point"], path[role="graphics-symbol"]')
    assert points.count() >= 3  # Dudley's and Walsall's months
    svg_text = chart.first.inner_html()
    assert "Trial limits" in svg_text and "Process limits" in svg_text
    chart.first.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)
    page.close()
    assert time.monotonic() - started < 60


def test_the_address_can_turn_publication_mode_on(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.set_default_timeout(30_000)
    page.goto(server + "?publication=1")
    page.get_by_text("Publication mode is on").first.wait_for()
    assert "withheld" in page.locator("table.oe-scorecard").inner_text()
    page.close()

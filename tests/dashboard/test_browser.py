"""The dashboard in a real browser: Debian's chromium (installed by `make setup`, step `browser`),
driven headless through Playwright, against `streamlit run` on 127.0.0.1 and a store made by the
real pipeline code. Saves a screenshot under data/screenshots/."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import free_port
from obslab.bootstrap import ROOT, chromium_binary
from obslab.narrate.backends import TemplateBackend
from obslab.narrate.run import narrate_pending
from obslab.store import Store

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _wait_healthy(url: str, proc, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "streamlit exited"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"streamlit did not answer at {url} within {seconds} s")


def test_the_dashboard_renders_charts_and_incidents_in_chromium(evaluated, tmp_path):
    browser_path = chromium_binary()
    assert browser_path, "chromium is not installed: run `make setup` (step `browser`) or `apt-get install chromium`"
    from playwright.sync_api import sync_playwright

    path = tmp_path / "demo.duckdb"
    shutil.copy(evaluated("demo").store_path, path)
    store = Store(path)
    narrate_pending(store, TemplateBackend(), evaluated.settings)
    incidents = store.count("incidents")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"), "--server.address",
         "127.0.0.1", "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        env={**os.environ, "DUCKDB_PATH": str(path)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    shot = ROOT / "data" / "screenshots" / "dashboard.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    try:
        _wait_healthy(url, proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(url)
            page.wait_for_selector('[data-testid="stMetric"]', timeout=60_000)
            page.wait_for_selector('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg',
                                   timeout=60_000)
            charts = page.locator('[data-testid="stVegaLiteChart"]').count()
            page.screenshot(path=str(shot), full_page=True)
            page.get_by_role("tab", name="Incidents").click()
            page.wait_for_selector('[data-testid="stExpander"]', timeout=30_000)
            expanders = page.locator('[data-testid="stExpander"]').count()
            body = page.inner_text("body")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert charts >= 3  # one per service
    assert expanders == incidents > 0
    assert "payments · errors" in body and "rule-based text" in body
    assert shot.exists() and shot.stat().st_size > 10_000

"""The book (obslab.book): which notebooks go in and how, and a real build read in Debian's chromium
with the network shut to everything but the local server, so a chart on the page is drawn offline."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

from conftest import free_port
from obslab import book
from obslab.bootstrap import chromium_binary
from obslab.errors import ConfigError


def test_every_notebook_has_a_row_and_every_row_a_notebook():
    assert [p.stem for p in book.chapters()] == sorted(book.NEEDS)


@pytest.mark.parametrize("only, expected", [
    (["06"], ["06_evaluate_detection"]),  # by number
    (["02_stream_aggregate", "00"], ["00_environment_check", "02_stream_aggregate"]),  # by name, in course order
])
def test_only_picks_notebooks_by_number_or_name(only, expected):
    assert [p.stem for p in book.chapters(only)] == expected


def test_an_unknown_notebook_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match=r"no notebook \['6x'\].*06_evaluate_detection"):
        book.chapters(["6x"])


def test_the_landing_page_lists_every_notebook_in_order():
    text = (book.BOOK_SOURCE / "index.md").read_text()
    positions = [text.find(f"(notebooks/{name})") for name in sorted(book.NEEDS)]
    assert -1 not in positions and positions == sorted(positions), positions


def test_a_page_needing_the_lab_carries_its_note_and_no_outputs(tmp_path):
    source = book.NOTEBOOKS / "02_stream_aggregate.ipynb"
    page = tmp_path / source.name
    book._write(source, page, book.LAB_NOTE.format(needs=book.NEEDS["02_stream_aggregate"], name=source.stem))
    cells = nbformat.read(page, as_version=4).cells
    assert cells[0].source == "# 02 · Stream aggregation"  # the title stays first, alone
    assert "without outputs" in cells[1].source and "the Kafka broker and Spark" in cells[1].source
    intro = nbformat.read(source, as_version=4).cells[0].source
    assert len(cells[2].source) > 200 and cells[2].source in intro  # then the notebook's own text
    assert all(not c.get("outputs") for c in cells if c.cell_type == "code")


def test_an_executed_page_draws_charts_to_svg_in_a_hidden_first_cell(tmp_path):
    source = book.NOTEBOOKS / "06_evaluate_detection.ipynb"
    page = tmp_path / source.name
    book._write(source, page, book.EXECUTED_NOTE.format(parameters="its default parameters"),
                first_code=book.SVG_CHARTS)
    code = [c for c in nbformat.read(page, as_version=4).cells if c.cell_type == "code"]
    assert 'alt.renderers.enable("svg")' in code[0].source and code[0].metadata.tags == ["remove-cell"]
    assert "parameters" in code[1].metadata.get("tags", [])  # papermill still finds the parameters cell


def test_the_scratch_environment_is_undone(monkeypatch):
    monkeypatch.setenv("DATA_DIR", "/the/lab")
    monkeypatch.delenv("DUCKDB_PATH", raising=False)
    with book._environment(DATA_DIR="/scratch", DUCKDB_PATH="/scratch/o.duckdb"):
        assert (os.environ["DATA_DIR"], os.environ["DUCKDB_PATH"]) == ("/scratch", "/scratch/o.duckdb")
    assert os.environ["DATA_DIR"] == "/the/lab"  # as it was
    assert "DUCKDB_PATH" not in os.environ  # unset again


def _serve(directory, port):
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "-b", "127.0.0.1", "-d", str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise AssertionError(f"http.server did not answer on 127.0.0.1:{port}")


def _colours(png: bytes) -> tuple[int, float]:
    """Distinct colours in a PNG, and the share of pixels that are not white."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    counts = dict((colour, n) for n, colour in image.getcolors(image.width * image.height))
    return len(counts), 1 - counts.get((255, 255, 255), 0) / (image.width * image.height)


@pytest.mark.slow
def test_the_built_book_draws_its_chart_in_chromium_with_no_network(tmp_path):
    browser_path = chromium_binary()
    assert browser_path, "chromium is not installed: run `make setup` (step `browser`) or `apt-get install chromium`"
    from playwright.sync_api import sync_playwright

    # 01 draws one chart with its small default run; 02 needs the lab, so its page has no outputs
    built = book.build(tmp_path / "book", only=["01", "02"],
                       parameters={"01_generate_events": {"generate_seconds": 120.0}})
    assert built.executed == ["01_generate_events"] and built.unexecuted == ["02_stream_aggregate"]
    assert (tmp_path / "book" / "data" / "runs" / "01_events.jsonl").exists()  # ran in the book's scratch folder
    port = free_port()
    local = f"http://127.0.0.1:{port}/"
    server = _serve(built.site, port)
    shot = tmp_path / "book-01.png"
    blocked = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            # everything but the local server is refused, as in a workshop room without internet
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(local)
                       else (blocked.append(route.request.url), route.abort()))
            page.goto(local + "notebooks/01_generate_events.html", wait_until="load")  # images loaded too
            page.screenshot(path=str(shot), full_page=True)
            charts = page.locator(".cell_output img[src$='.svg']")
            assert charts.count() == 1, f"no chart drawn as SVG on the page (requests refused: {blocked})"
            chart = charts.first
            drawn = chart.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
            chart.scroll_into_view_if_needed()
            box = chart.bounding_box()
            chart_png = chart.screenshot()
            page.goto(local + "notebooks/02_stream_aggregate.html")
            lab_page = page.inner_text("article")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"screenshot: {shot}")
    assert not blocked, f"the pages asked the internet for {blocked}"
    complete, width, height = drawn
    assert complete and width > 300 and height > 150, drawn  # the SVG loaded and has the chart's size
    assert box["width"] > 300 and box["height"] > 150, box
    colours, inked = _colours(chart_png)
    assert colours > 20 and inked > 0.02, (colours, inked)  # lines, axes and text, not an empty frame
    assert shot.stat().st_size > 20_000
    assert "without outputs" in lab_page and "the Kafka broker and Spark" in lab_page

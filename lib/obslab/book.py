"""`make book`: the course's notebooks as a static site that participants can read ahead.

The notebooks that run offline are executed with papermill (kernel obslab, default parameters) in
a scratch data folder, with Altair drawing each chart to SVG at execution (vl-convert bundles Vega),
so a page loads nothing from the internet. The notebooks that need the running lab are shown as
committed, without outputs, under a note saying so. Sphinx with myst-nb and the book theme (the
pieces of Jupyter Book 1) renders the pages; its settings and the landing page are in docs/book/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer

from obslab.commands import ReportingTyper, settings_with
from obslab.errors import BookError, ConfigError, NotebookTaskError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
BOOK_SOURCE = ROOT / "docs" / "book"  # conf.py and the landing page, index.md
KERNEL = "obslab"

# notebook -> what it needs that the book build does not start ("" : runs offline, so executed)
NEEDS = {
    "00_environment_check": "",
    "01_generate_events": "",
    "02_stream_aggregate": "the Kafka broker and Spark",
    "03_detect_anomalies": "",
    "04_narrate_incidents": "",
    "05_explore_metrics": "",
    "06_evaluate_detection": "",
    "07_monitoring": "the running pipeline (the broker, the stream, the detector and the narrator)",
    "08_data_quality": "metric windows in the lab's store (notebook 02 or `make demo` writes them)",
    "09_real_telemetry": "Spark",
}

# Run first in every executed notebook, and removed from its page: charts become SVG, drawn here.
SVG_CHARTS = 'import altair as alt\n\nalt.renderers.enable("svg")  # the book: charts drawn at execution, no CDN'

LAB_NOTE = """:::{{note}}
This page is shown **without outputs**: the notebook needs {needs}, and building the book starts
no part of the lab. Run it yourself: `make lab`, then open `notebooks/{name}.ipynb` (its first
cell says what to start first).
:::"""

EXECUTED_NOTE = """:::{{tip}}
Executed by `make book` with {parameters}, in a scratch data folder and with no broker, on the
machine that built this site: Run All on your laptop shows the same kind of output (times and run
ids differ).
:::"""


@dataclass(frozen=True)
class Book:
    """A built site: where its pages are and what went into them."""

    site: Path  # open site/index.html
    executed: list[str]
    unexecuted: list[str]
    seconds: float


def chapters(only: Sequence[str] = ()) -> list[Path]:
    """The notebooks to put in the book, in order; `only` picks some by name or number ("06")."""
    found = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    unknown = [p.stem for p in found if p.stem not in NEEDS]
    if unknown:
        raise ConfigError(f"notebook(s) {unknown} have no row in obslab.book.NEEDS: add one saying what each "
                          "needs that the book build does not start (\"\" if it runs offline)")
    if not only:
        return found
    def named(p: Path, o: str) -> bool:
        return o in (p.stem, p.stem.split("_")[0])

    picked = [p for p in found if any(named(p, o) for o in only)]
    missing = [o for o in only if not any(named(p, o) for p in picked)]
    if missing:
        raise ConfigError(f"no notebook {missing} in {NOTEBOOKS}: give a name or its number, one of "
                          f"{[p.stem for p in found]}")
    return picked


def build(out: Path, only: Sequence[str] = (), parameters: dict[str, dict] | None = None) -> Book:
    """Execute the offline notebooks, add the others as they are, and render the site into out/html.

    `parameters` maps a notebook's name to papermill parameters (default: the notebook's own)."""
    started = time.monotonic()
    source, site, scratch = out / "source", out / "html", out / "data"
    for folder in (source, site, scratch):
        shutil.rmtree(folder, ignore_errors=True)
    (source / "notebooks").mkdir(parents=True)
    shutil.copy(BOOK_SOURCE / "index.md", source / "index.md")
    executed, unexecuted = [], []
    for notebook in chapters(only):
        page = source / "notebooks" / notebook.name
        if NEEDS[notebook.stem]:
            _write(notebook, page, LAB_NOTE.format(needs=NEEDS[notebook.stem], name=notebook.stem))
            unexecuted.append(notebook.stem)
        else:
            given = (parameters or {}).get(notebook.stem, {})
            shown = ", ".join(f"`{k}={v!r}`" for k, v in given.items()) or "its default parameters"
            _write(notebook, page, EXECUTED_NOTE.format(parameters=shown), first_code=SVG_CHARTS)
            with _environment(DATA_DIR=str(scratch), DUCKDB_PATH=str(scratch / "observability.duckdb")):
                _execute(page, given)
            executed.append(notebook.stem)
    _render(source, site)
    return Book(site, executed, unexecuted, time.monotonic() - started)


def _write(notebook: Path, page: Path, note: str, first_code: str = "") -> None:
    """The notebook with a note right under its title (and a hidden first code cell), saved as the page."""
    import nbformat  # here: every `obslab` command imports this module, and nbformat takes ~1.5 s to import

    nb = nbformat.read(notebook, as_version=4)
    title, _, intro = nb.cells[0].source.partition("\n")  # the first cell opens with "# NN · title"
    cells = [nbformat.v4.new_markdown_cell(title), nbformat.v4.new_markdown_cell(note)]
    if intro.strip():
        cells.append(nbformat.v4.new_markdown_cell(intro.strip()))
    if first_code:
        cells.append(nbformat.v4.new_code_cell(first_code, metadata={"tags": ["remove-cell"]}))
    nb.cells = cells + nb.cells[1:]
    nbformat.write(nb, page)


def _execute(page: Path, parameters: dict) -> None:
    import papermill

    try:
        papermill.execute_notebook(str(page), str(page), parameters=parameters, kernel_name=KERNEL,
                                   cwd=str(NOTEBOOKS), progress_bar=False)
    except papermill.PapermillExecutionError as err:
        raise NotebookTaskError(page.stem, page, err.exec_count, f"{err.ename}: {err.evalue}") from err


def _render(source: Path, site: Path) -> None:
    """Sphinx (myst-nb reads the notebooks as they are) into site/; its log on error."""
    done = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", str(BOOK_SOURCE),
                           str(source), str(site)], capture_output=True, text=True)
    if done.returncode != 0 or not (site / "index.html").exists():
        raise BookError(f"Sphinx could not build the site from {source} (exit {done.returncode}):\n"
                          f"{(done.stderr or done.stdout)[-3000:]}\nFix what it names in docs/book/ or the notebook.")


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """These environment variables while the block runs (the kernel papermill starts inherits them)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


book_app = ReportingTyper(help="The course as a static site: the notebooks, executed where they run offline.",
                          no_args_is_help=True)


@book_app.command("build")
def build_cmd(out: Path = typer.Option(None, help="where the site goes; default DATA_DIR/book"),
              only: list[str] = typer.Option([], help="only this notebook (name or number, e.g. 06); repeatable")) -> None:
    """Execute the offline notebooks and build the site into OUT/html (open OUT/html/index.html)."""
    out = out or settings_with().data_dir / "book"
    picked = chapters(only)
    typer.echo(f"building the book of {len(picked)} notebook(s) into {out} (the offline ones are executed: "
               "a few minutes) ...")
    book = build(out, only)
    typer.echo(f"executed {len(book.executed)}: {' '.join(book.executed) or '-'}")
    typer.echo(f"shown without outputs (need the lab) {len(book.unexecuted)}: {' '.join(book.unexecuted) or '-'}")
    typer.echo(f"site: {book.site / 'index.html'} ({book.seconds:.0f} s); "
               f"to serve it: python -m http.server -b 127.0.0.1 -d {book.site}")

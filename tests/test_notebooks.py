"""The notebooks as a course: each one explains the concept it runs, declares typed parameters, and checks
what it shows. Notebooks are committed without outputs (STYLE.md); nbval (pytest's testpaths include
notebooks/, with --nbval-lax) executes every one of them, and a notebook checks its stable results with
`assert` (or the lab's own `assert_healthy` / `assert_valid`) in its own cells (invariants of the windows, incidents and narratives, the ground truth
against the scenario), so a wrong result fails the run with a message rather than a stored output
to compare.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# notebook -> terms its markdown must explain: the concepts it runs (a new notebook needs a row)
CONCEPTS = {
    "00_environment_check": ["java", "kafka", "jars"],
    "01_generate_events": ["poisson", "seed", "ground truth"],
    "02_stream_aggregate": ["tumbling", "watermark", "late", "histogram", "exactly once"],
    "03_detect_anomalies": ["baseline", "burn rate", "error budget", "noise"],
    "04_narrate_incidents": ["grounding", "facts", "temperature"],
    "05_explore_metrics": ["percentile", "mean", "partial", "watermark", "parameter"],
    "06_evaluate_detection": ["recall", "precision", "time to detect", "benign"],
    "07_monitoring": ["lag", "freshness", "dead-letter"],
    "08_data_quality": ["invariant", "retention"],
    "09_real_telemetry": ["span", "trace", "resource", "otlp", "collector", "skipped", "ground truth"],
}
MIN_MARKDOWN_WORDS = 150  # a few short paragraphs, not just a title
PARAMETER_LINE = re.compile(r"^\w+: (int|float|str|bool) = .+  # \S.*$")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _checks(cell: dict) -> bool:
    return cell["cell_type"] == "code" and re.search(r"^\s*assert(\s|_\w+\()", _source(cell), re.M) is not None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_explains_the_concept(path):
    text = "\n".join(_source(c) for c in _cells(path) if c["cell_type"] == "markdown")
    assert text.startswith("# "), "the first markdown cell is the title"
    assert len(text.split()) >= MIN_MARKDOWN_WORDS, f"{path.name}: {len(text.split())} words of markdown"
    missing = [term for term in CONCEPTS[path.stem] if term not in text.lower()]
    assert not missing, f"{path.name}: the markdown never mentions {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_typed_and_documented_parameters_cell(path):
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, path.name
    lines = [line for line in _source(tagged[0]).splitlines() if line.strip()]
    assert lines and all(PARAMETER_LINE.match(line) for line in lines), lines


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_and_checks_what_it_shows(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name} has outputs: clear them before committing"
    assert any(_checks(c) for c in code), f"{path.name}: no cell asserts what the notebook shows"

"""The notebooks as a course: each one explains the concept it runs, declares typed parameters, and has
cells whose output nbval checks. Only those cells keep an output in the repository: the expected one.

nbval (pytest's testpaths include notebooks/, with --nbval-lax) executes every notebook and compares the
output of the cells marked `# NBVAL_CHECK_OUTPUT` with the stored one. After changing such a cell, run
the notebook and store its new expected outputs (every other output is dropped):

    .venv/bin/papermill notebooks/05_explore_metrics.ipynb /tmp/05.ipynb -k obslab
    .venv/bin/python tests/test_notebooks.py /tmp/05.ipynb
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHECK = "# NBVAL_CHECK_OUTPUT"

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
}
MIN_MARKDOWN_WORDS = 150  # a few short paragraphs, not just a title
PARAMETER_LINE = re.compile(r"^\w+: (int|float|str|bool) = .+  # \S.*$")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _checked(cell: dict) -> bool:
    return cell["cell_type"] == "code" and _source(cell).lstrip().startswith(CHECK)


def test_every_notebook_has_its_concepts_listed():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(CONCEPTS)


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
def test_checked_cells_keep_their_expected_output_and_nothing_else_is_stored(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    checked = [c for c in code if _checked(c)]
    assert checked, f"{path.name}: no cell marked {CHECK}"
    for cell in code:
        if not _checked(cell):
            # Committed without outputs (STYLE.md); an executed count would make nbval compare nothing.
            assert not cell.get("outputs") and cell.get("execution_count") is None, _source(cell)[:80]
            continue
        # nbval compares only cells with an execution count and treats no output as "expect none".
        assert isinstance(cell.get("execution_count"), int) and cell["outputs"], _source(cell)[:80]
        for out in cell["outputs"]:
            assert out["output_type"] in ("stream", "execute_result"), out["output_type"]
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            assert out.get("name", "stdout") == "stdout", f"stderr is not stable: {text[:200]}"
            assert not set(out.get("data", {})) - {"text/plain"}, "only plain text is compared"
            # Paths and temporary folders differ between machines and runs.
            assert not re.search(r"/tmp/|/work/|/home/|obslab-lab-", text), text[:200]


def keep_checked_outputs(executed: Path, target: Path) -> int:
    """Copy the outputs of the checked cells of `executed` (a run of `target`) into `target`, matched by
    cell id; drop every other output. Returns how many checked cells were stored."""
    import nbformat

    ran = {c.get("id"): c for c in _cells(executed)}
    nb = nbformat.read(target, as_version=4)
    stored = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        cell["outputs"], cell["execution_count"] = [], None
        if _checked(cell):
            source = ran[cell["id"]]
            if _source(source) != _source(cell):
                raise SystemExit(f"{executed} ran another version of cell {cell['id']} of {target.name}")
            cell["execution_count"] = source["execution_count"]
            cell["outputs"] = [nbformat.from_dict(_plain(o)) for o in source["outputs"] if o.get("name") != "stderr"]
            stored += 1
    nbformat.write(nb, target)
    return stored


def _plain(output: dict) -> dict:
    if output["output_type"] == "execute_result":
        return {**output, "data": {"text/plain": output["data"]["text/plain"]}, "metadata": {}}
    return output


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        executed = Path(arg)
        target = ROOT / "notebooks" / executed.name
        print(f"{target.name}: {keep_checked_outputs(executed, target)} checked cell(s) stored")

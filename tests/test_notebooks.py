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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_says_up_front_what_it_needs(path):
    first = _source(next(c for c in _cells(path) if c["cell_type"] == "markdown"))
    paragraphs = first.split("\n\n")
    assert paragraphs[1].startswith("**Needs:** "), f"{path.name}: the paragraph after the title says what it needs"


# ---------------------------------------------------------------- running them with papermill, on the real kernel

# The notebooks that run on the light set-up (`make exercises`): no broker, Spark, JVM, Kafka client or Airflow.
OFFLINE = ["03_detect_anomalies", "04_narrate_incidents", "05_explore_metrics", "06_evaluate_detection"]
HEAVY = ("pyspark", "py4j", "kafka", "confluent_kafka", "airflow")
# Run first in the kernel: importing any of HEAVY raises, as on the light set-up where they are not installed.
_BLOCK_HEAVY = f'''import sys


class _NotOnTheLightSetUp:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError(f"{{name}} is not installed on the light set-up (make exercises)")


sys.meta_path.insert(0, _NotOnTheLightSetUp())
'''


def _execute(name: str, tmp_path: Path, parameters: dict, block_heavy: bool = False, source: Path | None = None) -> Path:
    """Run notebook `name` (or the notebook at `source`) with papermill on the `obslab` kernel, in notebooks/
    with this process's environment; returns the executed copy. Raises papermill's PapermillExecutionError
    at the first failing cell."""
    import nbformat
    import papermill

    nb = nbformat.read(source or ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    if block_heavy:
        nb.cells.insert(0, nbformat.v4.new_code_cell(_BLOCK_HEAVY))
    given = tmp_path / f"{name}.in.ipynb"
    nbformat.write(nb, given)
    out = tmp_path / f"{name}.out.ipynb"
    papermill.execute_notebook(str(given), str(out), parameters=parameters, kernel_name="obslab",
                               cwd=str(ROOT / "notebooks"), progress_bar=False, log_output=False)
    return out


@pytest.fixture()
def empty_lab(tmp_path, monkeypatch):
    """The kernel's lab: an empty data folder of its own (no store, no windows, no runs)."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.delenv("DUCKDB_PATH", raising=False)
    return data


@pytest.mark.slow  # each runs its notebook's default Run All: a replay, detection, the model (04)
@pytest.mark.parametrize("name", OFFLINE)
def test_runs_on_the_light_set_up_without_spark_or_kafka(name, tmp_path, empty_lab):
    out = _execute(name, tmp_path, {}, block_heavy=True)
    cells = json.loads(out.read_text())["cells"]
    errors = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    assert not (empty_lab / "observability.duckdb").exists()  # the lab's own store was not touched


def test_the_heavy_import_guard_catches_a_heavy_import(tmp_path, empty_lab):
    # the guard the test above relies on: a notebook that imports pyspark fails under it
    import nbformat
    from papermill import PapermillExecutionError

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_BLOCK_HEAVY),
                                         nbformat.v4.new_code_cell("import obslab.stream.transform")])
    nbformat.write(nb, tmp_path / "guard.ipynb")
    with pytest.raises(PapermillExecutionError, match="pyspark is not installed on the light set-up"):
        _execute("guard", tmp_path, {}, source=tmp_path / "guard.ipynb")


def _fails_at_its_check(name: str, tmp_path: Path, parameters: dict, check: str, message: str) -> None:
    """The notebook's first failing cell is its checking cell holding `check`, with `message`."""
    from papermill import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as failed:
        _execute(name, tmp_path, parameters)
    assert check in failed.value.source, f"{name} failed before its check, in:\n{failed.value.source}"
    assert message in failed.value.evalue, failed.value.evalue


# notebook -> (parameters on an empty pipeline, the checking cell's line, the message it fails with)
EMPTY = {
    "01_generate_events": ({"generate_seconds": 0.0}, "assert report.events_sent > 0",
                           "no events generated: raise generate_seconds"),
    "03_detect_anomalies": ({"source": "store"}, "assert report.windows", "no windows: run the stream first"),
    "04_narrate_incidents": ({"source": "store", "narrator_backend": "template"}, "assert stored",
                             "no narratives: no incident to narrate"),
    "05_explore_metrics": ({"service": "nowhere", "minutes": 3.0}, "assert len(latency)",
                           "no windows of 'nowhere' in this run"),
    "06_evaluate_detection": ({"minutes": 0.5}, "assert report.faults", "no fault injected in this run of 'demo'"),
    "08_data_quality": ({}, "assert windows", "no windows to check: run the stream first"),
}


@pytest.mark.slow  # a kernel per notebook
@pytest.mark.parametrize("name", sorted(EMPTY))
def test_its_checking_cell_fails_on_an_empty_pipeline(name, tmp_path, empty_lab):
    parameters, check, message = EMPTY[name]
    _fails_at_its_check(name, tmp_path, parameters, check, message)


@pytest.fixture()
def empty_topics(tmp_path, monkeypatch, lab_settings, broker, empty_lab):
    """The shared broker with topics of this test's own, never written to, in the kernel's environment."""
    from obslab.broker import LocalBroker
    from obslab.settings import load_settings

    topics = {f"topic_{kind}": f"empty_{kind}_{tmp_path.name}"[:200]
              for kind in ("raw_events", "aggregated_metrics", "anomalies")}
    settings = load_settings(data_dir=empty_lab, kafka_port=lab_settings.kafka_port,
                             kafka_controller_port=lab_settings.kafka_controller_port, kafka_bootstrap_servers="",
                             **topics)
    LocalBroker(settings).ensure_topics()
    for name, value in {"KAFKA_PORT": lab_settings.kafka_port, "KAFKA_CONTROLLER_PORT": lab_settings.kafka_controller_port,
                        "KAFKA_BOOTSTRAP_SERVERS": "", **{k.upper(): v for k, v in topics.items()}}.items():
        monkeypatch.setenv(name, str(value))
    return settings


@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.slow  # Spark starts in the kernel (~20 s)
def test_02_fails_at_its_invariants_on_an_empty_topic(tmp_path, empty_topics):
    _fails_at_its_check("02_stream_aggregate", tmp_path, {"generate_seconds": 0.0},
                        "holds = views.window_invariants", "no windows: run the stream on some traffic first")


@pytest.mark.kafka
@pytest.mark.slow  # a kernel, and the broker's checks
def test_07_announces_and_raises_its_alarm_on_an_empty_lab(tmp_path, empty_topics):
    from obslab.errors import HealthCheckFailed

    markdown = [_source(c) for c in _cells(ROOT / "notebooks" / "07_monitoring.ipynb") if c["cell_type"] == "markdown"]
    assert "On an empty or stale lab the last cell fails, on purpose" in markdown[0]  # said up front
    assert "On an empty or stale lab this last cell fails, on purpose" in markdown[-1]  # and again just before it
    from papermill import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as failed:
        _execute("07_monitoring", tmp_path, {})
    assert failed.value.source.strip() == "assert_healthy(checks)", failed.value.source
    assert failed.value.ename == HealthCheckFailed.__name__ and "freshness" in failed.value.evalue, failed.value.evalue


@pytest.mark.spark
@pytest.mark.slow  # Spark starts in the kernel (~20 s)
def test_09_fails_at_its_count_check_when_the_shop_made_no_requests(tmp_path, empty_lab):
    _fails_at_its_check("09_real_telemetry", tmp_path, {"minutes": 0.0}, "assert len(stored)",
                        "no windows: the shop made no requests")

"""Notebook parameters (obslab.parameters): every parameter of every notebook has a rule; hostile values give
NotebookParameterError naming the parameter, never another exception; what the check lets through, the settings
accept too; and a notebook run through papermill with a bad value stops in its first cell, saying which."""

import ast
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from obslab.errors import ConfigError, NotebookParameterError
from obslab.parameters import RULES, check_parameters, declared
from obslab.settings import load_settings
from tests.fuzzing import examples

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb"))
# Notebooks whose first code cell checks its parameters (the others: ask the notebooks' owner).
CHECKED = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))  # every notebook of the course


def test_declared_is_what_papermill_reads_and_every_parameter_has_a_rule():
    import papermill

    for name in NAMES:
        ours = declared(name)
        theirs = papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
        assert {k: (v["inferred_type_name"], ast.literal_eval(v["default"])) for k, v in theirs.items()} == ours, name
        assert set(ours) <= set(RULES), f"{name}: parameters without a rule in obslab.parameters.RULES"
        check_parameters(name, {})  # the defaults pass


def test_what_airflow_passes_from_the_default_settings_passes():
    from obslab.schedule.tasks import notebook_parameters

    for name in NAMES:  # settings values as the DAGs pass them (JSON: None where a setting is unset)
        check_parameters(name, notebook_parameters(set(declared(name)), load_settings()))


@pytest.mark.parametrize("notebook, name, value, says", [
    # wrong type: a number as text is refused, not read
    ("03_detect_anomalies", "seed", "42", "seed must be a whole number"),
    ("03_detect_anomalies", "seed", True, "seed must be a whole number"),  # a bool is no number
    ("03_detect_anomalies", "seed", -1, "seed must be a whole number from 0"),
    ("03_detect_anomalies", "minutes", math.nan, "minutes must be a finite number"),
    ("03_detect_anomalies", "minutes", 1e308, "minutes must be from 0 to 527040"),
    ("03_detect_anomalies", "source", "Replay", "source must be one of replay, store"),
    ("03_detect_anomalies", "detect_lookback_minutes", 4, "from 5 to"),
    ("03_detect_anomalies", "error_surge_factor", 1.0, "more than 1"),
    ("04_narrate_incidents", "narrator_backend", "gpt", "one of auto, ollama, llamacpp, template"),
    ("04_narrate_incidents", "narrate_max_incidents", 0, "from 1 to"),
    ("05_explore_metrics", "fault_id", "first", "empty or a fault id like f000"),
    ("05_explore_metrics", "scenario", "", "a shipped scenario"),
    ("01_generate_events", "events_per_second", 0.0, "more than 0"),  # 01 passes it to the generator
    ("01_generate_events", "generate_start", "yesterday", "ISO-8601 time with a timezone"),
    ("01_generate_events", "generate_start", "2026-01-05T09:00:00", "ISO-8601 time with a timezone"),  # no zone
    ("02_stream_aggregate", "checkpoint_name", "../x", "a folder name"),
    ("07_monitoring", "health_max_dead_letter_rate", 1.5, "from 0 to 1"),
    ("00_environment_check", "check_broker", "false", "true or false"),  # the text "false" is truthy
])
def test_a_bad_value_is_named_with_what_to_pass(notebook, name, value, says):
    with pytest.raises(NotebookParameterError, match=re.escape(says)) as err:
        check_parameters(notebook, {name: value})
    assert f"parameter {name}=" in str(err.value) and f"papermill -p {name}" in str(err.value)


@pytest.mark.parametrize("notebook, values", [
    ("06_evaluate_detection", {"events_per_second": 0.0}),  # 06: 0 means the scenario's rate
    ("01_generate_events", {"generate_start": None, "events_per_second": None}),  # Airflow: the setting is unset
    ("01_generate_events", {"generate_start": "2026-01-05T09:00:00+01:00", "generate_seconds": 5}),  # an int for a float
    ("03_detect_anomalies", {"scenario": "x.yaml", "seed": 2 ** 63 - 1}),  # the YAML's own load names its problems
])
def test_good_values_pass(notebook, values):
    check_parameters(notebook, values)


HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.integers(-3, 200),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 1e4),
    st.text(max_size=30), st.just(""), st.just(" "), st.just("\x00"), st.just("é" * 5_000), st.just("../../etc/passwd"),
    st.sampled_from(["NaN", "1e308", "-1", "2026-01-05T09:00:00Z", "demo", "replay", "store", "spark", "f000",
                     "template", "kafka", "file", "events", "spans", "checkout", "stream", "x.yaml", "🚀"]),
    st.just([1, 2]), st.just({"a": 1}),
)


@st.composite
def notebook_values(draw):
    """(notebook, {parameter: hostile value}) for one to three of the notebook's parameters."""
    notebook = draw(st.sampled_from(NAMES))
    names = draw(st.lists(st.sampled_from(sorted(declared(notebook))), min_size=1, max_size=3, unique=True))
    return notebook, {name: draw(HOSTILE) for name in names}


@pytest.mark.fuzz
@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=notebook_values())
def test_a_hostile_value_is_refused_by_name_or_accepted(case):
    notebook, values = case
    try:
        check_parameters(notebook, values)
    except NotebookParameterError as err:
        assert err.name in values and f"parameter {err.name}=" in str(err)  # names the parameter it was given
        assert "\n" not in str(err)  # one sentence, whatever the value holds
        return
    # Accepted: the settings the notebook builds from these parameters accept them too.
    passed = {name: value for name, value in values.items() if _passed_to_settings(notebook, name)}
    try:
        load_settings(**passed)
    except ConfigError as err:
        pytest.fail(f"{notebook}: check_parameters accepted {passed!r}, load_settings refused: {err}")


def _passed_to_settings(notebook: str, name: str) -> bool:
    """The notebook hands the parameter to load_settings as it is (`load_settings(..., name=name, ...)`)."""
    return name in _settings_arguments(notebook)


def _settings_arguments(notebook: str) -> set[str]:
    import json

    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]
    out = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_settings":
                out |= {k.arg for k in node.keywords if isinstance(k.value, ast.Name) and k.value.id == k.arg}
    return out


def test_every_notebook_checks_its_parameters_first():
    assert len(CHECKED) == 10
    import json

    for name in CHECKED:
        cells = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])]
        assert f'check_parameters("{name}", globals())' in "".join(code[0]["source"]), name


@pytest.mark.slow
def test_a_notebook_run_with_a_bad_parameter_stops_saying_which(tmp_path, monkeypatch):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    monkeypatch.setenv("DATA_DIR", str(tmp_path))  # whatever the first cell would reach, it is a scratch folder
    with pytest.raises(PapermillExecutionError) as err:
        papermill.execute_notebook(str(NOTEBOOKS / "03_detect_anomalies.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"minutes": -5.0}, kernel_name="obslab", cwd=str(NOTEBOOKS),
                                   progress_bar=False)
    assert err.value.ename == "NotebookParameterError"
    assert "parameter minutes=-5.0" in err.value.evalue and "papermill -p minutes" in err.value.evalue
    assert err.value.exec_count == 3  # parameters, papermill's injected parameters, then the first code cell

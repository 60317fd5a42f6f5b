"""The pipeline DAG on OpenTelemetry spans: a run's `stream_source` reaches the stream notebook's
settings (its topic and checkpoint), and a spans run skips the generator, whose events it would not count."""

import ast
import runpy

import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from obslab.schedule import server
from obslab.schedule.tasks import declared_parameters, notebook_parameters, notebook_path, skip_reason
from obslab.settings import load_settings
from obslab.stream.start import checkpoint_path


@pytest.fixture(scope="module")
def pipeline():
    """The pipeline DAG's tasks, from its file as Airflow reads it (name -> task)."""
    names = runpy.run_path(str(server.ROOT / "dags" / "obslab_pipeline.py"))
    return {task.task_id: task for task in names["stream"].dag.tasks}


@pytest.fixture()
def events(tmp_path):
    return load_settings(data_dir=tmp_path, stream_source="events")  # the lab's setting: the generator's events


def test_stream_source_is_a_run_param_that_defaults_to_the_setting(pipeline):
    params = pipeline["stream"].dag.params
    assert "stream_source" in params and params["stream_source"] is None  # None: STREAM_SOURCE decides
    assert "STREAM_SOURCE" in params.get_param("stream_source").description


@pytest.mark.parametrize("setting, run, expected", [
    ("events", {}, "events"),  # nothing from the run: the setting
    ("events", {"stream_source": None}, "events"),  # a run's None means the setting
    ("events", {"stream_source": "spans"}, "spans"),  # the run's value wins
    ("spans", {}, "spans"),  # a lab set to spans (STREAM_SOURCE) runs on spans without a param
])
def test_the_runs_source_reaches_the_stream_notebooks_settings(pipeline, tmp_path, setting, run, expected):
    stream = pipeline["stream"]
    settings = load_settings(data_dir=tmp_path, stream_source=setting)
    source = notebook_path(stream.notebook)
    params = notebook_parameters(set(declared_parameters(source)), settings, run, stream.fixed)
    assert params["stream_source"] == expected
    built = _notebook_settings(source, params)
    assert built.stream_source == expected
    # what the stream then reads, and where it keeps its progress: the source's own topic and checkpoint
    topic = built.topic_otlp_spans if expected == "spans" else built.topic_raw_events
    assert built.stream_topic == topic
    assert checkpoint_path(built).name == ("stream-spans" if expected == "spans" else "stream")


@pytest.mark.parametrize("setting, run, skipped_by", [
    ("events", {"generate_seconds": 300}, None),  # traffic to make, for a stream that counts it: runs
    ("events", {}, "generate_seconds"),  # no traffic asked for (GENERATE_SECONDS 0): skipped, as before
    ("events", {"generate_seconds": 300, "stream_source": "spans"}, "stream_source"),  # spans run: the shop's traffic
    ("spans", {"generate_seconds": 300}, "stream_source"),  # a lab on spans: skipped without a param
])
def test_a_spans_run_skips_the_generator(pipeline, tmp_path, setting, run, skipped_by):
    generate = pipeline["generate"]
    settings = load_settings(data_dir=tmp_path, stream_source=setting)
    params = notebook_parameters(set(declared_parameters(notebook_path(generate.notebook))), settings, run,
                                 generate.fixed)
    reason = skip_reason(settings, run, params, generate.skip_unless, generate.skip_if)
    assert (reason is None) if skipped_by is None else reason.startswith(f"{skipped_by} is ")
    # the stream itself runs either way (after a skipped generate, too)
    assert skip_reason(settings, run, {}, pipeline["stream"].skip_unless, pipeline["stream"].skip_if) is None
    assert str(pipeline["stream"].trigger_rule).lower().endswith("none_failed")


def _notebook_settings(source, params: dict):
    """The settings the notebook builds when papermill runs it with `params`: its parameters cell,
    the injected parameters, then its `settings = load_settings(...)` statement."""
    nb = parameterize_notebook(load_notebook_node(str(source)), params, kernel_name="obslab", language="python")
    names: dict = {}
    for cell in nb.cells:
        if {"parameters", "injected-parameters"} & set(cell.metadata.get("tags", [])):
            exec(cell.source, names)
    code = ast.parse("\n".join(c.source for c in nb.cells if c.cell_type == "code"))
    statement = next(node for node in code.body if isinstance(node, ast.Assign)
                     and getattr(node.targets[0], "id", None) == "settings")
    names["load_settings"] = load_settings
    exec(compile(ast.Module([statement], type_ignores=[]), str(source), "exec"), names)
    return names["settings"]

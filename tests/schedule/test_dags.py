"""DAG integrity and the DAG-notebook contract: every DAG file imports without error and without I/O,
declares what STYLE.md asks, and passes only parameters its notebooks declare, named as settings."""

import json
import os
import subprocess
import sys

import pytest

from obslab.schedule import server
from obslab.schedule.tasks import declared_parameters, notebook_path
from obslab.settings import Settings, load_settings

pytestmark = pytest.mark.slow

# Loads the DAG folder in a fresh interpreter (Airflow keeps global state) and reports each DAG as
# JSON. An audit hook, installed after Airflow itself is imported, records what the DAG files do
# while they are imported: files opened for writing, sockets connected, processes started.
INSPECT = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
from obslab.schedule.tasks import NotebookOperator  # noqa: F401 - built (Airflow's provider imported) before the hook
events = []
WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000  # O_WRONLY, O_RDWR, O_CREAT, O_TRUNC
def hook(name, args):
    if name == "open" and len(args) > 2 and isinstance(args[2], int) and args[2] & WRITE_FLAGS:
        events.append(f"write {args[0]}")
    elif name in ("socket.connect", "subprocess.Popen", "os.system"):
        events.append(f"{name} {args[1] if len(args) > 1 else args}")
sys.addaudithook(hook)
bag = DagBag(dag_folder=sys.argv[1])
sys.addaudithook(lambda *a: None)
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "events": list(events), "dags": {}}
for dag in bag.dags.values():
    out["dags"][dag.dag_id] = {
        "schedule": str(dag.schedule), "catchup": dag.catchup, "tags": sorted(dag.tags),
        "max_active_runs": dag.max_active_runs, "doc_md": dag.doc_md, "params": sorted(dag.params),
        "tasks": {t.task_id: {"retries": t.retries, "retry_delay": t.retry_delay.total_seconds(),
                              "notebook": getattr(t, "notebook", None), "fixed": getattr(t, "fixed", None),
                              "skip_unless": getattr(t, "skip_unless", None), "trigger_rule": str(t.trigger_rule),
                              "upstream": sorted(t.upstream_task_ids), "type": type(t).__name__}
                  for t in dag.tasks}}
print("JSON:" + json.dumps(out))
"""


def inspect(folder, data_dir) -> dict:
    settings = load_settings(data_dir=data_dir)
    server.prepare(settings, migrate=False)
    env = {**os.environ, **server.environment(settings)}
    done = subprocess.run([sys.executable, "-c", INSPECT, str(folder)], env=env,
                          capture_output=True, text=True, timeout=300)
    line = next((x for x in done.stdout.splitlines() if x.startswith("JSON:")), None)
    assert line, done.stderr[-3000:]
    return json.loads(line[5:])


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("dags") / "data"
    return inspect(server.ROOT / "dags", data_dir) | {"data_dir": data_dir}


def test_every_dag_file_imports_without_errors(bag):
    assert bag["errors"] == {}
    assert set(bag["dags"]) == {"obslab_pipeline", "monitoring_dag", "data_quality_dag"}


def test_importing_the_dags_does_no_io(bag):
    # No file written, no connection made, no process started while the DAG files load
    assert bag["events"] == []
    # nothing in the lab's data folder but the Airflow home the test prepared
    assert [p.name for p in bag["data_dir"].iterdir()] == ["airflow"]


def test_the_io_check_sees_a_dag_file_that_writes(tmp_path):
    # the check above could pass by seeing nothing at all: a DAG file that writes must show up
    folder = tmp_path / "dags"
    folder.mkdir()
    # (Airflow only imports files that mention "airflow" and "dag")
    (folder / "noisy.py").write_text(f"# an airflow dag file\nopen({str(tmp_path / 'written')!r}, 'w').write('x')\n")
    assert any(e.startswith("write ") and e.endswith("written") for e in inspect(folder, tmp_path / "data")["events"])


@pytest.mark.parametrize("dag_id, schedule, max_retries_ok", [
    ("obslab_pipeline", "*/5 * * * *", True),    # every 5 minutes; tasks retry
    ("monitoring_dag", "*/5 * * * *", False),    # every 5 minutes; an alarm does not wait for retries
    ("data_quality_dag", "0 */6 * * *", True),   # every 6 hours; tasks retry
])
def test_dag_declarations(bag, dag_id, schedule, max_retries_ok):
    dag = bag["dags"][dag_id]
    assert schedule in dag["schedule"]
    assert dag["catchup"] is False
    assert dag["tags"] and "obslab" in dag["tags"]
    assert dag["doc_md"] and dag["doc_md"].startswith(f"# {dag_id}")
    assert dag["max_active_runs"] == 1
    for task in dag["tasks"].values():
        assert task["type"] == "NotebookOperator"
        if max_retries_ok:
            assert task["retries"] >= 2 and task["retry_delay"] <= 60
        else:
            assert task["retries"] == 0


def test_pipeline_order_and_optional_generate(bag):
    tasks = bag["dags"]["obslab_pipeline"]["tasks"]
    assert tasks["stream"]["upstream"] == ["generate"]
    assert tasks["detect"]["upstream"] == ["stream"]
    assert tasks["narrate"]["upstream"] == ["detect"]
    assert tasks["generate"]["skip_unless"] == "generate_seconds"
    # a skipped generate must not skip the stream
    assert tasks["stream"]["trigger_rule"].lower().endswith("none_failed")
    # detect and narrate read the lab's store the stream wrote, not a replay's scratch store (their default)
    assert tasks["detect"]["fixed"]["source"] == tasks["narrate"]["fixed"]["source"] == "store"
    assert tasks["stream"]["fixed"]["send_late_event"] is False  # no demonstration event in scheduled runs


def test_every_parameter_a_dag_passes_is_declared_by_its_notebook_and_is_a_setting(bag):
    fields = set(Settings.model_fields)
    for dag_id, dag in bag["dags"].items():
        used = set()
        for task_id, task in dag["tasks"].items():
            declared = set(declared_parameters(notebook_path(task["notebook"])))
            assert set(task["fixed"]) <= declared, (dag_id, task_id)
            assert set(task["fixed"]) <= fields | CONTROLS, (dag_id, task_id)
            used |= declared
        # each DAG param reaches at least one notebook, under a setting's name
        assert set(dag["params"]) <= fields, dag_id
        assert set(dag["params"]) <= used, dag_id


# Notebook parameters that are not settings: per-run controls of a notebook (how long to run or to
# simulate, what to check, where this notebook writes its own file). Anything else is named as its setting.
CONTROLS = {"check_broker", "store_truth", "output_file", "available_now", "run_for_seconds", "continuous_seconds",
            "minutes", "service", "fault_id",  # service, fault_id: what notebook 05 looks at
            "source", "chart_service",  # 03, 04: which store they read (a replay's or the lab's); 03's chart
            "send_late_event", "aggregator"}  # 02: the late-event demonstration; 05, 06: Spark or DuckDB


@pytest.mark.parametrize("path", sorted(notebook_path("x").parent.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_parameters_are_named_as_settings(path):
    declared = declared_parameters(path)
    assert declared, f"{path.name} has no parameters cell"
    assert set(declared) - set(Settings.model_fields) <= CONTROLS, path.name
    for name, spec in declared.items():
        assert spec["inferred_type_name"] != "None", f"{path.name}: {name} has no type"
        assert spec["help"], f"{path.name}: {name} has no help comment"

"""views.runs: scheduled runs as the dashboard's Runs view shows them (a real DuckDB file)."""

from datetime import datetime, timedelta, timezone

from obslab import views
from obslab.schedule.tasks import record
from obslab.store import Store

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=timezone.utc)


def test_runs_summarise_each_dag_run_from_its_tasks(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    plan = [  # (run, task, status, start offset s, duration s or None while running)
        ("r1", "stream", "ok", 0, 20), ("r1", "detect", "ok", 20, 5),
        ("r2", "stream", "ok", 300, 20), ("r2", "detect", "failed", 320, 4),
        ("r3", "stream", "running", 600, None),
    ]
    for run, task, status, start, seconds in plan:
        record(store, f"obslab_pipeline/{run}/{task}", stage=task, status=status, dag_id="obslab_pipeline",
               dag_run_id=run, started_at=T0 + timedelta(seconds=start),
               finished_at=None if seconds is None else T0 + timedelta(seconds=start + seconds),
               output_notebook=f"/x/{run}/{task}.ipynb", error="boom" if status == "failed" else None)
    # a stage run outside Airflow (no dag_id) is not a scheduled run
    record(store, "cli-1", stage="detect", status="ok", started_at=T0)
    dag_runs, tasks = views.runs(store)
    assert list(dag_runs.dag_run_id) == ["r3", "r2", "r1"]  # newest first
    assert list(dag_runs.status) == ["running", "failed", "ok"]  # any failed task fails its run
    assert dag_runs.set_index("dag_run_id").loc["r1", "seconds"] == 25  # first start to last end
    assert dag_runs.set_index("dag_run_id").loc["r2", "tasks"] == "stream ok, detect failed"
    assert len(tasks) == 5 and tasks.iloc[0].task == "stream" and tasks.iloc[0].status == "running"
    assert tasks.set_index(["dag_run_id", "task"]).loc[("r2", "detect"), "error"] == "boom"

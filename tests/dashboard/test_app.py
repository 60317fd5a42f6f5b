"""The Streamlit app (AppTest) on a store made by the real pipeline code: the `demo` scenario's
evaluation (generator -> the stream's transform and sink -> detection), narrated by the template."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from obslab.narrate.backends import TemplateBackend
from obslab.narrate.run import narrate_pending
from obslab.store import Store

pytestmark = [pytest.mark.spark, pytest.mark.slow]
APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


@pytest.fixture()
def demo_store(evaluated, tmp_path, monkeypatch):
    path = tmp_path / "demo.duckdb"
    shutil.copy(evaluated("demo").store_path, path)
    store = Store(path)
    narrate_pending(store, TemplateBackend(), evaluated.settings)
    monkeypatch.setenv("DUCKDB_PATH", str(path))
    monkeypatch.setenv("STORE_LOCK_TIMEOUT_SECONDS", "1")
    return store


def test_the_app_shows_the_store_s_numbers_without_exception(demo_store):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    latest = {r[0]: r[1:] for r in demo_store.query(
        "SELECT service, request_count / 60.0, error_rate, p95_latency_ms FROM service_metrics "
        "QUALIFY row_number() OVER (PARTITION BY service ORDER BY window_start DESC) = 1")}
    shown = {m.label.split(" · ")[0]: m.value for m in at.metric if " · " in m.label}
    assert set(shown) == set(latest)
    for service, (rate, _, _) in latest.items():
        assert shown[service] == f"{rate:.1f} req/s"
    texts = " ".join(t.value for t in at.text)
    for service, (_, error_rate, p95) in latest.items():
        assert f"errors {100 * error_rate:.1f}%   p95 {p95:.0f} ms" in texts
    titles = {e.label for e in at.expander}
    assert len(titles) == demo_store.count("incidents") and all("rule-based text" in t for t in titles)


def test_a_busy_store_shows_the_last_data_as_stale(demo_store):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(60)"),
        str(demo_store.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        time.sleep(2.5)  # past the app's 2 s read cache, so this run has to read the (held) file
        at.run()
        assert not at.exception
        assert any("Stale since" in w.value for w in at.warning)
        assert at.metric  # the last data is still on screen
    finally:
        holder.kill()
        holder.wait()


def test_the_runs_view_lists_scheduled_runs_with_their_kept_notebooks(demo_store):
    from datetime import datetime, timedelta, timezone

    from obslab.schedule.tasks import record

    t0 = datetime(2026, 11, 28, 8, 0, tzinfo=timezone.utc)
    for task, status, offset in (("stream", "ok", 0), ("detect", "failed", 20)):
        record(demo_store, f"obslab_pipeline/scheduled__1/{task}", stage=task, status=status,
               dag_id="obslab_pipeline", dag_run_id="scheduled__1", started_at=t0 + timedelta(seconds=offset),
               finished_at=t0 + timedelta(seconds=offset + 10), output_notebook=f"/runs/scheduled__1/{task}.ipynb",
               error="RuntimeError: boom" if status == "failed" else None)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    frames = [d.value for d in at.dataframe]
    dag_runs = next(f for f in frames if "tasks" in f.columns and "dag_run_id" in f.columns)
    assert (dag_runs.iloc[0].dag_run_id, dag_runs.iloc[0].status) == ("scheduled__1", "failed")
    tasks = next(f for f in frames if "output_notebook" in f.columns)
    assert sorted(tasks.output_notebook) == ["/runs/scheduled__1/detect.ipynb", "/runs/scheduled__1/stream.ipynb"]
    assert "RuntimeError: boom" in set(tasks.error)

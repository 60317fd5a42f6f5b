"""The Streamlit app (AppTest) on a store made by the real pipeline code: the `demo` scenario's
evaluation (generator -> the stream's transform and sink -> detection), narrated by the template;
and on a small store of a service the generator does not know."""

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


@pytest.mark.spark
@pytest.mark.slow
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


@pytest.mark.spark
@pytest.mark.slow
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


@pytest.mark.spark
@pytest.mark.slow
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


def test_the_service_filter_lists_the_store_s_services_and_rates_cover_the_open_window(tmp_path, monkeypatch):
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    # inventory is no service of the generator's profiles; both have a final and an open window
    store.upsert("service_metrics", [
        {"service": service, "window_start": t0 + timedelta(minutes=m), "window_end": t0 + timedelta(minutes=m + 1),
         "request_count": n, "error_count": 0, "error_rate": 0.0, "avg_latency_ms": 50.0, "p50_latency_ms": 40.0,
         "p95_latency_ms": 90.0, "p99_latency_ms": 120.0, "is_final": m == 0, "updated_at": t0}
        for service, counts in (("checkout", (180, 90)), ("inventory", (60, 30))) for m, n in enumerate(counts)])
    # the stream has seen events up to 09:01:15: 15 s of the open 09:01 window
    store.upsert("stream_state", [{"query_id": "q", "max_event_time": t0 + timedelta(minutes=1, seconds=15),
                                   "watermark": t0, "window_seconds": 60, "updated_at": t0}])
    monkeypatch.setenv("DUCKDB_PATH", str(store.path))
    monkeypatch.setenv("STORE_LOCK_TIMEOUT_SECONDS", "1")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.multiselect(key="services").options == ["checkout", "inventory"]
    shown = {m.label: m.value for m in at.metric if " · " in m.label}
    # 90 and 30 requests over the 15 s seen (before: 1.5 and 0.5, per 60 s, and inventory not at all)
    assert shown == {"checkout · healthy": "6.0 req/s", "inventory · healthy": "2.0 req/s"}

    at.multiselect(key="services").select("inventory").run()  # choosing one narrows every view to it
    assert not at.exception
    assert [m.label for m in at.metric if " · " in m.label] == ["inventory · healthy"]

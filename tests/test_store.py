import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from obslab.errors import SchemaError, StoreError, StoreLockedError
from obslab.schema import TABLES
from obslab.store import MIGRATIONS, Store

WORKER = Path(__file__).with_name("store_worker.py")
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def metric_row(service="checkout", minute=0, count=10, **extra):
    start = T0 + timedelta(minutes=minute)
    row = {
        "service": service, "window_start": start, "window_end": start + timedelta(minutes=1),
        "request_count": count, "error_count": 1, "error_rate": 1 / count, "avg_latency_ms": 150.0,
        "p50_latency_ms": 140.0, "p95_latency_ms": 190.0, "p99_latency_ms": 230.0,
        "is_final": False, "updated_at": T0,
    }
    row.update(extra)
    return row


def test_migrations_run_twice_without_change(store_path):
    store = Store(store_path)
    assert store.migrate() == [v for v, _, _ in MIGRATIONS]  # first run applies everything
    assert store.migrate() == []  # second run: nothing to do
    assert store.schema_version() == MIGRATIONS[-1][0]
    tables = {r[0] for r in store.query("SELECT table_name FROM information_schema.tables")}
    assert set(TABLES) <= tables


def test_upsert_replaces_rows_with_the_same_key(store_path):
    store = Store(store_path)
    store.migrate()
    store.upsert("service_metrics", [metric_row(minute=0, count=10), metric_row(minute=1, count=5)])
    # The same window again, now final and complete: it replaces the partial row.
    store.upsert("service_metrics", pa.Table.from_pylist([metric_row(minute=0, count=42, is_final=True)]))
    rows = store.query(
        "SELECT window_start, request_count, is_final FROM service_metrics WHERE service = ? ORDER BY 1",
        ["checkout"],
    )
    assert [(r[1], r[2]) for r in rows] == [(42, True), (5, False)]
    assert rows[0][0] == T0  # timestamps come back timezone-aware, in UTC


def test_upsert_row_writes_one_row_replacing_its_key_with_values_as_parameters(store_path):
    store = Store(store_path)
    store.migrate()
    hostile = "x'); DROP TABLE pipeline_runs; --"
    store.upsert_row("pipeline_runs", {"run_id": "d/r/t", "stage": "stream", "started_at": T0, "status": "running",
                                       "error": hostile})
    store.upsert_row("pipeline_runs", {"run_id": "d/r/t", "stage": "stream", "started_at": T0, "status": "failed",
                                       "finished_at": T0 + timedelta(seconds=5), "error": hostile})
    rows = store.query("SELECT run_id, status, started_at, finished_at, error FROM pipeline_runs")
    assert rows == [("d/r/t", "failed", T0, T0 + timedelta(seconds=5), hostile)]
    with pytest.raises(SchemaError, match="no_such_column"):
        store.upsert_row("pipeline_runs", {"run_id": "x", "no_such_column": 1})


def test_writing_a_few_rows_as_dicts_imports_no_pandas(store_path):
    # the generator, detector, narrator and Airflow tasks write a few rows at a time; through Arrow
    # the first write imported pandas (1.2 s, ~40 MiB) into processes that have no other use for it
    code = ("import sys; from datetime import datetime, timezone; from pathlib import Path; "
            "from obslab.store import Store; s = Store(Path(sys.argv[1])); s.migrate(); "
            "s.upsert('pipeline_runs', [{'run_id': 'a', 'stage': 'x', 'started_at': datetime.now(timezone.utc), "
            "'status': 'ok'}]); print('pandas' in sys.modules, s.query('SELECT count(*) FROM pipeline_runs')[0][0])")
    done = subprocess.run([sys.executable, "-c", code, str(store_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "1"]


def test_values_are_parameters_not_sql(store_path):
    store = Store(store_path)
    store.migrate()
    hostile = "x'); DROP TABLE service_metrics; --"
    store.upsert("service_metrics", [metric_row(service=hostile)])
    assert store.query("SELECT count(*) FROM service_metrics WHERE service = ?", [hostile]) == [(1,)]


@pytest.mark.parametrize(
    "table, rows, message",
    [
        ("service_metrics", [{"service": "a"}], "missing required column"),  # names what is missing
        ("service_metrics", [{**metric_row(), "colour": "red"}], "unknown column"),
        ("no_such_table", [{"a": 1}], "unknown table"),
    ],
)
def test_bad_writes_name_the_problem(store_path, table, rows, message):
    store = Store(store_path)
    store.migrate()
    with pytest.raises(SchemaError, match=message):
        store.upsert(table, rows)


def test_reading_a_missing_store_says_what_to_do(tmp_path):
    with pytest.raises(StoreError, match="obslab store migrate"):
        Store(tmp_path / "absent.duckdb").query("SELECT 1")


def test_failed_write_rolls_back(store_path):
    store = Store(store_path)
    store.migrate()
    with pytest.raises(RuntimeError):
        with store.writer() as con:
            con.execute("DELETE FROM schema_migrations")
            raise RuntimeError("boom")
    assert store.schema_version() == MIGRATIONS[-1][0]


def _spawn(role, path, seconds):
    return subprocess.Popen([sys.executable, str(WORKER), role, str(path), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_lock_held_past_the_bound_names_the_holder(store_path):
    store = Store(store_path, lock_timeout_s=1.0)
    store.migrate()
    holder = _spawn("hold", store_path, 8)
    try:
        assert json.loads(holder.stdout.readline())["holding"]
        with pytest.raises(StoreLockedError) as info:
            store.query("SELECT 1")
        assert f"PID {holder.pid}" in str(info.value)  # says which process holds the file
        assert "store_worker.py hold" in str(info.value)
    finally:
        holder.kill()
        holder.wait()


def test_waiting_writer_gets_in_once_the_holder_lets_go(store_path):
    store = Store(store_path, lock_timeout_s=20.0)
    store.migrate()
    holder = _spawn("hold", store_path, 2)
    try:
        assert json.loads(holder.stdout.readline())["holding"]
        store.upsert("service_metrics", [metric_row()])  # retries until the holder is done
        assert store.count("service_metrics") == 1
    finally:
        holder.wait(timeout=30)


@pytest.mark.slow
def test_one_writer_and_two_readers_for_a_minute_see_no_error(store_path):
    seconds = float(os.environ.get("OBSLAB_CONCURRENCY_SECONDS", "60"))
    Store(store_path).migrate()
    workers = [_spawn("writer", store_path, seconds), _spawn("reader", store_path, seconds),
               _spawn("reader", store_path, seconds)]
    results = []
    for proc in workers:
        out, err = proc.communicate(timeout=seconds + 120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    writer, *readers = results
    assert writer["errors"] == [] and writer["ops"] > 10, writer
    for reader in readers:
        assert reader["errors"] == [] and reader["ops"] > 10, reader
        assert reader["monotonic"]  # readers see committed rows only, never fewer than before
    assert Store(store_path).count("service_metrics") == writer["ops"]

"""The replay (obslab.evaluation.replay): the windows it writes equal the stream's sink's after every
micro-batch, and an empty input still gets its one detection run, dated like a micro-batch."""

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from obslab.evaluation import EVALUATION_START, window_versions
from obslab.evaluation.replay import replay
from obslab.settings import load_settings
from obslab.store import Store


def test_an_empty_input_gets_one_detection_run_dated_a_trigger_and_a_poll_after_the_first_interval(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    store = Store(tmp_path / "empty.duckdb")
    store.migrate()
    partials = _partials(1, [], {"a": [("/x", 0)]})
    dead = partials.slice(0, 0)
    with store.held():
        run_seconds = replay(store, settings, partials, dead)
    # 09:00:00-09:00:05 is the first 5 s interval; then one trigger (5 s) and one poll (5 s)
    assert list(run_seconds) == [datetime(2026, 1, 5, 9, 0, 15, tzinfo=timezone.utc)]
    assert all(seconds >= 0 for seconds in run_seconds.values())


def _partials(seed: int, steps: list[int], endpoints: dict[str, list[tuple[str, int]]], lone: int | None = None,
              trigger: float = 5.0, window: int = 60) -> pa.Table:
    """Partials shaped like the transform's (one group per endpoint, window, latency bucket and error
    code), from random events in each trigger interval `steps`; endpoint (name, first step it sends).
    In step `lone` only the first endpoint sends, one event, at the first millisecond of the step."""
    from obslab.stream.transform import GAMMA

    rng = np.random.default_rng(seed)
    rows = []
    for k in steps:
        lo = k * trigger
        start = datetime.fromtimestamp(math.floor(lo / window) * window, timezone.utc)
        for service, eps in endpoints.items():
            for endpoint, since in eps:
                n = int(rng.poisson(5)) if k >= since else 0
                times = np.sort(rng.uniform(lo, lo + trigger, n))
                if k == lone:
                    first = (service, endpoint) == (next(iter(endpoints)), eps[0][0])
                    n, times = (1, np.array([lo])) if first else (0, np.array([]))
                latency = np.round(rng.lognormal(4.5, 0.6, n), 3)
                code = np.where(rng.random(n) < 0.15, rng.choice([500, 503], n), 0)
                bucket = np.ceil(np.log(np.maximum(latency, 0.001)) / math.log(GAMMA)).astype(int) - 1
                groups: dict = {}
                for t, lat, c, b in zip(times, latency, code, bucket):
                    g = groups.setdefault((int(b), int(c) or None), [0, 0, 0.0, 0.0])
                    g[0] += 1
                    g[1] += int(c >= 400)
                    g[2] += float(lat)
                    g[3] = max(g[3], float(t))
                for (b, c), (count, errors, total, newest) in groups.items():
                    rows.append({"service": service, "endpoint": endpoint, "window_start": start,
                                 "window_end": start + timedelta(seconds=window), "bucket": b, "error_code": c,
                                 "interval": k, "count": count, "errors": errors, "latency_sum": total,
                                 "max_event_time": datetime.fromtimestamp(round(newest, 3), timezone.utc)})
    schema = pa.schema([("service", pa.string()), ("endpoint", pa.string()),
                        ("window_start", pa.timestamp("us", "UTC")), ("window_end", pa.timestamp("us", "UTC")),
                        ("bucket", pa.int32()), ("error_code", pa.int32()), ("interval", pa.int64()),
                        ("count", pa.int64()), ("errors", pa.int64()), ("latency_sum", pa.float64()),
                        ("max_event_time", pa.timestamp("us", "UTC"))])
    return pa.Table.from_pylist(rows, schema)


def _windows(store, table: str) -> list[tuple]:
    keys = "service, endpoint, window_start" if table == "endpoint_metrics" else "service, window_start"
    return store.query(f"SELECT * EXCLUDE (updated_at) FROM {table} ORDER BY {keys}")


def _same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        x == pytest.approx(y, rel=1e-9) if isinstance(x, float) else x == y for r, q in zip(a, b) for x, y in zip(r, q))


@pytest.mark.slow  # a whole scenario replayed micro-batch by micro-batch
@pytest.mark.parametrize("cap", [
    50,  # the default: every endpoint keeps its name
    2,  # service a's third endpoint (and the busier of two new ones at once) goes to `other`
])
def test_the_replayed_windows_equal_the_stream_sinks_after_every_micro_batch(tmp_path, cap):
    from obslab.stream.sink import StreamSink
    from obslab.stream.transform import DEAD_KEYS

    settings = load_settings(data_dir=tmp_path).model_copy(update={"endpoint_max_per_service": cap})
    first = int(EVALUATION_START.timestamp() // 5)
    # 6 minutes of intervals with two gaps (no micro-batch: the watermark stands still) and endpoints
    # that start sending later (two in the same micro-batch). The micro-batch of 09:04:00 holds one
    # event, at 09:04:00.000: the watermark is then exactly the end of the 09:01 window, which is final.
    steps = [first + k for k in range(72) if not 30 <= k < 40 and k != 53]
    partials = _partials(7, steps, {"a": [("/x", 0), ("/y", 0), ("/z", first + 45)],
                                    "b": [("/p", 0), ("/q", first + 20), ("/r", first + 20)]}, lone=first + 48)
    endpoint_rows, service_rows, order, end = window_versions(partials, settings)
    assert order == steps and end == steps[-1] + 1
    replayed, merged = Store(tmp_path / "replayed.duckdb"), Store(tmp_path / "merged.duckdb")
    for store in (replayed, merged):
        store.migrate()
    sink = StreamSink(merged, settings, "test")
    dead = pa.table({k: pa.array([], t) for k, t in zip(DEAD_KEYS, [pa.string(), pa.int32(), pa.int64(), pa.string(),
                                                                   pa.string()])})
    columns = [c for c in partials.column_names if c != "interval"]
    with replayed.held(), merged.held():
        for batch_id, step in enumerate([*steps, end]):
            if step == end:
                sink.merge(batch_id, partials.slice(0, 0).select(columns), dead, finalize_all=True)
            else:
                mine = partials.filter(pa.compute.equal(partials["interval"], step))
                sink.merge(batch_id, mine.select(columns), dead)
            for table, rows in (("endpoint_metrics", endpoint_rows), ("service_metrics", service_rows)):
                at = rows.filter(pa.compute.equal(rows["step"], step)).drop_columns(["step"])
                replayed.upsert(table, at)
                assert _same(_windows(replayed, table), _windows(merged, table)), (table, step)
    names = {e for (e,) in merged.query("SELECT DISTINCT endpoint FROM endpoint_metrics WHERE service = 'a'")}
    assert names == ({"/x", "/y", "other"} if cap == 2 else {"/x", "/y", "/z"})
    assert merged.query("SELECT bool_and(is_final) FROM service_metrics")[0][0]  # the end of input finalizes all


_E10 = '{"event_id":"e10","event_time":"2026-01-05T09:00:02+00:00","service":"a","endpoint":"/x","latency_ms":1,"status_code":200}'

# One run's events file, line by line: (line, the reason the transform gives it; None: counted)
_LINES = [
    ('{"event_id":"e1","event_time":"2026-01-05T09:00:01+00:00","service":"a","endpoint":"/x",'
     '"latency_ms":100.0,"status_code":200}', None),
    ('{"event_id":"e2","event_time":"2026-01-05T09:00:03+00:00","service":"a","endpoint":"/x",'
     '"latency_ms":100.0,"status_code":200}', None),
    ('{"event_id":"e3","event_time":"2026-01-05T09:00:07+00:00","service":"a","endpoint":"/x",'
     '"latency_ms":250.5,"status_code":503}', None),
    ('{"event_id":"e4","event_time":"2026-01-05T09:01:00+00:00","service":"a","endpoint":"/x",'
     '"latency_ms":10,"status_code":200}', None),  # the first event of the next window
    ("not json", "malformed_json"),
    ("", "empty_payload"),
    ('{"event_id":"e5","event_time":"2026-01-05T09:00:02+00:00","service":"a","endpoint":"/x",'
     '"latency_ms":-1,"status_code":200}', "out_of_range:latency_ms"),
    ('{"event_id":"e6","event_time":"2026-01-05T09:00:02+00:00","service":"a","endpoint":"/x",'
     '"latency_ms":1,"status_code":700}', "out_of_range:status_code"),
    ('{"event_id":"e7","event_time":"2026-01-05T09:00:02+00:00","service":"a","endpoint":"x y",'
     '"latency_ms":1,"status_code":200}', "invalid:endpoint"),
    ('{"event_id":"e8","event_time":"yesterday","service":"a","endpoint":"/x",'
     '"latency_ms":1,"status_code":200}', "wrong_type:event_time"),
    ('{"event_id":"e9","event_time":"2026-01-05T09:00:02+00:00","endpoint":"/x",'
     '"latency_ms":1,"status_code":200}', "missing_field:service"),
    # two good events in one record: set aside whole, not counted as one (issue 26)
    (_E10 + " " + _E10.replace("e10", "e11"), "malformed_json"),
    (_E10 + " trailing", "malformed_json"),
    (_E10 + "}", "malformed_json"),
    (_E10.replace('"latency_ms":1', '"latency_ms":NaN'), "out_of_range:latency_ms"),  # not JSON, but read as a number
    (_E10.replace('"latency_ms":1', '"latency_ms":-Infinity'), "out_of_range:latency_ms"),
    (_E10.replace('"latency_ms":1', '"latency_ms":1.7e308'), "out_of_range:latency_ms"),  # over a day
]


def test_the_duckdb_aggregation_counts_a_known_file_as_the_transform_would(tmp_path):
    from obslab.evaluation.replay import aggregate_duckdb
    from obslab.stream.buckets import GAMMA

    settings = load_settings(data_dir=tmp_path, trigger_seconds=5.0, window_seconds=60)
    (tmp_path / "events" / "run=0").mkdir(parents=True)
    (tmp_path / "events" / "run=0" / "events.jsonl").write_text("\n".join(line for line, _ in _LINES) + "\n")
    [(partials, dead)] = aggregate_duckdb(tmp_path / "events", settings, [0])
    assert dead["reason"].to_pylist() == [r for _, r in _LINES if r]  # in file order
    assert dead["raw_payload"].to_pylist()[0] == "not json"
    rows = partials.to_pylist()
    nine = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
    # e1 and e2 share a 5 s interval (09:00:00-05) and a bucket; e3 is in the next interval, an error
    assert [(r["window_start"], r["interval"] - rows[0]["interval"], r["count"], r["errors"], r["error_code"])
            for r in rows] == [(nine, 0, 2, 0, None), (nine, 1, 1, 1, 503), (nine + timedelta(minutes=1), 12, 1, 0, None)]
    assert rows[0]["interval"] * 5 == nine.timestamp()  # intervals are trigger-long, counted from the epoch
    assert rows[0]["window_end"] == nine + timedelta(minutes=1)
    assert rows[0]["latency_sum"] == 200.0 and rows[0]["max_event_time"] == nine + timedelta(seconds=3)
    for row, latency in zip(rows, (100.0, 250.5, 10.0)):  # bucket b holds latencies in (GAMMA^b, GAMMA^(b+1)]
        assert GAMMA ** row["bucket"] < latency <= GAMMA ** (row["bucket"] + 1), (row, latency)


def test_an_unknown_aggregator_is_named(tmp_path):
    from obslab.evaluation.replay import aggregate_with

    with pytest.raises(ValueError, match="spark, duckdb"):
        aggregate_with("pandas", None, tmp_path, load_settings(data_dir=tmp_path), [0])


@pytest.mark.spark
def test_duckdb_and_spark_aggregate_the_same_events_alike(spark, tmp_path):
    from obslab.evaluation.replay import aggregate, aggregate_duckdb, generate
    from obslab.evaluation.runs import EvaluationRun, _plan, _run_settings

    settings = load_settings(data_dir=tmp_path)
    events = tmp_path / "events" / "run=0" / "events.jsonl"
    generate((0, EvaluationRun(_plan("demo"), 3, None, 3), _run_settings(settings, tmp_path / "run"), events))
    with events.open("a") as out:  # and every kind of bad line
        out.write("\n".join(line for line, reason in _LINES if reason) + "\n")
    [(in_spark, dead_spark)] = aggregate(spark, tmp_path / "events", settings, [0])
    [(in_duckdb, dead_duckdb)] = aggregate_duckdb(tmp_path / "events", settings, [0])
    keys = ["interval", "service", "endpoint", "window_start", "bucket", "error_code"]

    def rows(table):
        return table.select(in_spark.column_names).sort_by([(k, "ascending") for k in keys]).to_pylist()

    assert [(f.name, f.type) for f in in_spark.schema] == [(f.name, f.type) for f in in_duckdb.schema]
    a, b = rows(in_spark), rows(in_duckdb)
    assert len(a) == len(b) > 100
    for x, y in zip(a, b):
        assert {**x, "latency_sum": pytest.approx(x["latency_sum"], rel=1e-12)} == y
    assert sorted(dead_spark["reason"].to_pylist()) == sorted(dead_duckdb["reason"].to_pylist())
    assert [(f.name, f.type) for f in dead_spark.schema] == [(f.name, f.type) for f in dead_duckdb.schema]

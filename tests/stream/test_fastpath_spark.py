"""The fast path held against Spark's own parse (real Spark, real broker): every record it adds up is one the
full transform finds good, with the same window, bucket, latency, status and time; and a stream counts the
same store with it as without it, dead letters and all."""

from __future__ import annotations

import json
import random
import uuid
from datetime import timedelta

import pyarrow as pa
import pytest

from obslab.lab import Lab
from obslab.stream.fastpath import partials_fn
from obslab.stream.job import run_stream_job
from obslab.stream.transform import latency_bucket, parse_events, with_window
from tests.stream.helpers import T0, event_lines, lab_for, publish

def compact(event: dict) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def corpus(n: int, seed: int) -> list[str]:
    """Records near the generator's form: most in it, many one small step off it (valid or not)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        when = T0 + timedelta(microseconds=rng.randrange(-10**9, 10**9))
        event = {"event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                 "event_time": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:rng.choice([19, 23, 26])] + "Z",
                 "service": rng.choice(["checkout", "svc 9", "a" * 200, "x"]),
                 "endpoint": rng.choice(["/api/cart", "/", "/x;y=1:@!$&'()*+,", "/" + "e" * rng.randrange(120, 135)]),
                 "latency_ms": rng.choice([round(rng.uniform(0, 5000), 3), rng.randrange(0, 10**4), 0, 0.0001,
                                           86_400_000, 86_400_000.5, 1e-7, rng.uniform(0, 1)]),
                 "status_code": rng.choice([200, 404, 500, 503, 100, 599, 600, 99])}
        text = compact(event)
        step = rng.randrange(12)
        if step == 0:
            text = text.replace("Z\"", "+00:00\"")
        elif step == 1:
            text = text.replace(":", ": ", 1)
        elif step == 2:
            text = text.replace("-", "-0", 1) if rng.random() < 0.5 else text.replace("T", " ", 1)
        elif step == 3:
            text = text.replace('"status_code":', '"status_code":"').replace("}", '"}')
        out.append(text)
    return out


def fast_verdicts(values: list[str], watermark_us: int = 0) -> dict[int, dict | None]:
    """Per record (one at a time): the fast path's partial row, or None when it refers the record."""
    fn = partials_fn(window_seconds=60, endpoint_max_length=128, next_offsets={},
                     future_after_us=10**18, watermark_us=watermark_us)
    verdicts = {}
    for i, v in enumerate(values):
        table = pa.table({"partition": pa.array([0], pa.int32()), "offset": pa.array([i], pa.int64()),
                          "value": pa.array([v.encode()], pa.binary())})
        rows = pa.Table.from_batches(list(fn(iter(table.to_batches())))).to_pylist()
        assert len(rows) == 1
        verdicts[i] = None if rows[0]["referred_offset"] is not None else rows[0]
    return verdicts


@pytest.mark.spark
def test_what_the_fast_path_adds_up_the_transform_finds_good_and_the_same(spark):
    from pyspark.sql import functions as F

    values = corpus(600, seed=11) + event_lines(seconds=30)[:200]
    raw = spark.createDataFrame([("t", 0, i, v) for i, v in enumerate(values)],
                                "topic STRING, partition INT, offset LONG, value STRING")
    parsed = (with_window(parse_events(raw, 128), 60).withColumn("bucket", latency_bucket(F.col("latency_ms")))
              .withColumn("event_us", F.unix_micros("event_time"))
              .withColumn("window_us", F.unix_micros("window_start")))
    spark_rows = {r.kafka_offset: r for r in parsed.collect()}
    fast = fast_verdicts(values)
    taken = [i for i, v in fast.items() if v is not None]
    assert 300 < len(taken) < len(values)  # both kinds are in the corpus
    for i in taken:
        got, want = fast[i], spark_rows[i]
        assert want.reason is None, (values[i], want.reason)
        assert (got["service"], got["endpoint"]) == (want.service, want.endpoint)
        assert got["max_event_us"] == want.event_us, values[i]
        assert got["window_start_us"] == want.window_us
        assert got["latency_sum"] == want.latency_ms and got["bucket"] == want.bucket, values[i]
        assert got["error_code"] == (want.status_code if want.status_code >= 400 else None)
    # and what it refers is either bad or just not in the generator's form: the transform decides
    bad = sum(1 for i, v in fast.items() if v is None and spark_rows[i].reason is not None)
    assert bad > 50


def _tables(store) -> dict:
    q = {"service_metrics": "SELECT * EXCLUDE (updated_at) FROM service_metrics ORDER BY ALL",
         "endpoint_metrics": "SELECT * EXCLUDE (updated_at) FROM endpoint_metrics ORDER BY ALL",
         "latency_histograms": "SELECT * FROM latency_histograms ORDER BY ALL",
         "status_counts": "SELECT * FROM status_counts ORDER BY ALL",
         "dead": "SELECT kafka_partition, kafka_offset, raw_payload, reason FROM dead_letter_events ORDER BY ALL"}
    return {name: store.query(sql) for name, sql in q.items()}


def _same(a, b) -> bool:
    """Equal rows; floats to 1e-12 relative: the two paths add the same latencies in another order."""
    def close(x, y):
        return x == pytest.approx(y, rel=1e-12, abs=1e-9) if isinstance(x, float) else x == y
    return len(a) == len(b) and all(len(r) == len(s) and all(map(close, r, s)) for r, s in zip(a, b))


@pytest.mark.spark
@pytest.mark.kafka
def test_a_stream_counts_the_same_with_the_fast_path_as_without(spark, broker, lab_settings, tmp_path):
    lines = event_lines(seconds=300, seed=8)
    odd = corpus(400, seed=12) + ["", "{", "[]", json.dumps(json.loads(lines[0]))]
    mixed = lines[:1000] + odd + lines[1000:]
    s = lab_for(lab_settings, tmp_path)
    publish(s, mixed)
    results = {}
    for fast in (True, False):
        rs = s.model_copy(update={"stream_fast_path": fast, "checkpoint_name": f"fast-{fast}",
                                  "duckdb_path": tmp_path / f"fast-{fast}.duckdb"})
        store = Lab(rs).store
        report = run_stream_job(rs, spark=spark, store=store, available_now=True)
        results[fast] = (_tables(store), report.counters)
    (with_fast, c_fast), (without, c_slow) = results[True], results[False]
    assert c_fast.referred > 0 and c_slow.referred == 0  # the fast path ran, and referred some records
    assert c_fast.events == c_slow.events and c_fast.dead_letters == c_slow.dead_letters > 0
    for name in with_fast:
        assert _same(with_fast[name], without[name]), name

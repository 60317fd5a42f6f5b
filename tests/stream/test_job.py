import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pandas as pd
import pytest
from kafka import TopicPartition

from obslab.broker import consumer
from obslab.errors import CheckpointMismatchError
from obslab.settings import load_settings
from obslab.store import Store
from obslab.stream.job import aggregate_static, open_checkpoint, run_stream_job
from obslab.stream.sink import StreamSink
from obslab.stream.transform import parse_events
from tests.stream.helpers import T0, event_lines, lab_for, publish, same_counts, stored, truth


def test_a_checkpoint_made_with_other_window_settings_is_refused(tmp_path):
    first = open_checkpoint(load_settings(data_dir=tmp_path, window_seconds=60))
    assert open_checkpoint(load_settings(data_dir=tmp_path, window_seconds=60)) == first  # resumes
    with pytest.raises(CheckpointMismatchError, match=r"WINDOW_SECONDS=60.*WINDOW_SECONDS=30.*CHECKPOINT_NAME"):
        open_checkpoint(load_settings(data_dir=tmp_path, window_seconds=30))
    assert open_checkpoint(load_settings(data_dir=tmp_path, window_seconds=30, checkpoint_name="w30")) != first


@pytest.mark.spark
def test_a_replayed_batch_is_not_counted_twice(spark, tmp_path):
    settings = load_settings(data_dir=tmp_path)
    store = Store.from_settings(settings)
    store.migrate()
    lines = event_lines("clean", seconds=120)
    raw = spark.createDataFrame([("t", 0, i, v) for i, v in enumerate(lines)], "topic STRING, partition INT, offset LONG, value STRING")
    sink = StreamSink(store, settings, "q1", publish=False)
    sink.apply(parse_events(raw), batch_id=7)
    sink.apply(parse_events(raw), batch_id=7)  # what Spark does after a crash between commit and its log
    assert sink.counters.skipped_replays == 1
    assert same_counts(store, lines)


@pytest.mark.kafka
@pytest.mark.spark
def test_a_window_split_over_three_batches_ends_with_its_full_value(spark, broker, lab_settings, tmp_path):
    settings = lab_for(lab_settings, tmp_path)
    store = Store.from_settings(settings)
    lines = [line for line in event_lines("mixed", seconds=60, rate=300)]  # one minute: one window per service
    thirds = [lines[: len(lines) // 3], lines[len(lines) // 3: 2 * len(lines) // 3], lines[2 * len(lines) // 3:]]
    for part in thirds:
        publish(settings, part)
        run_stream_job(settings, available_now=True, spark=spark, store=store, publish=False)
    assert store.count("stream_batches") >= 3
    assert same_counts(store, lines)
    # Percentiles too: equal to aggregating all the events at once (histograms add up exactly).
    whole = Store(tmp_path / "whole.duckdb")
    whole.migrate()
    raw = spark.createDataFrame([("t", 0, i, v) for i, v in enumerate(lines)], "topic STRING, partition INT, offset LONG, value STRING")
    aggregate_static(spark, raw, settings, whole)
    cols = "service, window_start, request_count, avg_latency_ms, p50_latency_ms, p95_latency_ms, p99_latency_ms"
    split = store.query(f"SELECT {cols} FROM service_metrics ORDER BY 1, 2")
    once = whole.query(f"SELECT {cols} FROM service_metrics ORDER BY 1, 2")
    assert [r[:3] + tuple(round(v, 6) for v in r[3:]) for r in split] == \
           [r[:3] + tuple(round(v, 6) for v in r[3:]) for r in once]
    assert not any(store.query("SELECT is_final FROM service_metrics")[0])  # no later data: still open
    # The error mix: failed requests per endpoint, window and status code, merged over the batches.
    events = pd.DataFrame([json.loads(line) for line in lines])
    failed = events[events.status_code >= 400]
    want = sorted((s, e, int(c), int(n)) for (s, e, c), n in failed.groupby(["service", "endpoint", "status_code"]).size().items())
    got = sorted(tuple(r) for r in store.query("SELECT service, endpoint, status_code, sum(count) FROM status_counts GROUP BY ALL"))
    assert got == want and len(want) > 3


@pytest.mark.kafka
@pytest.mark.spark
def test_malformed_events_go_to_the_dead_letters_and_good_ones_are_all_counted(spark, broker, lab_settings, tmp_path):
    settings = lab_for(lab_settings, tmp_path)
    store = Store.from_settings(settings)
    good = event_lines("mixed", seconds=500, rate=20)[:10_000]
    assert len(good) == 10_000
    kinds = ["{broken", "", '{"event_id": "x"}', json.dumps({**json.loads(good[0]), "latency_ms": -3}),
             json.dumps({**json.loads(good[0]), "status_code": "teapot"})]
    bad = [kinds[i % len(kinds)] for i in range(1_000)]
    mixed = good + bad
    random.Random(1).shuffle(mixed)
    publish(settings, mixed)
    report = run_stream_job(settings, available_now=True, spark=spark, store=store)
    assert report.counters.events == 10_000 and report.counters.dead_letters == 1_000
    assert store.count("dead_letter_events") == 1_000  # all bad, each with topic, partition and offset
    reasons = dict(store.query("SELECT reason, count(*) FROM dead_letter_events GROUP BY 1"))
    assert reasons == {"malformed_json": 200, "empty_payload": 200, "missing_field:event_time": 200,
                       "out_of_range:latency_ms": 200, "wrong_type:status_code": 200}
    assert same_counts(store, good)  # all good counted, nothing else
    # Every updated window was also published to aggregated_metrics, keyed by service.
    c = consumer(settings)
    parts = [TopicPartition(settings.topic_aggregated_metrics, p) for p in range(settings.kafka_partitions)]
    assert sum(c.end_offsets(parts).values()) == report.counters.published > 0
    c.close()


@pytest.mark.kafka
@pytest.mark.spark
def test_events_behind_the_watermark_are_kept_as_late(spark, broker, lab_settings, tmp_path):
    settings = lab_for(lab_settings, tmp_path)
    store = Store.from_settings(settings)
    lines = event_lines("clean", seconds=600)  # 09:00-09:10: watermark 09:08 afterwards
    publish(settings, lines)
    run_stream_job(settings, available_now=True, spark=spark, store=store, publish=False)
    before = stored(store)
    stale = {**json.loads(lines[0]), "event_id": "late-1", "event_time": "2026-03-01T09:01:30.000Z"}
    fresh = {**json.loads(lines[0]), "event_id": "ok-1", "event_time": "2026-03-01T09:09:30.000Z"}
    publish(settings, [json.dumps(stale), json.dumps(fresh)])
    run_stream_job(settings, available_now=True, spark=spark, store=store, publish=False)
    assert store.query("SELECT reason, raw_payload FROM dead_letter_events")[0][0] == "late"
    after = stored(store)
    changed = after.merge(before, on=["service", "window_start"], suffixes=("", "_before"))
    changed = changed[changed.request_count != changed.request_count_before]
    assert list(changed.window_start.dt.strftime("%H:%M")) == ["09:09"]  # only the open window took the event
    # Watermark = latest event (09:09:59.9) - 120 s = 09:07:59.9: windows ending by then are final.
    finals = dict(store.query("SELECT strftime(window_start, '%H:%M'), bool_and(is_final) FROM service_metrics "
                              "GROUP BY 1"))
    assert finals == {f"09:0{m}": m < 7 for m in range(10)}


def _batches(store) -> int:
    try:
        return store.count("stream_batches")
    except Exception:  # noqa: BLE001 - the file may not exist yet
        return 0


@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.slow
def test_exactly_once_across_three_sigkills(spark, broker, lab_settings, tmp_path):
    settings = lab_for(lab_settings, tmp_path)
    store = Store.from_settings(settings)
    lines = event_lines("mixed", seconds=1800, rate=30)
    publish(settings, lines)
    env = {**os.environ, "DATA_DIR": str(tmp_path), "DUCKDB_PATH": str(settings.duckdb_path),
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "TOPIC_RAW_EVENTS": settings.topic_raw_events,
           "TOPIC_AGGREGATED_METRICS": settings.topic_aggregated_metrics,
           "TRIGGER_SECONDS": "0.5", "MAX_OFFSETS_PER_TRIGGER": "1500"}
    rng = random.Random(20261127)
    for kill in range(3):
        seen = _batches(store)
        proc = subprocess.Popen([sys.executable, "-m", "obslab.cli", "stream"], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while _batches(store) <= seen and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert _batches(store) > seen, "the stream made no progress before the kill"
        time.sleep(rng.uniform(0.0, 3.0))  # a random point: mid-batch, mid-commit, or between batches
        os.killpg(proc.pid, signal.SIGKILL)  # the Python driver and its JVM, no chance to clean up
        proc.wait()
    assert 0 < _batches(store)
    run_stream_job(settings, available_now=True, spark=spark, store=store, publish=False)
    assert store.count("dead_letter_events") == 0
    assert same_counts(store, lines)  # zero lost, zero double counted
    assert stored(store).request_count.sum() == len(lines) == truth(lines).request_count.sum()


@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.slow
def test_sigterm_stops_the_continuous_stream_cleanly(broker, lab_settings, tmp_path):
    settings = lab_for(lab_settings, tmp_path)
    lines = event_lines("clean", seconds=120)
    publish(settings, lines)
    env = {**os.environ, "DATA_DIR": str(tmp_path), "DUCKDB_PATH": str(settings.duckdb_path),
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers, "TOPIC_RAW_EVENTS": settings.topic_raw_events,
           "TOPIC_AGGREGATED_METRICS": settings.topic_aggregated_metrics, "TRIGGER_SECONDS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "obslab.cli", "stream", "--json"], env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = Store.from_settings(settings)
    deadline = time.monotonic() + 180
    while _batches(store) == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["stopped_by"] == "signal" and report["events"] == len(lines)
    assert same_counts(store, lines)
    deadline = time.monotonic() + 30  # the JVM exits once the driver's pipe to it closes
    while time.monotonic() < deadline:
        leftover = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
        if not leftover:
            break
        time.sleep(0.5)
    assert leftover == []  # no JVM of the stream is left behind

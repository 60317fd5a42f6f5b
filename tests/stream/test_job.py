import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from kafka import TopicPartition
from kafka.admin import NewTopic

from obslab.broker import admin_client, consumer
from obslab.errors import CheckpointBusyError, CheckpointMismatchError, OffsetsMismatchError, StoreWindowMismatchError
from obslab.lab import Lab
from obslab.settings import load_settings
from obslab.store import Store
from obslab.stream.counters import SinkCounters
from obslab.stream.job import StreamReport, aggregate_static, open_checkpoint, run_stream_job
from obslab.stream.start import checkpoint_path
from obslab.stream.sink import StreamSink
from obslab.stream.transform import parse_events
from tests.stream.helpers import T0, event_lines, lab_for, publish, same_counts, stored, truth

def test_a_store_with_windows_of_another_length_is_refused(tmp_path):
    store = Store(tmp_path / "observability.duckdb")
    store.migrate()
    store.upsert("stream_state", [{"query_id": "q", "window_seconds": 60, "updated_at": T0}])  # a 60 s stream wrote here
    # A new checkpoint does not help: windows of 30 s would land beside the 60 s ones in the same tables.
    settings = load_settings(data_dir=tmp_path, window_seconds=30, checkpoint_name="another")
    with pytest.raises(StoreWindowMismatchError, match=r"WINDOW_SECONDS=60, but .* WINDOW_SECONDS=30.*DUCKDB_PATH"):
        run_stream_job(settings, spark=None, store=store)
    assert not checkpoint_path(settings).joinpath("obslab.json").exists()  # refused before the checkpoint was made


def test_a_checkpoint_made_with_other_window_settings_is_refused(tmp_path):
    first = open_checkpoint(load_settings(data_dir=tmp_path, window_seconds=60))
    assert open_checkpoint(load_settings(data_dir=tmp_path, window_seconds=60)) == first  # resumes
    with pytest.raises(CheckpointMismatchError, match=r"WINDOW_SECONDS=60.*WINDOW_SECONDS=30.*CHECKPOINT_NAME"):
        open_checkpoint(load_settings(data_dir=tmp_path, window_seconds=30))
    assert open_checkpoint(load_settings(data_dir=tmp_path, window_seconds=30, checkpoint_name="w30")) != first


@pytest.mark.spark
def test_a_replayed_batch_is_not_counted_twice(spark, tmp_path):
    settings = load_settings(data_dir=tmp_path)
    store = Lab(settings).store
    lines = event_lines("clean", seconds=120)
    raw = spark.createDataFrame([("t", 0, i, v) for i, v in enumerate(lines)], "topic STRING, partition INT, offset LONG, value STRING")
    sink = StreamSink(store, settings, "q1")
    sink.apply(parse_events(raw, settings.endpoint_max_length), batch_id=7)
    sink.apply(parse_events(raw, settings.endpoint_max_length), batch_id=7)  # what Spark does after a crash between commit and its log
    assert sink.counters.skipped_replays == 1
    assert same_counts(store, lines)


@pytest.mark.kafka
@pytest.mark.spark
def test_a_window_split_over_three_batches_ends_with_its_full_value(spark, broker, lab_settings, tmp_path):
    settings = lab_for(lab_settings, tmp_path)
    store = Lab(settings).store
    lines = [line for line in event_lines("mixed", seconds=60, rate=300)]  # one minute: one window per service
    thirds = [lines[: len(lines) // 3], lines[len(lines) // 3: 2 * len(lines) // 3], lines[2 * len(lines) // 3:]]
    for part in thirds:
        publish(settings, part)
        run_stream_job(settings, available_now=True, spark=spark, store=store)
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
    store = Lab(settings).store
    good = event_lines("mixed", seconds=540, rate=20)[:10_000]  # arrivals are Poisson: ~10,800 to take 10,000 from
    assert len(good) == 10_000
    kinds = ["{broken", "", '{"event_id": "x"}', json.dumps({**json.loads(good[0]), "latency_ms": -3}),
             json.dumps({**json.loads(good[0]), "status_code": "teapot"}),
             json.dumps({**json.loads(good[0]), "endpoint": "/api/search?q=" + "x" * 200})]
    bad = [kinds[i % len(kinds)] for i in range(1_200)]
    mixed = good + bad
    random.Random(1).shuffle(mixed)
    publish(settings, mixed)
    with Lab(settings, spark=spark, store=store) as lab:
        report = run_stream_job(settings, available_now=True, spark=spark, store=store, feeds=lab.feeds)
    assert report.counters.events == 10_000 and report.counters.dead_letters == 1_200
    assert store.count("dead_letter_events") == 1_200  # all bad, each with topic, partition and offset
    reasons = dict(store.query("SELECT reason, count(*) FROM dead_letter_events GROUP BY 1"))
    assert reasons == {"malformed_json": 200, "empty_payload": 200, "missing_field:event_time": 200,
                       "out_of_range:latency_ms": 200, "wrong_type:status_code": 200, "invalid:endpoint": 200}
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
    store = Lab(settings).store
    lines = event_lines("clean", seconds=600)  # 09:00-09:10: watermark 09:08 afterwards
    publish(settings, lines)
    run_stream_job(settings, available_now=True, spark=spark, store=store)
    before = stored(store)
    stale = {**json.loads(lines[0]), "event_id": "late-1", "event_time": "2026-03-01T09:01:30.000Z"}
    fresh = {**json.loads(lines[0]), "event_id": "ok-1", "event_time": "2026-03-01T09:09:30.000Z"}
    publish(settings, [json.dumps(stale), json.dumps(fresh)])
    run_stream_job(settings, available_now=True, spark=spark, store=store)
    assert store.query("SELECT reason, raw_payload FROM dead_letter_events")[0][0] == "late"
    after = stored(store)
    changed = after.merge(before, on=["service", "window_start"], suffixes=("", "_before"))
    changed = changed[changed.request_count != changed.request_count_before]
    assert list(changed.window_start.dt.strftime("%H:%M")) == ["09:09"]  # only the open window took the event
    # Watermark = latest event (09:09:59.9) - 120 s = 09:07:59.9: windows ending by then are final.
    finals = dict(store.query("SELECT strftime(window_start, '%H:%M'), bool_and(is_final) FROM service_metrics "
                              "GROUP BY 1"))
    assert finals == {f"09:0{m}": m < 7 for m in range(10)}


@pytest.mark.kafka
@pytest.mark.spark
def test_an_event_dated_2099_neither_stops_the_stream_nor_counts(spark, broker, lab_settings, tmp_path):
    settings = lab_for(lab_settings, tmp_path)
    store = Lab(settings).store
    lines = event_lines("clean", seconds=120)  # 1,200 normal events, 09:00-09:02
    bad = json.dumps({**json.loads(lines[0]), "event_id": "from-2099", "event_time": "2099-01-01T00:00:00Z"})
    futures = []
    for part in (lines[:600], [bad], lines[600:]):  # the measurement: available-now after each
        publish(settings, part)
        futures.append(run_stream_job(settings, available_now=True, spark=spark, store=store)
                       .counters.future)
    assert same_counts(store, lines)  # every normal event counted, and no window in 2099
    assert store.query("SELECT reason, raw_payload FROM dead_letter_events") == [("future", bad)]
    assert futures == [0, 1, 0]
    # The watermark follows the real events (newest 09:01:59.9, minus 120 s), not the year 2099.
    assert store.query("SELECT max(watermark) FROM stream_state")[0][0] < T0


def _commits(settings) -> int:
    return len([f for f in (checkpoint_path(settings) / "spark" / "commits").glob("*") if f.name.isdigit()])


@pytest.mark.kafka
@pytest.mark.spark
def test_a_lost_or_replaced_checkpoint_resumes_where_the_store_stopped(spark, broker, lab_settings, tmp_path):
    settings = lab_for(lab_settings, tmp_path)
    store = Lab(settings).store
    lines = event_lines("clean", seconds=240)  # 2,400 events, 09:00-09:04
    publish(settings, lines[:600])
    assert run_stream_job(settings, available_now=True, spark=spark, store=store).started_from == \
        "topic start"
    # Mid-run: a continuous stream taking 60 events per batch is stopped once it has committed one batch
    # of the next 600; then its checkpoint is deleted.
    publish(settings, lines[600:1200])
    committed, stop = _commits(settings), threading.Event()

    def stop_after_a_commit():
        while not stop.is_set():
            if _commits(settings) > committed:
                stop.set()
            time.sleep(0.1)

    threading.Thread(target=stop_after_a_commit, daemon=True).start()
    slow = settings.model_copy(update={"max_offsets_per_trigger": 60, "trigger_seconds": 0.5})
    run_stream_job(slow, stop=stop, run_for_seconds=600, spark=spark, store=store)
    print("counted before the checkpoint was deleted:", store.query("SELECT sum(request_count) FROM service_metrics"))
    shutil.rmtree(checkpoint_path(settings))
    publish(settings, lines[1200:1800])
    resumed = run_stream_job(settings, available_now=True, spark=spark, store=store)
    assert resumed.started_from == "store offsets"
    assert same_counts(store, lines[:1800])  # 1,800 events, each counted once
    # A replaced checkpoint (another CHECKPOINT_NAME) starts at the store's offsets too: nothing new to count.
    renamed = run_stream_job(settings.model_copy(update={"checkpoint_name": "replacement"}), available_now=True,
                             spark=spark, store=store)
    assert renamed.started_from == "store offsets" and renamed.counters.events == 0
    assert same_counts(store, lines[:1800])
    # Only Spark's part of the checkpoint lost: its batches are numbered from 0 again, and none of them may
    # be taken for a batch of the same number applied earlier.
    shutil.rmtree(checkpoint_path(settings) / "spark")
    publish(settings, lines[1800:])
    again = run_stream_job(settings, available_now=True, spark=spark, store=store)
    assert again.started_from == "store offsets" and again.counters.events == len(lines) - 1800  # Poisson: ~600
    assert same_counts(store, lines)  # 2,400 events, each counted once
    # The store knows what it consumed: its next offsets are the topic's end offsets.
    c = consumer(settings)
    ends = c.end_offsets([TopicPartition(settings.topic_raw_events, p) for p in range(settings.kafka_partitions)])
    c.close()
    assert dict(store.query("SELECT kafka_partition, next_offset FROM stream_offsets")) == \
        {tp.partition: end for tp, end in ends.items()}


def _recreate_topic(settings) -> None:
    admin = admin_client(settings)
    admin.delete_topics([settings.topic_raw_events])
    deadline = time.monotonic() + 60
    while True:  # deletion completes in the background; creating the name again fails until it has
        try:
            admin.create_topics([NewTopic(settings.topic_raw_events, settings.kafka_partitions, 1)])
            break
        except Exception:  # noqa: BLE001 - TopicAlreadyExistsError while the old topic is being deleted
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    admin.close()


@pytest.mark.kafka
@pytest.mark.spark
def test_a_topic_deleted_and_created_again_is_refused(spark, broker, lab_settings, tmp_path):
    settings = lab_for(lab_settings, tmp_path)
    store = Lab(settings).store
    lines = event_lines("clean", seconds=60)
    publish(settings, lines)
    run_stream_job(settings, available_now=True, spark=spark, store=store)
    _recreate_topic(settings)
    publish(settings, lines[:100])  # offsets 0-99 again: the store has counted beyond them
    with pytest.raises(OffsetsMismatchError, match="deleted and created again.*new store"):
        run_stream_job(settings, available_now=True, spark=spark, store=store)
    assert same_counts(store, lines)  # nothing of the new topic was taken for counted or counted


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
    store = Lab(settings).store
    lines = event_lines("mixed", seconds=1800, rate=30)
    publish(settings, lines)
    env = {**os.environ, "DATA_DIR": str(tmp_path), "DUCKDB_PATH": str(settings.duckdb_path),
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "TOPIC_RAW_EVENTS": settings.topic_raw_events,
           "TOPIC_AGGREGATED_METRICS": settings.topic_aggregated_metrics,
           "TRIGGER_SECONDS": "0.5", "MAX_OFFSETS_PER_TRIGGER": "1500"}
    spark_dir = checkpoint_path(settings) / "spark"
    rng = random.Random(20261127)
    logs = [tmp_path / f"stream-{kill}.log" for kill in range(3)]
    for kill in range(3):
        run_env = dict(env)
        if kill == 1:
            # The second run publishes to a feed topic that does not exist (the broker creates none on its
            # own): after each store commit the sink waits up to 10 s for it, and only then does Spark write
            # the batch to its checkpoint. Killed as soon as a batch is in the store, the run dies between the
            # two commits, the case the ledger is for.
            run_env["TOPIC_AGGREGATED_METRICS"] = f"missing_{settings.topic_raw_events}"
        seen = _batches(store)
        with open(logs[kill], "w") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "obslab.cli", "-v", "stream"], env=run_env,
                                    start_new_session=True, stdout=subprocess.DEVNULL, stderr=log_file)
        deadline = time.monotonic() + 180
        while _batches(store) <= seen and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, logs[kill].read_text()[-2000:]
        assert _batches(store) > seen, "the stream made no progress before the kill"
        if kill != 1:
            time.sleep(rng.uniform(0.0, 3.0))  # a random point: mid-batch, mid-commit, or between batches
        os.killpg(proc.pid, signal.SIGKILL)  # the Python driver and its JVM, no chance to clean up
        proc.wait()
        if kill == 1:
            query_id, between = store.query("SELECT query_id, max(batch_id) FROM stream_batches GROUP BY 1")[0]
            assert (spark_dir / "offsets" / str(between)).exists()  # Spark planned it ...
            assert not (spark_dir / "commits" / str(between)).exists()  # ... the store has it, the checkpoint not
    assert 0 < _batches(store)
    run_stream_job(settings, available_now=True, spark=spark, store=store)
    assert store.count("dead_letter_events") == 0
    assert same_counts(store, lines)  # zero lost, zero double counted
    assert stored(store).request_count.sum() == len(lines) == truth(lines).request_count.sum()
    # The next run replayed that batch first (Spark re-runs a batch it has no commit for), found it in the
    # store and skipped it: the counts above include it once.
    assert f"batch {between} of query {query_id} is in the store already" in logs[2].read_text(), \
        logs[2].read_text()[-3000:]


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
    store = Lab(settings).store
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


def test_the_stream_report_s_json_form_flattens_the_counters():
    counters = SinkCounters(batches=3, skipped_replays=1, events=900, dead_letters=4, late=2, future=1,
                            endpoint_overflow=5, skipped_spans=6, last_watermark=T0, published=7, referred=8,
                            errors=["not in the report"])
    report = StreamReport("q-1", "/ck/main", 12.345, counters, "run-for-seconds", started_from="topic start")
    assert report.as_dict() == {
        "query_id": "q-1", "checkpoint": "/ck/main", "seconds": 12.3, "batches": 3, "skipped_replays": 1,
        "events": 900, "dead_letters": 4, "late": 2, "future": 1, "endpoint_overflow": 5, "skipped_spans": 6,
        "referred": 8, "published": 7, "watermark": "2026-03-01T09:00:00+00:00",  # ISO text with its offset
        "started_from": "topic start", "stopped_by": "run-for-seconds"}
    no_batch = StreamReport("q-2", "/ck/main", 0.0, SinkCounters(), "available-now")
    assert no_batch.as_dict()["watermark"] is None  # no batch, no watermark


def test_a_continuous_stream_waits_for_a_checkpoint_in_use_and_an_available_now_run_does_not(tmp_path):
    from obslab.stream.job import CheckpointLock

    settings = load_settings(data_dir=tmp_path)
    held = CheckpointLock(settings).__enter__()  # a scheduled available-now run, say
    with pytest.raises(CheckpointBusyError, match="in use by PID"):
        CheckpointLock(settings).__enter__()  # the available-now kind refuses at once
    acquired, stop = threading.Event(), threading.Event()

    def continuous():
        with CheckpointLock(settings, wait=True, stop=stop):
            acquired.set()

    waiter = threading.Thread(target=continuous)
    waiter.start()
    assert not acquired.wait(2.0)  # it waits while the lock is held...
    held.__exit__(None, None, None)
    assert acquired.wait(60)  # ...and takes it once released
    waiter.join(timeout=60)
    stopped = CheckpointLock(settings).__enter__()
    stop.set()
    with pytest.raises(CheckpointBusyError):  # a stop ends the wait with the error
        CheckpointLock(settings, wait=True, stop=stop).__enter__()
    stopped.__exit__(None, None, None)

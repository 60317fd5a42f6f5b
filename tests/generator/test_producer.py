import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from kafka import TopicPartition
from kafka.admin import NewTopic

from obslab.broker import admin_client, consumer
from obslab.errors import BrokerError
from obslab.generator.producer import ConfluentSink, KafkaSink, faults_file_for
from obslab.generator.run import RunPlan, generate
from obslab.generator.scenario import load_scenario
from obslab.settings import load_settings
from obslab.store import Store
from tests.conftest import free_port

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def test_ground_truth_in_the_store_matches_the_schedule(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="mixed")
    store = Store.from_settings(settings)
    report, _ = generate(RunPlan(to_file=tmp_path / "e.jsonl", start=T0), settings, store=store)
    rows = store.query("SELECT fault_type, service, endpoint, start_time, end_time, magnitude, scenario "
                       "FROM injected_incidents WHERE run_id = ? ORDER BY fault_id", [report.run_id])
    expected = [
        (f.type, f.service, f.effective_endpoint, T0 + timedelta(seconds=f.start_seconds),
         T0 + timedelta(seconds=f.start_seconds + f.duration_seconds), f.effective_magnitude, "mixed")
        for f in load_scenario("mixed").faults
    ]
    assert rows == expected  # every fault, with its service, endpoint, times and magnitude, and closed


def test_a_run_cut_short_closes_its_open_faults_at_the_stop(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="demo")
    store = Store.from_settings(settings)
    report, _ = generate(RunPlan(to_file=tmp_path / "e.jsonl", start=T0, duration_s=90), settings, store=store)
    rows = store.query("SELECT fault_id, start_time, end_time FROM injected_incidents WHERE run_id = ?",
                       [report.run_id])
    # Only the fault that actually started (at 60 s) is ground truth, and it ended with the run at 90 s.
    assert rows == [("f000", T0 + timedelta(seconds=60), T0 + timedelta(seconds=90))]


def test_without_store_the_ground_truth_goes_beside_the_file(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="demo")
    events = tmp_path / "demo.jsonl"
    report, _ = generate(RunPlan(to_file=events, store_truth=False, start=T0), settings)
    lines = [json.loads(line) for line in faults_file_for(events).read_text().splitlines()]
    assert [(r["fault_id"], r["end_time"] is None) for r in lines] == [
        ("f000", True), ("f000", False), ("f001", True), ("f001", False)]  # opened, then closed
    assert not (tmp_path / "observability.duckdb").exists()
    assert sum(1 for _ in events.open()) == report.events_sent == 6000


def test_backfill_writes_fault_free_history_before_the_run(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="demo", backfill_minutes=5)
    events = tmp_path / "e.jsonl"
    report, backfill = generate(RunPlan(to_file=events, store_truth=False, start=T0, duration_s=60), settings)
    times = [json.loads(line)["event_time"] for line in events.read_text().splitlines()]
    assert backfill.events_sent == 3000 and report.events_sent == 600
    assert times[0].startswith("2026-03-01T08:55") and times[2999] < "2026-03-01T09:00"  # past timestamps first


@pytest.mark.parametrize("sink", [KafkaSink, ConfluentSink])
def test_unreachable_broker_is_a_clear_error_after_bounded_retries(sink):
    settings = load_settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(BrokerError, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+ after 2 attempts.*broker start"):
        sink(settings, connect_attempts=2, first_backoff_s=0.1)


def _consume_all(settings, topic, expected, timeout_s=60):
    c = consumer(settings)
    parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    records = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = c.poll(timeout_ms=500)
        for recs in batch.values():
            records.extend(recs)
        if expected is not None and len(records) >= expected and not batch:
            break
        if expected is None and not batch and time.monotonic() > deadline - timeout_s + 5:
            break
    c.close()
    return records


def _fresh_topic(settings, name):
    admin = admin_client(settings)
    admin.create_topics([NewTopic(name, settings.kafka_partitions, 1)])
    admin.close()
    return settings.model_copy(update={"topic_raw_events": name})


@pytest.mark.kafka
@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_ten_thousand_events_reach_the_broker_and_are_consumed_in_full(broker, lab_settings, tmp_path, client):
    settings = _fresh_topic(lab_settings, f"gen10k_{client.replace('-', '_')}").model_copy(
        update={"scenario": "mixed", "kafka_client": client})
    report, _ = generate(RunPlan(max_rate=True, count=10_000, start=T0, store_truth=False), settings)
    assert report.events_acked == report.events_sent == 10_000
    records = _consume_all(settings, settings.topic_raw_events, 10_000)
    events = [json.loads(r.value) for r in records]
    assert len(events) == 10_000 and len({e["event_id"] for e in events}) == 10_000
    assert all(r.key.decode() == e["service"] for r, e in zip(records, events))  # key = service
    by_partition = {}
    for r, e in zip(records, events):
        by_partition.setdefault(e["service"], set()).add(r.partition)
    assert all(len(p) == 1 for p in by_partition.values())  # one service, one partition


@pytest.mark.kafka
def test_sigterm_mid_run_loses_no_acknowledged_event(broker, lab_settings, tmp_path):
    settings = _fresh_topic(lab_settings, "sigterm_events")
    env = {**os.environ, "DATA_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "TOPIC_RAW_EVENTS": "sigterm_events", "SCENARIO": "clean"}
    proc = subprocess.Popen([sys.executable, "-m", "obslab.cli", "generate", "--rate", "2000", "--duration", "120",
                             "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until events are flowing, then stop the run in the middle.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        offsets = consumer(settings).end_offsets([TopicPartition("sigterm_events", p) for p in range(3)])
        if sum(offsets.values()) > 2000:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    report = json.loads(out)["run"]
    assert report["stopped_early"] == "stopped by signal"
    assert 2000 < report["events_acked"] == report["events_sent"] < 240_000
    records = _consume_all(settings, "sigterm_events", report["events_acked"])
    assert len(records) == report["events_acked"]  # every acknowledged event is in the topic, none twice
    assert len({json.loads(r.value)["event_id"] for r in records}) == len(records)

import json
import math
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
from obslab.generator.producer import ConfluentSink, KafkaSink, PartitionOfKey, faults_file_for
from obslab.generator.run import RunPlan, generate
from obslab.generator.scenario import load_scenario
from obslab.settings import load_settings
from obslab.store import Store
from tests.conftest import free_port

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def within(observed, expected, sd, z=3.29):
    """Inside a two-sided bound with a 1-in-1000 false-alarm chance."""
    return abs(observed - expected) <= z * sd


def test_ground_truth_in_the_store_matches_the_schedule(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="mixed")
    store = Store.from_settings(settings)
    report, _ = generate(RunPlan(to_file=tmp_path / "e.jsonl", start=T0), settings, store=store)
    rows = store.query("SELECT fault_type, service, endpoint, start_time, end_time, magnitude, scenario, benign, "
                       "root_cause, cause_fault_id FROM injected_incidents WHERE run_id = ? ORDER BY fault_id",
                       [report.run_id])
    expected = [
        (f.type, f.service, f.effective_endpoint, T0 + timedelta(seconds=f.start_seconds),
         T0 + timedelta(seconds=f.start_seconds + f.duration_seconds), f.effective_magnitude, "mixed", False,
         f.service, None)
        for f in load_scenario("mixed").faults
    ]
    assert rows == expected  # every fault, with its service, endpoint, times and magnitude, and closed


def test_store_ground_truth_has_benign_events_cascades_and_the_service_catalog(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="cascade")
    store = Store.from_settings(settings)
    report, _ = generate(RunPlan(to_file=tmp_path / "e.jsonl", start=T0, duration_s=600), settings, store=store)
    rows = store.query("SELECT fault_id, fault_type, service, start_time, benign, root_cause, cause_fault_id "
                       "FROM injected_incidents WHERE run_id = ? ORDER BY start_time, fault_id", [report.run_id])
    assert rows == [  # cascade.yaml: checkout calls payments (60 %, 5 s later); the first 10 minutes
        ("f000", "error_surge", "payments", T0 + timedelta(seconds=317), False, "payments", None),
        ("f000>checkout", "error_surge", "checkout", T0 + timedelta(seconds=322), False, "payments", "f000")]
    catalog = store.query("SELECT service, endpoints, sla_ms, slo_availability, calls, scenario FROM service_catalog "
                          "ORDER BY service")
    assert [(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5]) for r in catalog] == [
        ("checkout", ["/api/cart", "/api/checkout", "/api/cart/items"], 300.0, 0.99, "payments", "cascade"),
        ("payments", ["/api/payment/process", "/api/payment/validate", "/api/refund"], 400.0, 0.99, None, "cascade"),
        ("search", ["/api/search", "/api/autocomplete", "/api/filters"], 150.0, 0.99, None, "cascade")]

    crowd = settings.model_copy(update={"scenario": "flash_crowd"})
    report, _ = generate(RunPlan(to_file=tmp_path / "f.jsonl", start=T0), crowd, store=store)
    rows = store.query("SELECT fault_id, fault_type, benign, root_cause, end_time IS NOT NULL FROM injected_incidents "
                       "WHERE run_id = ? AND benign ORDER BY fault_id", [report.run_id])
    assert rows == [(f"b{i:03d}", b.type, True, b.service, True) for i, b in enumerate(load_scenario("flash_crowd").benign)]


def test_a_run_cut_short_closes_its_open_faults_at_the_stop(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="demo")
    store = Store.from_settings(settings)
    report, _ = generate(RunPlan(to_file=tmp_path / "e.jsonl", start=T0, duration_s=90), settings, store=store)
    rows = store.query("SELECT fault_id, start_time, end_time FROM injected_incidents WHERE run_id = ?",
                       [report.run_id])
    # Only the fault that actually started (at 75 s) is ground truth, and it ended with the run at 90 s.
    assert rows == [("f000", T0 + timedelta(seconds=75), T0 + timedelta(seconds=90))]


def test_without_store_the_ground_truth_goes_beside_the_file(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="demo")
    events = tmp_path / "demo.jsonl"
    report, _ = generate(RunPlan(to_file=events, store_truth=False, start=T0), settings)
    lines = [json.loads(line) for line in faults_file_for(events).read_text().splitlines()]
    assert [(r["fault_id"], r["end_time"] is None) for r in lines] == [
        ("f000", True), ("f000", False), ("f001", True), ("f001", False)]  # opened, then closed
    assert {(r["benign"], r["root_cause"], r["cause_fault_id"]) for r in lines} == {
        (False, "payments", None), (False, "checkout", None)}  # the store's fields
    assert not (tmp_path / "observability.duckdb").exists()
    assert sum(1 for _ in events.open()) == report.events_sent
    assert within(report.events_sent, 6000, math.sqrt(6000))  # Poisson, 10/s for the scenario's 600 s


def test_backfill_writes_fault_free_history_before_the_run(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="demo", backfill_minutes=5)
    events = tmp_path / "e.jsonl"
    report, backfill = generate(RunPlan(to_file=events, store_truth=False, start=T0, duration_s=60), settings)
    times = [json.loads(line)["event_time"] for line in events.read_text().splitlines()]
    assert within(backfill.events_sent, 3000, math.sqrt(3000)) and within(report.events_sent, 600, math.sqrt(600))
    history = times[:backfill.events_sent]
    assert history[0].startswith("2026-03-01T08:55") and history[-1] < "2026-03-01T09:00"  # past timestamps first
    assert min(times[backfill.events_sent:]) >= "2026-03-01T09:00"


def test_a_scenario_s_fourth_service_goes_end_to_end_into_a_file(tmp_path):
    scenario = tmp_path / "shop.yaml"
    scenario.write_text("""
name: shop
traffic: {events_per_second: 20}
services:
  - {name: checkout, calls: [{service: inventory, share: 0.5, lag_seconds: 3}]}
  - {name: payments}
  - {name: search}
  - name: inventory
    endpoints: [/api/stock, /api/reserve]
    latency_ms: 80
    sla_ms: 200
    slo_availability: 0.995
faults:
  - {type: endpoint_outage, service: inventory, endpoint: /api/reserve, start_seconds: 97, duration_seconds: 60}
""")
    settings = load_settings(data_dir=tmp_path, scenario=str(scenario))
    store = Store.from_settings(settings)
    events = tmp_path / "shop.jsonl"
    report, _ = generate(RunPlan(to_file=events, start=T0, duration_s=300), settings, store=store)
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    inventory = [r for r in rows if r["service"] == "inventory"]
    assert {r["endpoint"] for r in inventory} == {"/api/stock", "/api/reserve"}
    outage = [r for r in inventory if r["endpoint"] == "/api/reserve" and "09:01:37" <= r["event_time"][11:19] < "09:02:37"]
    assert outage and all(r["status_code"] == 503 for r in outage)
    truth = store.query("SELECT fault_id, service, root_cause FROM injected_incidents WHERE run_id = ? ORDER BY 1",
                        [report.run_id])
    assert truth == [("f000", "inventory", "inventory"), ("f000>checkout", "checkout", "inventory")]
    assert store.query("SELECT calls FROM service_catalog WHERE service = 'checkout'") == [("inventory",)]
    assert store.query("SELECT sla_ms, slo_availability, endpoints FROM service_catalog WHERE service = 'inventory'") == [
        (200.0, 0.995, '["/api/stock", "/api/reserve"]')]


def test_the_partition_of_any_service_is_the_kafka_client_s():
    from kafka.partitioner.default import DefaultPartitioner

    class Cluster:  # the three calls DefaultPartitioner makes of the client's metadata
        def topics(self):
            return {"t"}

        def partitions_for_topic(self, _topic):
            return {0, 1, 2, 3, 4}

        available_partitions_for_topic = partitions_for_topic

    ours = PartitionOfKey([0, 1, 2, 3, 4])
    for service in ("checkout", "payments", "search", "inventory", "a", "ledger-v2.eu"):
        key = service.encode()
        assert ours[service] == DefaultPartitioner().partition("t", key, key, None, None, Cluster()), service


@pytest.mark.slow  # each client spends ~5 s per connection attempt before it gives up
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

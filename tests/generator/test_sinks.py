"""Sinks (obslab.generator.sinks): Kafka partitioning, unreachable brokers, events reaching the topic in full."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
from kafka import TopicPartition
from kafka.admin import NewTopic

from obslab.broker import admin_client, consumer
from obslab.errors import BrokerError
from obslab.generator.run import RunPlan, generate
from obslab.generator.sinks import ConfluentSink, FileSink, KafkaSink, PartitionOfKey, Sink, kafka_sink
from obslab.lab import Lab
from obslab.settings import load_settings
from tests.conftest import free_port

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


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
    with Lab(settings) as lab:
        report, _ = generate(RunPlan(max_rate=True, count=10_000, start=T0, store_truth=False), settings,
                             sink=lab.events)
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


def test_the_file_sink_is_a_sink_and_counts_every_line_it_wrote(tmp_path):
    from obslab.generator.events import EventStream
    from obslab.generator.scenario import load_scenario

    sink = FileSink(tmp_path / "e.jsonl")
    assert isinstance(sink, Sink)
    stream = EventStream(load_scenario("demo"), 7, T0)
    for second in range(5):
        sink.send(stream.tick(T0.replace(second=second), 1.0))
    sink.close()
    lines = (tmp_path / "e.jsonl").read_text().splitlines()
    assert lines and sink.sent == sink.acked == len(lines)  # a file takes every event it is given
    assert (sink.failed, sink.first_error) == (0, None)


@pytest.mark.kafka
@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_each_kafka_client_s_sink_is_a_sink(broker, lab_settings, client):
    sink = kafka_sink(lab_settings.model_copy(update={"kafka_client": client}))
    try:
        assert isinstance(sink, Sink)
        assert (sink.sent, sink.acked, sink.failed, sink.first_error) == (0, 0, 0, None)  # nothing sent yet
    finally:
        sink.close()

import os
import re
import socket
import subprocess
import sys
import time

import pytest
from kafka import TopicPartition

from obslab.broker import LocalBroker, admin_client, consumer, ensure_topics, new_cluster_id, producer
from obslab.errors import BrokerError, PortInUseError
from obslab.processes import port_is_free
from obslab.settings import load_settings
from tests.conftest import free_port


def test_cluster_ids_have_the_kraft_form():
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)  # 16 bytes, base64url


def test_taken_port_is_a_clear_error_naming_the_port(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        assert not port_is_free("127.0.0.1", taken)
        settings = load_settings(data_dir=tmp_path, kafka_port=taken, kafka_controller_port=free_port())
        with pytest.raises(PortInUseError, match=f"port {taken}.*KAFKA_PORT"):
            LocalBroker(settings).start()


def test_status_of_a_stopped_broker(tmp_path):
    status = LocalBroker(load_settings(data_dir=tmp_path)).status()
    assert not status.running and status.message == "broker is not running"


def _sleeper(*args: str) -> subprocess.Popen:
    """A child that runs until killed; `args` end up on its command line."""
    return subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(600)", *args])


def test_the_pid_file_counts_only_for_a_process_running_this_lab_s_config(tmp_path):
    lab = LocalBroker(load_settings(data_dir=tmp_path))
    lab.dir.mkdir(parents=True, exist_ok=True)
    ours, other = _sleeper(str(lab.config_file)), _sleeper(str(tmp_path / "elsewhere.properties"))
    try:
        lab.pid_file.write_text(f"{ours.pid}\n")
        assert lab.pid() == ours.pid  # its command line names this lab's server.properties
        lab.pid_file.write_text(f"{other.pid}\n")
        assert lab.pid() is None  # a PID reused by an unrelated process
        ours.kill()
        ours.wait()
        lab.pid_file.write_text(f"{ours.pid}\n")
        assert lab.pid() is None  # stale: the process is gone
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()


@pytest.mark.kafka
def test_broker_has_the_lab_topics(broker, lab_settings):
    status = broker.status()
    assert status.running
    assert set(status.topics) == {"raw_events", "aggregated_metrics", "anomalies", "otlp_spans"}  # the Collector's too
    assert all(len(parts) == lab_settings.kafka_partitions for parts in status.topics.values())


@pytest.mark.kafka
def test_more_replicas_than_brokers_is_a_clear_error_and_creates_nothing(broker, lab_settings):
    wanted = lab_settings.model_copy(update={"kafka_replication_factor": 3, "topic_anomalies": "rf3_anomalies"})
    with pytest.raises(BrokerError, match="KAFKA_REPLICATION_FACTOR=3 is more than the brokers .* hold.*cluster start"):
        ensure_topics(wanted)
    admin = admin_client(lab_settings)
    assert "rf3_anomalies" not in admin.list_topics()  # the one broker holds no topic it cannot replicate
    admin.close()


@pytest.mark.kafka
def test_starting_a_running_broker_does_nothing(broker):
    pid = broker.pid()
    status = broker.start()
    assert "already running" in status.message and status.pid == pid


@pytest.mark.kafka
def test_ten_thousand_events_round_trip(broker, lab_settings):
    topic = lab_settings.topic_raw_events
    sent = {f"event-{i}".encode() for i in range(10_000)}
    p = producer(lab_settings)
    futures = [p.send(topic, key=f"svc-{i % 3}".encode(), value=v) for i, v in enumerate(sorted(sent))]
    p.flush()
    assert all(f.succeeded() for f in futures)  # acks=all: every send acknowledged
    p.close()

    c = consumer(lab_settings)
    parts = [TopicPartition(topic, n) for n in c.partitions_for_topic(topic)]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    received = []
    deadline = time.monotonic() + 60
    while len(received) < len(sent) and time.monotonic() < deadline:
        for records in c.poll(timeout_ms=1000).values():
            received.extend(r.value for r in records)
    c.close()
    assert len(received) == 10_000 and set(received) == sent  # all back, none twice
    offsets = broker.status().topics[topic]
    assert sum(offsets.values()) == 10_000


@pytest.mark.kafka
def test_cli_status_lists_topics_with_offsets(broker, lab_settings):
    env = {"DATA_DIR": str(lab_settings.data_dir), "KAFKA_PORT": str(lab_settings.kafka_port),
           "KAFKA_CONTROLLER_PORT": str(lab_settings.kafka_controller_port)}
    out = subprocess.run([sys.executable, "-m", "obslab.cli", "broker", "status"],
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for topic in ("raw_events", "aggregated_metrics", "anomalies"):
        assert re.search(rf"^\s+{topic}\s+\d+ messages", out.stdout, re.M), out.stdout

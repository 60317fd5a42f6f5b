"""The local cluster (`obslab cluster`): its configs, ports and errors; and one real run: three brokers,
a Spark master with two workers, the real generator and the real stream, one broker SIGKILLed mid-stream,
every acknowledged event counted exactly once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaError
from typer.testing import CliRunner

from conftest import free_port
from obslab.broker import KafkaNode, consumer, end_offsets, server_properties, voters
from obslab.cluster import (BROKERS, ClusterError, ClusterPorts, LocalCluster, choose_ports, in_sync_replicas,
                            kafka_properties, master_state)
from obslab.errors import ConfigError, MissingDependencyError, PortInUseError
from obslab.processes import process_alive
from obslab.settings import load_settings
from tests.stream.helpers import same_counts

WAIT_S = 180  # a bound for processes to get somewhere on a busy machine, not a measurement


def _taken():
    """A socket listening on a port of 127.0.0.1 (close it to free the port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


# ---------------------------------------------------------------------- configs


def _nodes(tmp_path) -> list[KafkaNode]:
    return [KafkaNode(i, "127.0.0.1", 19090 + i, 19190 + i, tmp_path / f"kafka-{i}") for i in (1, 2, 3)]


@pytest.mark.parametrize("key, expected", [
    ("node.id", "2"),  # the second node
    ("controller.quorum.voters", "1@127.0.0.1:19191,2@127.0.0.1:19192,3@127.0.0.1:19193"),  # a quorum of 3
    ("listeners", "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19192"),  # its own ports, loopback only
    ("default.replication.factor", "3"),  # every partition on all three brokers
    ("min.insync.replicas", "2"),  # acks=all means: on two of them at least
    ("offsets.topic.replication.factor", "3"),  # the stream's consumer offsets survive a broker too
    ("transaction.state.log.min.isr", "2"),
    ("auto.create.topics.enable", "false"),  # a typo in a topic name is an error, not a new topic
])
def test_a_cluster_broker_s_config(tmp_path, key, expected):
    nodes = _nodes(tmp_path)
    props = kafka_properties(nodes[1], voters(*nodes), partitions=3)
    assert props[key] == expected


@pytest.mark.parametrize("key, expected", [
    ("default.replication.factor", "1"),  # one broker: one replica
    ("min.insync.replicas", "1"),
    ("offsets.topic.replication.factor", "1"),
    ("controller.quorum.voters", "1@127.0.0.1:19191"),
])
def test_the_single_broker_s_config_keeps_one_replica(tmp_path, key, expected):
    node = _nodes(tmp_path)[0]
    assert server_properties(node, voters(node), partitions=3)[key] == expected


def test_the_printed_settings_run_the_lab_on_the_cluster():
    ports = ClusterPorts(spark=17077, spark_webui=18080, workers_webui=[18081, 18082], kafka=[19092, 19093, 19094],
                         kafka_controller=[19192, 19193, 19194])
    assert ports.use_settings() == {"SPARK_MASTER": "spark://127.0.0.1:17077",
                                    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094",
                                    "KAFKA_REPLICATION_FACTOR": "3"}


# ---------------------------------------------------------------------- ports and errors


def test_free_ports_are_ten_different_ones(tmp_path):
    ports = choose_ports(load_settings(data_dir=tmp_path))
    every = [ports.spark, ports.spark_webui, *ports.workers_webui, *ports.kafka, *ports.kafka_controller]
    assert len(every) == 10 and len(set(every)) == 10  # master, its UI, 2 worker UIs, 3 x 2 Kafka ports


def test_ports_the_settings_name_are_used(tmp_path):
    a, b, c, d = (free_port() for _ in range(4))
    settings = load_settings(data_dir=tmp_path, cluster_spark_port=a, cluster_kafka_ports=f"{b},{c},{d}")
    ports = choose_ports(settings)
    assert (ports.spark, ports.kafka) == (a, [b, c, d])


def test_a_restart_keeps_the_ports_of_the_last_start(tmp_path):
    before = choose_ports(load_settings(data_dir=tmp_path))
    again = choose_ports(load_settings(data_dir=tmp_path), recorded=before)
    assert (again.spark, again.kafka, again.kafka_controller) == (before.spark, before.kafka, before.kafka_controller)


@pytest.mark.parametrize("setting, field", [
    ("CLUSTER_SPARK_PORT", "cluster_spark_port"),
    ("CLUSTER_SPARK_WEBUI_PORT", "cluster_spark_webui_port"),
    ("CLUSTER_KAFKA_PORTS", "cluster_kafka_ports"),
    ("CLUSTER_KAFKA_CONTROLLER_PORTS", "cluster_kafka_controller_ports"),
])
def test_a_taken_port_names_the_setting_that_chose_it(tmp_path, setting, field):
    with _taken() as sock:
        port = sock.getsockname()[1]
        value = port if field.endswith("_port") else f"{free_port()},{port},{free_port()}"
        settings = load_settings(data_dir=tmp_path, **{field: value})
        with pytest.raises(PortInUseError, match=f"port {port} .*{setting}=<port>"):
            LocalCluster(settings).start()


def test_a_port_named_twice_is_refused(tmp_path):
    port = free_port()
    settings = load_settings(data_dir=tmp_path, cluster_spark_port=port, cluster_kafka_ports=f"{port},1,2")
    with pytest.raises(ClusterError, match=f"port {port} is named twice"):
        choose_ports(settings)


@pytest.mark.parametrize("value", ["19092,19093", "19092,19093,x", "19092,19092,19093", "0,1,2"])
def test_a_port_list_that_is_not_three_ports_is_a_clear_error(tmp_path, value):
    with pytest.raises(ConfigError, match="CLUSTER_KAFKA_PORTS: .*three different ports"):
        load_settings(data_dir=tmp_path, cluster_kafka_ports=value)


def test_a_pyspark_without_its_launcher_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("obslab.cluster.spark_home", lambda: tmp_path / "pyspark")  # no bin/spark-class there
    with pytest.raises(MissingDependencyError, match="bin/spark-class is missing.*make setup"):
        LocalCluster(load_settings(data_dir=tmp_path)).start()


def test_status_and_settings_of_a_cluster_never_started(tmp_path):
    cluster = LocalCluster(load_settings(data_dir=tmp_path))
    status = cluster.status()
    assert not status.running and set(status.pids) == {"kafka-1", "kafka-2", "kafka-3", "master", "worker-1",
                                                       "worker-2"}
    assert cluster.stop() == "cluster is not running"
    with pytest.raises(ClusterError, match="obslab cluster start"):
        cluster.use_settings()


def test_a_partly_running_cluster_is_refused_and_stop_ends_what_runs(tmp_path):
    cluster = LocalCluster(load_settings(data_dir=tmp_path))
    cluster.dir.mkdir(parents=True)
    # A process whose command line names this cluster's master config, recorded as its master.
    master = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(cluster.spark_conf)])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "spark-defaults.conf"])
    try:
        cluster.pid_file("master").write_text(f"{master.pid}\n")
        cluster.pid_file("worker-1").write_text(f"{other.pid}\n")  # names no file of this cluster: not its worker
        assert cluster.status().pids == {"kafka-1": None, "kafka-2": None, "kafka-3": None, "master": master.pid,
                                         "worker-1": None, "worker-2": None}
        with pytest.raises(ClusterError, match=r"partly running \(master\).*obslab cluster stop"):
            cluster.start()
        assert cluster.stop() == "cluster stopped (master)"
        assert not process_alive(master.pid) and other.poll() is None  # the other process is left alone
    finally:
        master.kill()
        other.kill()


def test_cli_status_of_a_stopped_cluster(tmp_path, monkeypatch):
    from obslab.cli import app

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["cluster", "status"])
    assert result.exit_code == 0 and "cluster is not running" in result.output


# ---------------------------------------------------------------------- one real run


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The real cluster on free ports in a data folder of its own, stopped whatever happens."""
    data = tmp_path_factory.mktemp("cluster")
    settings = load_settings(data_dir=data, duckdb_path=data / "observability.duckdb", kafka_heap="256m",
                             kafka_bootstrap_servers="", spark_server="local", kafka_replication_factor=1,
                             topic_raw_events="raw_events", topic_aggregated_metrics="aggregated_metrics",
                             topic_anomalies="anomalies", topic_otlp_spans="otlp_spans", events_per_second=300,
                             scenario="demo", backfill_minutes=0, generate_lead_in_seconds=0)
    lab = LocalCluster(settings)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


def _counted(store) -> int:
    """Events the store has counted: in service windows, or as dead letters (0 while it has no tables yet)."""
    try:
        windows = store.query("SELECT coalesce(sum(request_count), 0) FROM service_metrics")[0][0]
        return int(windows) + store.count("dead_letter_events")
    except Exception:  # noqa: BLE001 - the stream has not created the store yet
        return 0


def _batches(store) -> int:
    try:
        return store.count("stream_batches")
    except Exception:  # noqa: BLE001 - the file may not exist yet
        return 0


def _total(settings) -> int:
    return sum(sum(parts.values()) for parts in end_offsets(settings, [settings.topic_raw_events]).values())


def _read_topic(settings, expected: int) -> list[str]:
    c = consumer(settings)
    try:
        parts = [TopicPartition(settings.topic_raw_events, p) for p in c.partitions_for_topic(settings.topic_raw_events)]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        lines, deadline = [], time.monotonic() + 120
        while len(lines) < expected and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                lines.extend(r.value.decode() for r in records)
        return lines
    finally:
        c.close()


def _holds(condition) -> bool:
    try:
        return bool(condition())
    except KafkaError:  # a client that asked the dead broker before its metadata said it was gone
        return False


def _wait(condition, what: str, seconds: float = WAIT_S, every_s: float = 0.5) -> None:
    """Wait until `condition` holds (asserted), then print how long it took (shown when the test fails)."""
    started = time.monotonic()
    while not _holds(condition) and time.monotonic() < started + seconds:
        time.sleep(every_s)
    assert _holds(condition), f"gave up waiting for {what} after {seconds:.0f} s"
    print(f"{time.strftime('%H:%M:%S')} {what}: {time.monotonic() - started:.1f} s")


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.spark
def test_a_broker_killed_mid_stream_loses_and_doubles_nothing(cluster):
    from obslab.generator.run import RunPlan, generate
    from obslab.generator.sinks import kafka_sink
    from obslab.lab import Lab

    settings = cluster.use_settings()  # the lab, by settings only: SPARK_MASTER, KAFKA_* of the cluster
    assert settings.kafka_replication_factor == BROKERS
    assert {p: isr for p, (_, isr) in in_sync_replicas(settings, settings.topic_raw_events).items()} == \
        {0: [1, 2, 3], 1: [1, 2, 3], 2: [1, 2, 3]}  # every partition on all three brokers
    store = Lab(settings).store
    env = {**os.environ, "DATA_DIR": str(settings.data_dir), "DUCKDB_PATH": str(settings.duckdb_path),
           "SPARK_SERVER": "local", "SPARK_MASTER": settings.spark_master,
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers, "KAFKA_REPLICATION_FACTOR": str(BROKERS),
           "TOPIC_RAW_EVENTS": settings.topic_raw_events, "TOPIC_AGGREGATED_METRICS": settings.topic_aggregated_metrics,
           "TOPIC_ANOMALIES": settings.topic_anomalies, "CHECKPOINT_NAME": "stream", "TRIGGER_SECONDS": "1"}
    for name in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):
        env.pop(name, None)

    # The real generator, live at 300 events/s, until told to stop (so it runs before and after the kill).
    stop, reports = threading.Event(), []
    sink = kafka_sink(settings)
    generator = threading.Thread(target=lambda: reports.append(
        generate(RunPlan(store_truth=False, duration_s=3600), settings, sink=sink, stop=stop)[0]), daemon=True)
    log, answer = settings.data_dir / "stream.log", settings.data_dir / "stream.json"
    stream = None
    try:
        generator.start()
        with open(log, "w") as err, open(answer, "w") as out:
            stream = subprocess.Popen([sys.executable, "-m", "obslab.cli", "-v", "stream", "--json"], env=env,
                                      start_new_session=True, stdout=out, stderr=err)
        _wait(lambda: _batches(store) > 0 or stream.poll() is not None, "the stream's first batch", every_s=3)
        assert stream.poll() is None, log.read_text()[-3000:]
        assert generator.is_alive() and _total(settings) > 0  # generation started, the stream is running

        # SIGKILL the leader of partition 0: no clean shutdown, no leadership handed over first.
        victim = in_sync_replicas(settings, settings.topic_raw_events)[0][0]
        pid = cluster.pid(f"kafka-{victim}")
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not process_alive(pid), "the broker to die", 30)
        survivors = sorted(set(range(1, BROKERS + 1)) - {victim})

        # The two left hold every partition (min ISR 2: writes go on), and the generator keeps publishing.
        _wait(lambda: all(leader in survivors and isr == survivors for leader, isr in
                          in_sync_replicas(settings, settings.topic_raw_events).values()), "the ISR to shrink")
        after_kill = _total(settings)
        _wait(lambda: _total(settings) >= after_kill + 3000, "3,000 more events acknowledged after the kill")
        assert stream.poll() is None, log.read_text()[-3000:]  # the stream outlived the broker
        stop.set()
        generator.join(120)
        assert not generator.is_alive()
        report = reports[0]
        total = _total(settings)
        assert report.events_failed == 0 and report.events_acked == total > after_kill  # acks=all: acked = in the log

        # The stream catches up, then stops on SIGTERM with its report.
        _wait(lambda: _counted(store) >= total, "the stream to count every event", 240, every_s=3)
        stream.send_signal(signal.SIGTERM)
        stream.wait(timeout=120)
        assert stream.returncode == 0, log.read_text()[-3000:]
        assert json.loads(answer.read_text().strip().splitlines()[-1])["events"] == total
    finally:
        stop.set()
        if stream is not None and stream.poll() is None:
            os.killpg(stream.pid, signal.SIGKILL)
            stream.wait()
        generator.join(60)
        sink.close()

    # Exactly once: every acknowledged event in its window, none twice, none a dead letter.
    lines = _read_topic(settings, total)
    assert len(lines) == total == report.events_acked
    assert len({json.loads(line)["event_id"] for line in lines}) == total  # each event once in the topic
    assert store.count("dead_letter_events") == 0
    assert same_counts(store, lines)
    assert _counted(store) == report.events_acked
    # The work ran on the cluster: an application with the two workers' cores.
    apps = master_state(cluster.recorded_ports())
    assert [(a["name"], a["cores"]) for a in apps["activeapps"] + apps["completedapps"]] == [("obslab", 2)]


def test_use_settings_point_at_the_started_cluster(tmp_path):
    cluster = LocalCluster(load_settings(data_dir=tmp_path))
    cluster.dir.mkdir(parents=True)
    ports = choose_ports(cluster.settings)
    cluster.ports_file.write_text(json.dumps(ports.__dict__))
    use = cluster.use_settings()
    assert (use.spark_master, use.kafka_bootstrap_servers, use.kafka_replication_factor) == \
        (ports.master_url, ports.bootstrap_servers, 3)
    assert Path(cluster.ports_file).exists()

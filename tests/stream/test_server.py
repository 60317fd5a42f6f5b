"""The lab's Spark Connect server (`obslab spark start|stop|status`) and the stream run through it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import free_port
from obslab.errors import ConfigError, PortInUseError
from obslab.processes import process_alive
from obslab.settings import load_settings
from obslab.store import Store
from obslab.stream.counters import SinkCounters
from obslab.stream.server import SparkServer, server_url
from obslab.stream.session import cores
from tests.stream.helpers import T0, event_lines, lab_for, publish, same_counts


def test_spark_server_says_which_spark_the_steps_use(tmp_path):
    assert server_url(load_settings(data_dir=tmp_path, spark_server="local")) is None
    assert server_url(load_settings(data_dir=tmp_path, spark_server="sc://127.0.0.1:1234")) == "sc://127.0.0.1:1234"
    # auto without a server of this lab: a Spark of the step's own
    assert server_url(load_settings(data_dir=tmp_path, spark_server="auto")) is None


def test_auto_ignores_a_pid_file_whose_process_is_no_server(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    server = SparkServer(settings)
    server.dir.mkdir(parents=True)
    server.pid_file.write_text(f"{os.getpid()}\n")  # alive, but pytest is no Spark Connect server
    server.address_file.write_text(json.dumps({"url": "sc://127.0.0.1:1", "pid": os.getpid()}))
    assert server_url(settings) is None
    assert not server.status().running


def test_a_spark_server_setting_that_is_no_choice_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="SPARK_SERVER"):
        load_settings(data_dir=tmp_path, spark_server="spark://127.0.0.1:7077")


def test_the_server_listens_on_loopback_only_on_its_port_with_the_kafka_connector(tmp_path):
    settings = load_settings(data_dir=tmp_path, spark_connect_port=15999, spark_master="local[3]")
    cmd = SparkServer(settings).command()
    conf = [cmd[i + 1] for i, part in enumerate(cmd) if part == "--conf"]
    assert "spark.connect.grpc.binding.address=127.0.0.1" in conf
    assert "spark.connect.grpc.binding.port=15999" in conf
    assert "spark.driver.extraJavaOptions=-XX:+UseSerialGC" in conf  # its JVM keeps its heap near what is live
    assert cmd[cmd.index("--master") + 1] == "local[3]"
    assert "spark-sql-kafka" in cmd[cmd.index("--jars") + 1]


def test_a_taken_port_is_refused_naming_the_setting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"{port}.*SPARK_CONNECT_PORT"):
            SparkServer(load_settings(data_dir=tmp_path, spark_connect_port=port)).start()


def test_sink_counters_come_back_from_their_file_as_they_were(tmp_path):
    path = tmp_path / "counters.json"
    assert SinkCounters.load(path) == SinkCounters()  # no batch ran: zeros
    counters = SinkCounters(batches=3, events=1200, dead_letters=2, late=1,
                            last_watermark=datetime(2026, 3, 1, 9, 5, tzinfo=timezone.utc), errors=["x"])
    counters.save(path)
    assert SinkCounters.load(path) == counters
    assert not path.with_name(path.name + ".part").exists()


class _Conf:
    def __init__(self, values):
        self.values = values

    def get(self, key, default=None):
        return self.values.get(key, default)


class _Session:
    def __init__(self, **values):
        self.conf = _Conf({k.replace("_", "."): v for k, v in values.items()})


@pytest.mark.parametrize("master, default_parallelism, expected", [
    ("local[3]", None, 3), ("local[4,2]", None, 4), ("local", None, 1), ("local[*]", None, os.cpu_count()),
    ("spark://10.0.0.1:7077", "8", 8), ("spark://10.0.0.1:7077", None, 2)])
def test_cores_reads_the_master_of_the_session(master, default_parallelism, expected):
    values = {"spark_master": master}
    if default_parallelism:
        values["spark_default_parallelism"] = default_parallelism
    assert cores(_Session(**values)) == expected


@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.slow
def test_a_stream_client_uses_the_labs_spark_server_and_counts_every_event_once(broker, lab_settings, tmp_path):
    settings = lab_for(lab_settings, tmp_path, spark_connect_port=free_port())
    lines = event_lines(seconds=600)
    publish(settings, lines)
    server = SparkServer(settings)
    server.start()
    try:
        assert server.status().running
        assert server_url(settings) == server.url
        env = {**os.environ, "DATA_DIR": str(settings.data_dir), "DUCKDB_PATH": str(settings.duckdb_path),
               "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
               "TOPIC_RAW_EVENTS": settings.topic_raw_events,
               "TOPIC_AGGREGATED_METRICS": settings.topic_aggregated_metrics,
               # A Spark of the client's own would fail on this master: only the server's Spark can run it.
               "SPARK_MASTER": "no-such-master://", "SPARK_SERVER": "auto"}

        def stream() -> dict:
            out = subprocess.run([sys.executable, "-m", "obslab.cli", "stream", "--available-now", "--json"],
                                 env=env, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr[-3000:]
            return json.loads(out.stdout.strip().splitlines()[-1])

        first = stream()
        assert first["events"] == len(lines) and first["batches"] >= 1
        assert same_counts(Store(settings.duckdb_path), lines)
        again = stream()  # the same checkpoint: nothing new, nothing counted twice
        assert again["events"] == 0
        assert same_counts(Store(settings.duckdb_path), lines)
        # each run's sink worker, and the first run's daemon for the fast path's workers, were forked by the
        # server's worker zygote (none started on its own; the second run had no batch, so no daemon)
        assert server.zygote_log.read_text().count("spark-workers: child ") == 3
        assert "running the worker in this process" not in server.log_file.read_text()
        assert "starting Spark's daemon here" not in server.log_file.read_text()
    finally:
        message = server.stop()
    assert "stopped" in message or "killed" in message
    assert server.pid() is None and server_url(settings) is None
    socket_file = settings.data_dir / "spark" / "workers.sock"
    deadline = time.monotonic() + 60
    while socket_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not socket_file.exists()  # the zygote ended with the server


def _client_env(settings) -> dict[str, str]:
    return {**os.environ, "DATA_DIR": str(settings.data_dir), "DUCKDB_PATH": str(settings.duckdb_path),
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers, "TOPIC_RAW_EVENTS": settings.topic_raw_events,
            "TOPIC_AGGREGATED_METRICS": settings.topic_aggregated_metrics, "SPARK_MASTER": "no-such-master://",
            "SPARK_SERVER": "auto", "TRIGGER_SECONDS": "1"}


@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.slow
def test_a_killed_clients_query_counts_nothing_twice_when_the_stream_starts_again(broker, lab_settings, tmp_path):
    """SIGKILL leaves the client's query running on the server (nothing told it to stop). The next client of
    the same checkpoint must still count every event exactly once, whatever the orphan does meanwhile."""
    settings = lab_for(lab_settings, tmp_path, spark_connect_port=free_port())
    first, later = event_lines(seconds=300), event_lines(seconds=300, seed=6, start=T0 + timedelta(minutes=5))
    publish(settings, first)
    server = SparkServer(settings)
    server.start()
    env = _client_env(settings)
    try:
        client = subprocess.Popen([sys.executable, "-m", "obslab.cli", "stream"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not _counted(settings, len(first)):
            assert client.poll() is None, client.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the first client counted nothing in 300 s"
            time.sleep(1)
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=30)
        publish(settings, later)  # while the orphan query may still run on the server
        out = subprocess.run([sys.executable, "-m", "obslab.cli", "stream", "--available-now", "--json"],
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        time.sleep(5)  # what an orphan would still write, it writes now
        log = (settings.logs_dir / "spark-connect.log").read_text()
        assert "Stopping existing streaming query" in log  # there was an orphan, and the new start stopped it
        assert same_counts(Store(settings.duckdb_path), first + later)
        assert Store(settings.duckdb_path).query("SELECT count(*) FROM dead_letter_events")[0][0] == 0
    finally:
        server.stop()


def _counted(settings, events: int) -> bool:
    if not settings.duckdb_path.exists():
        return False
    try:
        rows = Store(settings.duckdb_path).query("SELECT coalesce(sum(request_count), 0) FROM service_metrics")
    except Exception:  # noqa: BLE001 - the stream holds the store for a moment; ask again
        return False
    return rows[0][0] >= events


UDF_CLIENT = """
import json, os, sys, time
from pathlib import Path
from pyspark.sql import SparkSession

def pids(batches):
    import pyarrow as pa
    for _ in batches:
        yield pa.RecordBatch.from_pylist([{"worker": os.getpid(), "daemon": os.getppid()}])

spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
def daemons():
    return sorted({r.daemon for r in spark.range(0, 40, 1, 4).mapInArrow(pids, "worker long, daemon long").collect()})
first = daemons()
log, deadline = Path(sys.argv[2]), time.monotonic() + 240
while log.read_text().count("had no worker for") < int(sys.argv[3]) and time.monotonic() < deadline:
    time.sleep(1)  # until the daemon of this session has ended for want of work
print(json.dumps([first, daemons()]), flush=True)  # the same session again: Spark starts its daemon again
spark.stop()
"""


def _daemons_of(server_pid: int) -> list[int]:
    """Spark's Python daemons the server asked for (their launchers, children of its JVM)."""
    import psutil

    daemons = []
    for child in psutil.Process(server_pid).children():
        try:
            if "pyspark.daemon" in " ".join(child.cmdline()):
                daemons.append(child.pid)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            pass  # a launcher that has ended and that the JVM has not reaped yet: no daemon any more
    return daemons


@pytest.mark.spark
@pytest.mark.slow
def test_the_daemon_of_each_session_comes_from_the_zygote_and_ends_when_idle(lab_settings, tmp_path, monkeypatch):
    """Spark 4.2 starts a Python daemon per Connect session and never stops it (SPARK-54055); the lab's
    launcher has the zygote fork it and ends it once idle, and Spark starts it again when the session needs it."""
    monkeypatch.setenv("OBSLAB_DAEMON_IDLE_SECONDS", "2")
    settings = lab_settings.model_copy(update={"data_dir": tmp_path, "spark_connect_port": free_port()})
    server = SparkServer(settings)
    server.start()
    try:
        out = subprocess.run([sys.executable, "-c", UDF_CLIENT, server.url, str(server.log_file), "1"],
                             capture_output=True, text=True, timeout=400)
        assert out.returncode == 0, out.stderr[-3000:]
        first, again = json.loads(out.stdout.strip().splitlines()[-1])
        assert len(first) == len(again) == 1 and first != again  # one daemon; ended, then started again
        zygote_log = server.zygote_log.read_text()
        for daemon in first + again:  # each was a fork of the warm zygote
            assert f"spark-workers: child {daemon} " in zygote_log
        # The first daemon ended for want of work (Spark drops an idle worker after a minute, then the launcher
        # ends the daemon), and nothing of it is left: not one daemon per session that has ever run.
        assert not process_alive(first[0])
        assert server.log_file.read_text().count("had no worker for 2 s: ending it") >= 1
        assert len(_daemons_of(server.pid())) <= 1  # at most the second one, if Spark still keeps its worker
        server.stop()  # and the second ends with the server
        deadline = time.monotonic() + 30
        while process_alive(again[0]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not process_alive(again[0])
    finally:
        server.stop()

"""A local cluster on 127.0.0.1 (`obslab cluster start|stop|status`): a Spark standalone master with two
workers and three Kafka brokers (KRaft, every node broker and controller, topics with 3 replicas of
which 2 must hold a write before it is acknowledged).

The lab runs on it by settings only: `obslab cluster start` prints them (SPARK_MASTER,
KAFKA_BOOTSTRAP_SERVERS, KAFKA_REPLICATION_FACTOR). Spark runs from the installed pyspark package (it
is a whole Spark), Kafka from the jars the single broker uses (`obslab.broker`). Everything lives
under DATA_DIR/cluster: configs, storage, pid files, and `cluster.json` with the ports it runs on (a
restart keeps them unless settings name others); logs go to DATA_DIR/logs/cluster-*.log.

    driver (the stream; its foreachBatch sink writes DuckDB)  --SQL tasks-->  worker-1, worker-2 (1 core each)
        \\--reads/writes--> kafka-1, kafka-2, kafka-3 (each partition on all three, min ISR 2)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

from obslab import bootstrap
from obslab.broker import (KafkaNode, admin_client, ensure_topics, format_storage, kafka_classpath, launch_node,
                           kept_cluster_id, server_properties, voters, wait_until_ready, write_node_config)
from obslab.commands import AS_JSON, ReportingTyper, settings_with
from obslab.errors import MissingDependencyError, ObslabError, PortInUseError
from obslab.processes import port_is_free, recorded_pid, stop_all, tail
from obslab.settings import Settings

BROKERS = 3  # one replica of every partition on each
MIN_ISR = 2  # an acknowledged write is on at least two brokers: one may die without losing it
WORKERS = 2
WORKER_CORES = 1
WORKER_MEMORY = "1g"  # an executor's default spark.executor.memory (1g) fits exactly
HOST = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
STOP_TIMEOUT_S = 30.0
# The standalone master opens a REST submission server on 6066 unless told not to: a fixed port that
# two clusters on one machine would fight over, and that nothing here needs.
SPARK_DAEMON_CONF = {"spark.master.rest.enabled": "false", "spark.ui.showConsoleProgress": "false"}


class ClusterError(ObslabError):
    """The local cluster could not be started, reached or stopped."""


@dataclass
class ClusterPorts:
    """Where the cluster listens, all on 127.0.0.1."""

    spark: int
    spark_webui: int
    workers_webui: list[int]  # one per worker
    kafka: list[int]  # client port per broker
    kafka_controller: list[int]  # KRaft controller port per broker

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.spark}"

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{HOST}:{p}" for p in self.kafka)

    def use_settings(self) -> dict[str, str]:
        """The settings (environment variables) that run the lab on this cluster."""
        return {"SPARK_MASTER": self.master_url, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
                "KAFKA_REPLICATION_FACTOR": str(BROKERS)}


@dataclass
class ClusterStatus:
    """What `obslab cluster status` reports: each process's PID (None: not running)."""

    running: bool
    pids: dict[str, int | None]  # master, worker-1, ..., kafka-1, ...
    ports: ClusterPorts | None
    message: str

    def settings_text(self) -> str:
        """The `NAME=value` lines that run the lab on this cluster."""
        return "" if self.ports is None else "\n".join(f"{k}={v}" for k, v in self.ports.use_settings().items())


class LocalCluster:
    """The cluster of one DATA_DIR: its processes, ports and folders."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.dir = settings.data_dir / "cluster"
        self.ports_file = self.dir / "cluster.json"
        self.cluster_id_file = self.dir / "cluster.id"

    # ------------------------------------------------------------------ where things are

    def nodes(self, ports: ClusterPorts) -> list[KafkaNode]:
        """The three Kafka nodes (ids 1-3), each in DATA_DIR/cluster/kafka-N."""
        return [KafkaNode(i + 1, HOST, ports.kafka[i], ports.kafka_controller[i], self.dir / f"kafka-{i + 1}")
                for i in range(BROKERS)]

    def names(self) -> list[str]:
        """Every process of the cluster, in the order it starts."""
        return [f"kafka-{i + 1}" for i in range(BROKERS)] + ["master"] + [f"worker-{i + 1}" for i in range(WORKERS)]

    def pid_file(self, name: str) -> Path:
        return self.dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.settings.logs_dir / f"cluster-{name}.log"

    def pid(self, name: str) -> int | None:
        """PID of the named process while it runs: its command line names this cluster's files (a PID reused
        since, or another cluster's process, does not count)."""
        marker = {"master": str(self.spark_conf), **{f"worker-{i + 1}": str(self.work_dir(i + 1))
                                                    for i in range(WORKERS)}}.get(name)
        return recorded_pid(self.pid_file(name), marker or str(self.dir / name / "server.properties"))

    @property
    def spark_conf(self) -> Path:
        """The Spark daemons' properties file (the master's command line names it)."""
        return self.dir / "spark" / "spark-defaults.conf"

    def work_dir(self, worker: int) -> Path:
        """A worker's folder: its executors' files and logs (its command line names it)."""
        return self.dir / "spark" / f"worker-{worker}"

    def recorded_ports(self) -> ClusterPorts | None:
        """The ports of the last start, or None."""
        try:
            return ClusterPorts(**json.loads(self.ports_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def use_settings(self) -> Settings:
        """These settings with the cluster's Kafka (clients, replication factor) and Spark master."""
        ports = self.recorded_ports()
        if ports is None:
            raise ClusterError(f"no cluster has been started for {self.settings.data_dir}: run `obslab cluster start`")
        return self.settings.model_copy(update={"spark_master": ports.master_url,
                                                "kafka_bootstrap_servers": ports.bootstrap_servers,
                                                "kafka_replication_factor": BROKERS})

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ClusterStatus:
        """Start the three brokers (and create the lab topics, 3 replicas each), then the Spark master and its
        workers; a running cluster is left as it is, a partly running one is refused."""
        now = self.status()
        if now.running:
            return ClusterStatus(True, now.pids, now.ports, "cluster already running; nothing to do")
        if any(now.pids.values()):
            up = ", ".join(n for n, p in now.pids.items() if p)
            raise ClusterError(f"the cluster is partly running ({up}): run `obslab cluster stop`, then start it again")
        spark_class = spark_home() / "bin" / "spark-class"
        if not spark_class.exists():
            raise MissingDependencyError(f"{spark_class} is missing: the installed pyspark has no Spark launcher; "
                                         "run `make setup` again")
        ports = choose_ports(self.settings, self.recorded_ports())
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports_file.write_text(json.dumps(asdict(ports)))
        try:
            self._start_kafka(ports)
            self._start_spark(ports, spark_class)
        except BaseException:
            self.stop()
            raise
        return ClusterStatus(True, {n: self.pid(n) for n in self.names()}, ports,
                             f"cluster started: Spark master at {ports.master_url} (UI http://{HOST}:{ports.spark_webui}) "
                             f"with {WORKERS} workers, Kafka at {ports.bootstrap_servers}")

    def stop(self) -> str:
        """Stop every process of the cluster at once (SIGTERM, then SIGKILL after a bound); no JVM is left."""
        pids = {name: self.pid(name) for name in self.names()}
        running = {name: pid for name, pid in pids.items() if pid is not None}
        killed = stop_all(running)
        for name, pid in running.items():
            if name.startswith("worker"):
                _kill_group(pid)  # its executors, should a worker have died before stopping them
        for name in self.names():
            self.pid_file(name).unlink(missing_ok=True)
        if not running:
            return "cluster is not running"
        return (f"cluster stopped ({', '.join(running)})"
                + (f"; did not stop within {STOP_TIMEOUT_S:.0f} s, killed: {', '.join(killed)}" if killed else ""))

    def status(self) -> ClusterStatus:
        """Which processes run, and the settings that use the cluster."""
        pids = {name: self.pid(name) for name in self.names()}
        ports = self.recorded_ports()
        up = [n for n, p in pids.items() if p]
        if not up:
            return ClusterStatus(False, pids, ports, "cluster is not running (`obslab cluster start` starts it)")
        if len(up) < len(pids):
            down = ", ".join(n for n, p in pids.items() if not p)
            return ClusterStatus(False, pids, ports, f"cluster partly running: {down} not running")
        return ClusterStatus(True, pids, ports, f"cluster running: Spark master at {ports.master_url}, "
                                                f"Kafka at {ports.bootstrap_servers}")

    # ------------------------------------------------------------------ internals

    def _start_kafka(self, ports: ClusterPorts) -> None:
        s = self.settings
        classpath, java = kafka_classpath(s), bootstrap.find_java()
        nodes = self.nodes(ports)
        quorum, cluster_id = voters(*nodes), kept_cluster_id(self.cluster_id_file)
        for node in nodes:
            write_node_config(node, kafka_properties(node, quorum, s.kafka_partitions))
            format_storage(java, classpath, node, cluster_id)
        # All three at once: none is ready before a majority of the controller quorum is up.
        procs = {}
        for node in nodes:
            name = f"kafka-{node.node_id}"
            procs[name] = launch_node(java, classpath, s.kafka_heap, node, self.log_file(name))
            self.pid_file(name).write_text(f"{procs[name].pid}\n")
        for node in nodes:
            name = f"kafka-{node.node_id}"
            wait_until_ready(procs[name], node, s, self.log_file(name), what=f"the cluster's broker {name}")
        ensure_topics(self.use_settings())

    def _start_spark(self, ports: ClusterPorts, spark_class: Path) -> None:
        spark_dir, conf = self.spark_conf.parent, self.spark_conf
        spark_dir.mkdir(parents=True, exist_ok=True)
        conf.write_text("".join(f"{k} {v}\n" for k, v in SPARK_DAEMON_CONF.items()))
        env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": HOST,
               # executors that run Python (none of the stream's SQL does) run the lab's
               "PYSPARK_PYTHON": sys.executable}
        for name in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):
            env.pop(name, None)
        master = self._launch("master", [str(spark_class), MASTER_CLASS, "--host", HOST, "--port", str(ports.spark),
                                         "--webui-port", str(ports.spark_webui), "--properties-file", str(conf)],
                              env, spark_dir)
        self._wait_for_workers(master, ports, 0)
        workers = []
        for i in range(WORKERS):
            work_dir = self.work_dir(i + 1)
            work_dir.mkdir(exist_ok=True)
            workers.append(self._launch(
                f"worker-{i + 1}",
                [str(spark_class), WORKER_CLASS, ports.master_url, "--cores", str(WORKER_CORES),
                 "--memory", WORKER_MEMORY, "--host", HOST, "--webui-port", str(ports.workers_webui[i]),
                 "--work-dir", str(work_dir), "--properties-file", str(conf)],
                env, work_dir))
        self._wait_for_workers(master, ports, WORKERS, *workers)

    def _launch(self, name: str, cmd: list[str], env: dict, cwd: Path) -> subprocess.Popen:
        log = self.log_file(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            # its own session: Ctrl-C in the terminal that started it does not stop it; `obslab cluster stop` does
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True, cwd=cwd)
        self.pid_file(name).write_text(f"{proc.pid}\n")
        return proc

    def _wait_for_workers(self, master: subprocess.Popen, ports: ClusterPorts, wanted: int,
                          *workers: subprocess.Popen) -> None:
        """Wait until the master's UI answers with `wanted` live workers."""
        timeout = self.settings.spark_start_timeout_seconds
        deadline = time.monotonic() + timeout
        alive = None
        while time.monotonic() < deadline:
            for name, proc in (("master", master), *((f"worker-{i + 1}", w) for i, w in enumerate(workers))):
                if proc.poll() is not None:
                    raise ClusterError(f"the cluster's Spark {name} exited with code {proc.returncode} while "
                                       f"starting. Last lines of {self.log_file(name)}:\n{tail(self.log_file(name))}")
            alive = master_state(ports)
            if alive is not None and alive.get("aliveworkers", 0) >= wanted:
                return
            time.sleep(0.5)
        raise ClusterError(f"the Spark master at {ports.master_url} did not report {wanted} live workers within "
                           f"{timeout:.0f} s (it reported {alive and alive.get('aliveworkers')}). See "
                           f"{self.settings.logs_dir}/cluster-*.log; raise SPARK_START_TIMEOUT_SECONDS on a slow machine.")


# ---------------------------------------------------------------------- pieces


def kafka_properties(node: KafkaNode, quorum: str, partitions: int) -> dict[str, str]:
    """server.properties of one of the cluster's brokers: 3 replicas, 2 in sync for a write, no topic
    created by a client's mistake."""
    return server_properties(node, quorum, partitions, replicas=BROKERS, min_isr=MIN_ISR)


def choose_ports(settings: Settings, recorded: ClusterPorts | None = None) -> ClusterPorts:
    """The ports the cluster starts on: those the settings name, else those of its last start, else free
    ones. A port that is taken is a PortInUseError naming the setting that chose it."""
    s = settings
    wanted: list[tuple[int | None, str]] = []  # (port or None for any free one, the setting that names it)

    def listed(text: str, before: list[int] | None) -> list[int | None]:
        if text:
            return [int(p) for p in text.split(",")]
        return list(before) if before else [None] * BROKERS

    spark = s.cluster_spark_port or (recorded.spark if recorded else None)
    webui = s.cluster_spark_webui_port or (recorded.spark_webui if recorded else None)
    wanted.append((spark, "CLUSTER_SPARK_PORT"))
    wanted.append((webui, "CLUSTER_SPARK_WEBUI_PORT"))
    wanted += [(p, "CLUSTER_KAFKA_PORTS") for p in listed(s.cluster_kafka_ports, recorded and recorded.kafka)]
    wanted += [(p, "CLUSTER_KAFKA_CONTROLLER_PORTS")
               for p in listed(s.cluster_kafka_controller_ports, recorded and recorded.kafka_controller)]
    wanted += [(None, "")] * WORKERS  # the workers' UIs: always free ports
    named = [p for p, _ in wanted if p]
    if len(named) != len(set(named)):
        twice = sorted({p for p in named if named.count(p) > 1})
        raise ClusterError(f"port {twice[0]} is named twice in the CLUSTER_* port settings: give every port once")
    chosen = []
    with ExitStack() as held:  # free ports stay bound until all are chosen, so none is picked twice
        for port, setting in wanted:
            if port is None:
                sock = held.enter_context(socket.socket())
                sock.bind((HOST, 0))
                chosen.append(sock.getsockname()[1])
                continue
            if port in chosen or not port_is_free(HOST, port):
                raise PortInUseError(port, setting)
            chosen.append(port)
    n = BROKERS
    return ClusterPorts(spark=chosen[0], spark_webui=chosen[1], kafka=chosen[2:2 + n],
                        kafka_controller=chosen[2 + n:2 + 2 * n], workers_webui=chosen[2 + 2 * n:])


def master_state(ports: ClusterPorts) -> dict | None:
    """The Spark master's state (its UI's /json/: workers, cores, applications), or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{ports.spark_webui}/json/", timeout=5) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError):
        return None


def in_sync_replicas(settings: Settings, topic: str) -> dict[int, tuple[int, list[int]]]:
    """partition -> (its leader's broker id, the broker ids of its in-sync replicas), as the brokers' metadata says."""
    admin = admin_client(settings)
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    return {p["partition_index"]: (p["leader_id"], sorted(p["isr_nodes"])) for d in described for p in d["partitions"]}


def spark_home() -> Path:
    """The installed pyspark package, a whole Spark (bin/spark-class, jars/)."""
    from obslab.stream.server import spark_home as home

    return home()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------- CLI

cluster_app = ReportingTyper(help="A local cluster on 127.0.0.1: Spark master + 2 workers, 3 Kafka brokers (KRaft).",
                             no_args_is_help=True)


@cluster_app.command("start")
def cluster_start() -> None:
    """Start the cluster (ports: CLUSTER_* settings, else free ones) and print the settings that use it."""
    status = LocalCluster(settings_with()).start()
    typer.echo(status.message)
    typer.echo("Run the lab on it with these settings (environment or .env):")
    typer.echo(status.settings_text())


@cluster_app.command("stop")
def cluster_stop() -> None:
    """Stop every process of the cluster; no JVM is left behind."""
    typer.echo(LocalCluster(settings_with()).stop())


@cluster_app.command("status")
def cluster_status(as_json: bool = AS_JSON) -> None:
    """Which of the cluster's processes run, and the settings that use it."""
    status = LocalCluster(settings_with()).status()
    if as_json:
        typer.echo(json.dumps({**asdict(status), "settings": status.ports and status.ports.use_settings()}))
        return
    typer.echo(status.message)
    for name, pid in status.pids.items():
        typer.echo(f"  {name:<9} {'PID ' + str(pid) if pid else 'not running'}")
    if status.running:
        typer.echo(status.settings_text())

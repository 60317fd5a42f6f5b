"""The local Apache Kafka broker (KRaft, single node): lifecycle, topics and client factories.

The broker is the real Kafka server, run from the jars `make setup` resolved from Maven Central
into `.cache/jars/`. It lives under DATA_DIR/kafka (storage, config, pid file) and logs to
DATA_DIR/logs/kafka.log. Clients elsewhere in obslab get producers and consumers from here, so a
multi-broker cluster is a settings change (KAFKA_BOOTSTRAP_SERVERS), not a code edit.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from obslab import bootstrap
from obslab.errors import BrokerError, MissingDependencyError, PortInUseError
from obslab.processes import port_is_free, recorded_pid, stop_recorded, tail
from obslab.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class BrokerStatus:
    """What `obslab broker status` reports."""

    running: bool
    pid: int | None = None
    bootstrap_servers: str = ""
    topics: dict[str, dict[int, int]] = field(default_factory=dict)  # topic -> partition -> end offset
    message: str = ""


class LocalBroker:
    """A single-node Kafka broker in combined broker+controller (KRaft) mode."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.dir = self.settings.kafka_dir
        self.storage_dir = self.dir / "storage"
        self.pid_file = self.dir / "broker.pid"
        self.config_file = self.dir / "server.properties"
        self.log4j_file = self.dir / "log4j2.properties"
        self.cluster_id_file = self.dir / "cluster.id"
        self.log_file = self.settings.logs_dir / "kafka.log"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> BrokerStatus:
        """Start the broker and create the lab topics; a running broker is left as it is."""
        pid = self.pid()
        if pid is not None:
            self.ensure_topics()
            return BrokerStatus(True, pid, self.settings.kafka_bootstrap_servers,
                                message=f"broker already running (PID {pid}); nothing to do")
        s = self.settings
        for port, setting in ((s.kafka_port, "KAFKA_PORT"), (s.kafka_controller_port, "KAFKA_CONTROLLER_PORT")):
            if not port_is_free(s.kafka_host, port):
                raise PortInUseError(port, setting)
        classpath = kafka_classpath(s)
        java = bootstrap.find_java()
        node = self.node()
        write_node_config(node, server_properties(node, voters(node), s.kafka_partitions))
        if not (self.storage_dir / "meta.properties").exists():
            format_storage(java, classpath, node, kept_cluster_id(self.cluster_id_file))
        # A new session: Ctrl-C in the terminal that started it does not kill the broker;
        # `obslab broker stop` does.
        proc = launch_node(java, classpath, s.kafka_heap, node, self.log_file)
        self.pid_file.write_text(f"{proc.pid}\n")
        try:
            self._wait_until_ready(proc)
            self.ensure_topics()
        except BaseException:
            self.stop()
            raise
        return BrokerStatus(True, proc.pid, s.kafka_bootstrap_servers,
                            message=f"broker started (PID {proc.pid}) on {s.kafka_bootstrap_servers}")

    def stop(self) -> str:
        """Shut the broker down cleanly (SIGTERM, then SIGKILL after a bound); no JVM is left."""
        return stop_recorded(self.pid(), self.pid_file, "broker")

    def pid(self) -> int | None:
        """PID of this lab's running broker, or None (a stale pid file is ignored)."""
        return recorded_pid(self.pid_file, str(self.config_file))

    def status(self) -> BrokerStatus:
        """Running or not; topics with their end offset per partition."""
        pid = self.pid()
        s = self.settings
        if pid is None:
            return BrokerStatus(False, None, s.kafka_bootstrap_servers, message="broker is not running")
        try:
            topics = end_offsets(s, s.topics)
        except Exception as err:  # noqa: BLE001 - report, do not crash the status command
            return BrokerStatus(True, pid, s.kafka_bootstrap_servers, message=f"running but not answering: {err}")
        return BrokerStatus(True, pid, s.kafka_bootstrap_servers, topics, message=f"broker running (PID {pid})")

    def node(self) -> KafkaNode:
        """Where the single broker lives: node 1 on KAFKA_HOST, its ports and DATA_DIR/kafka."""
        s = self.settings
        return KafkaNode(1, s.kafka_host, s.kafka_port, s.kafka_controller_port, self.dir)

    def ensure_topics(self) -> list[str]:
        """Create the lab topics that do not exist yet; returns the ones created."""
        return ensure_topics(self.settings)

    # ------------------------------------------------------------------ internals

    def _wait_until_ready(self, proc: subprocess.Popen) -> None:
        wait_until_ready(proc, self.node(), self.settings, self.log_file, what="the broker")


# ---------------------------------------------------------------------- one Kafka server


@dataclass(frozen=True)
class KafkaNode:
    """One Kafka server in combined broker+controller (KRaft) mode: its id, address and folder."""

    node_id: int
    host: str
    port: int  # clients and other brokers
    controller_port: int  # the KRaft quorum
    dir: Path  # server.properties, log4j2.properties, storage/, its pid file

    @property
    def config_file(self) -> Path:
        return self.dir / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.dir / "log4j2.properties"

    @property
    def storage_dir(self) -> Path:
        return self.dir / "storage"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def voters(*nodes: KafkaNode) -> str:
    """controller.quorum.voters of these nodes: `id@host:controller_port,...`."""
    return ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)


def server_properties(node: KafkaNode, quorum: str, partitions: int, replicas: int = 1,
                      min_isr: int = 1) -> dict[str, str]:
    """server.properties of one node of a cluster of `replicas` brokers (1: the lab's single broker);
    topics and Kafka's internal topics get `replicas` copies, a write needs `min_isr` of them."""
    host = node.host
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": quorum,
        "listeners": f"PLAINTEXT://{host}:{node.port},CONTROLLER://{host}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.storage_dir),
        "num.partitions": str(partitions),
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "log.retention.hours": "168",
    }


LOG4J = (
    "status = warn\n"
    "appender.out.type = Console\n"
    "appender.out.name = out\n"
    "appender.out.layout.type = PatternLayout\n"
    "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
    "rootLogger.level = info\n"
    "rootLogger.appenderRef.out.ref = out\n"
)


def write_node_config(node: KafkaNode, props: dict[str, str]) -> None:
    """Write the node's server.properties and its log4j2 configuration (to the console, i.e. its log)."""
    node.dir.mkdir(parents=True, exist_ok=True)
    node.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    node.log4j_file.write_text(LOG4J)


def kafka_classpath(settings: Settings) -> str:
    """Classpath of the Kafka server jars `make setup` resolved into CACHE_DIR."""
    try:
        jars = bootstrap.jar_classpath(bootstrap.kafka_broker_jars(), settings.cache_dir)
    except bootstrap.SetupError as err:
        raise MissingDependencyError(str(err)) from None
    return os.pathsep.join(str(j) for j in jars)


def format_storage(java: str, classpath: str, node: KafkaNode, cluster_id: str) -> None:
    """Format the node's storage for `cluster_id` (every node of a cluster gets the same id); a
    formatted storage is left as it is."""
    result = subprocess.run(
        [java, "-cp", classpath, f"-Dlog4j2.configurationFile={node.log4j_file}",
         "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(node.config_file), "--ignore-formatted"],
        capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        raise BrokerError(
            f"formatting Kafka storage in {node.storage_dir} failed: {result.stdout[-800:]}{result.stderr[-800:]}"
        )


# The heap starts small and grows up to KAFKA_HEAP as the broker needs it: with -Xms equal to -Xmx, G1
# spread its allocations over the whole heap, and a broker at a lab's load held most of it (PSS
# 384 MiB of a 512 MiB heap in the lab's memory benchmark).
INITIAL_HEAP = "64m"


def launch_node(java: str, classpath: str, heap: str, node: KafkaNode, log_file: Path) -> subprocess.Popen:
    """Start `kafka.Kafka` on the node's config, in a session of its own, logging to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        java, f"-Xmx{heap}", f"-Xms{INITIAL_HEAP}", "-XX:+UseG1GC",
        "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={node.log4j_file}",
        "-cp", classpath, "kafka.Kafka", str(node.config_file),
    ]
    with log_file.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=node.dir)


def wait_until_ready(proc: subprocess.Popen, node: KafkaNode, settings: Settings, log_file: Path,
                     what: str) -> None:
    """Wait until the node answers an admin request on its client port; a BrokerError when it exits
    first or takes longer than KAFKA_START_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + settings.kafka_start_timeout_seconds
    alone = settings.model_copy(update={"kafka_bootstrap_servers": node.address})
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(
                f"{what} exited with code {proc.returncode} while starting. "
                f"Last lines of {log_file}:\n{tail(log_file)}"
            )
        if not port_is_free(node.host, node.port):
            try:
                admin = admin_client(alone, timeout_ms=5_000)
                admin.list_topics()
                admin.close()
                return
            except Exception as err:  # noqa: BLE001 - not ready yet; keep polling
                last_error = str(err)
        time.sleep(0.5)
    raise BrokerError(
        f"{what} did not answer on {node.address} within {settings.kafka_start_timeout_seconds:.0f} s "
        f"({last_error}). See {log_file}; raise KAFKA_START_TIMEOUT_SECONDS on a slow machine."
    )


def ensure_topics(settings: Settings) -> list[str]:
    """Create the lab topics that do not exist yet on KAFKA_BOOTSTRAP_SERVERS, with KAFKA_PARTITIONS
    partitions and KAFKA_REPLICATION_FACTOR replicas; returns the ones created."""
    from kafka.admin import NewTopic
    from kafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError

    s = settings
    admin = admin_client(s)
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in s.topics if t not in existing]
        if wanted:
            try:
                admin.create_topics([NewTopic(t, s.kafka_partitions, s.kafka_replication_factor) for t in wanted],
                                    timeout_ms=30_000)
            except TopicAlreadyExistsError:
                pass
            except InvalidReplicationFactorError:
                raise BrokerError(
                    f"KAFKA_REPLICATION_FACTOR={s.kafka_replication_factor} is more than the brokers at "
                    f"{s.kafka_bootstrap_servers} hold: set it to at most their number (1 for the single local "
                    "broker), or run the three-broker cluster (`obslab cluster start`)."
                ) from None
        return wanted
    finally:
        admin.close()


# ---------------------------------------------------------------------- the KRaft cluster id


def kept_cluster_id(path: Path) -> str:
    """The KRaft cluster id kept in `path`, made and kept there the first time."""
    if path.exists():
        return path.read_text().strip()
    cluster_id = new_cluster_id()
    path.write_text(cluster_id + "\n")
    return cluster_id


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):  # Kafka's own generator avoids ids that look like options
            return value


# ---------------------------------------------------------------------- client factories


def admin_client(settings: Settings, timeout_ms: int = 30_000):
    """A kafka-python admin client for the configured brokers."""
    from kafka.admin import KafkaAdminClient

    s = settings
    return KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap_servers, request_timeout_ms=timeout_ms,
                            client_id="obslab-admin")


def producer(settings: Settings, **overrides):
    """A kafka-python producer tuned for the lab: acks=all, idempotent, batched."""
    from kafka import KafkaProducer

    s = settings
    options = dict(
        bootstrap_servers=s.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        batch_size=64 * 1024,
        retries=5,
        client_id="obslab-producer",
    )
    options.update(overrides)
    return KafkaProducer(**options)


def consumer(settings: Settings, **overrides):
    """A kafka-python consumer without a group (assign partitions yourself), reading from the start."""
    from kafka import KafkaConsumer

    s = settings
    options = dict(
        bootstrap_servers=s.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        client_id="obslab-consumer",
    )
    options.update(overrides)
    return KafkaConsumer(**options)


def end_offsets(settings: Settings, topics: list[str]) -> dict[str, dict[int, int]]:
    """topic -> partition -> end offset, for the topics that exist."""
    from kafka import TopicPartition

    c = consumer(settings)
    try:
        result: dict[str, dict[int, int]] = {}
        for topic in topics:
            parts = c.partitions_for_topic(topic)
            if not parts:
                continue
            offsets = c.end_offsets([TopicPartition(topic, p) for p in sorted(parts)])
            result[topic] = {tp.partition: off for tp, off in sorted(offsets.items(), key=lambda kv: kv[0].partition)}
        return result
    finally:
        c.close()

"""The local Apache Kafka broker (KRaft, single node): lifecycle, topics and client factories.

The broker is the real Kafka server, run from the jars `make setup` resolved from Maven Central
into `.cache/jars/`. It lives under DATA_DIR/kafka (storage, config, pid file) and logs to
DATA_DIR/logs/kafka.log. Clients elsewhere in obslab get producers and consumers from here, so a
multi-broker cluster is a settings change (KAFKA_BOOTSTRAP_SERVERS), not a code edit.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from obslab import bootstrap
from obslab.errors import BrokerError, MissingDependencyError, PortInUseError
from obslab.settings import Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0


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
        classpath = self._classpath()
        java = bootstrap.find_java()
        self._write_config()
        if not (self.storage_dir / "meta.properties").exists():
            self._format_storage(java, classpath)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            java, f"-Xmx{s.kafka_heap}", f"-Xms{s.kafka_heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self.log4j_file}",
            "-cp", classpath, "kafka.Kafka", str(self.config_file),
        ]
        with self.log_file.open("ab") as out:
            # A new session: Ctrl-C in the terminal that started it does not kill the broker;
            # `obslab broker stop` does.
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.dir)
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

    def ensure_topics(self) -> list[str]:
        """Create the lab topics that do not exist yet; returns the ones created."""
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = admin_client(self.settings)
        try:
            existing = set(admin.list_topics())
            wanted = [t for t in self.settings.topics if t not in existing]
            if wanted:
                try:
                    admin.create_topics(
                        [NewTopic(t, self.settings.kafka_partitions, 1) for t in wanted], timeout_ms=30_000
                    )
                except TopicAlreadyExistsError:
                    pass
            return wanted
        finally:
            admin.close()

    # ------------------------------------------------------------------ internals

    def _classpath(self) -> str:
        try:
            jars = bootstrap.jar_classpath(bootstrap.kafka_broker_jars(), self.settings.cache_dir)
        except bootstrap.SetupError as err:
            raise MissingDependencyError(str(err)) from None
        return os.pathsep.join(str(j) for j in jars)

    def _write_config(self) -> None:
        s = self.settings
        self.dir.mkdir(parents=True, exist_ok=True)
        host = s.kafka_host
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{host}:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://{host}:{s.kafka_port},CONTROLLER://{host}:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://{host}:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.storage_dir),
            "num.partitions": str(s.kafka_partitions),
            # One node: every internal topic has a single replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
        }
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.log4j_file.write_text(
            "status = warn\n"
            "appender.out.type = Console\n"
            "appender.out.name = out\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = info\n"
            "rootLogger.appenderRef.out.ref = out\n"
        )

    def _format_storage(self, java: str, classpath: str) -> None:
        if self.cluster_id_file.exists():
            cluster_id = self.cluster_id_file.read_text().strip()
        else:
            cluster_id = new_cluster_id()
            self.cluster_id_file.write_text(cluster_id + "\n")
        result = subprocess.run(
            [java, "-cp", classpath, f"-Dlog4j2.configurationFile={self.log4j_file}",
             "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config_file), "--ignore-formatted"],
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode != 0:
            raise BrokerError(
                f"formatting Kafka storage in {self.storage_dir} failed: {result.stdout[-800:]}{result.stderr[-800:]}"
            )

    def _wait_until_ready(self, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + self.settings.kafka_start_timeout_seconds
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {proc.returncode} while starting. "
                    f"Last lines of {self.log_file}:\n{tail(self.log_file)}"
                )
            if not port_is_free(self.settings.kafka_host, self.settings.kafka_port):
                try:
                    admin = admin_client(self.settings, timeout_ms=5_000)
                    admin.list_topics()
                    admin.close()
                    return
                except Exception as err:  # noqa: BLE001 - not ready yet; keep polling
                    last_error = str(err)
            time.sleep(0.5)
        raise BrokerError(
            f"the broker did not answer on {self.settings.kafka_bootstrap_servers} within "
            f"{self.settings.kafka_start_timeout_seconds:.0f} s ({last_error}). "
            f"See {self.log_file}; raise KAFKA_START_TIMEOUT_SECONDS on a slow machine."
        )


# ---------------------------------------------------------------------- helpers


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):  # Kafka's own generator avoids ids that look like options
            return value


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (a port in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def recorded_pid(pid_file: Path, marker: str) -> int | None:
    """The PID in `pid_file` while that process runs and its command line holds `marker` (the PID
    may have been reused by an unrelated process since ours died); None otherwise."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not process_alive(pid):
        return None
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return pid  # its command line cannot be read: trust the pid file
    return pid if marker in cmdline else None


def stop_recorded(pid: int | None, pid_file: Path, what: str) -> str:
    """Stop a lab process (SIGTERM, then SIGKILL after STOP_TIMEOUT_S) and remove its pid file;
    says what happened to `what`."""
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return f"{what} is not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and process_alive(pid):
        time.sleep(0.1)
    how = "stopped"
    if process_alive(pid):
        os.kill(pid, signal.SIGKILL)
        how = f"did not stop within {STOP_TIMEOUT_S:.0f} s; killed"
        while process_alive(pid):
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return f"{what} (PID {pid}) {how}"


def process_alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped) is not running, and is reaped
    here when it is a child of this process."""
    try:
        if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            return True
    except psutil.ZombieProcess:
        pass
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


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

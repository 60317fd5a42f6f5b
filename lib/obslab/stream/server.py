"""The lab's one long-lived Spark: a Spark Connect server on 127.0.0.1 (`obslab spark start|stop|status`).

A Spark inside a process takes 15-20 s and ~770 MB to start, and every process that touches Spark
(the stream, each notebook kernel, each DAG task) would start its own. The server starts once, like
the broker; the lab's steps connect to it as clients (~2 s, a few MB) through Spark Connect, Spark 4's
client/server protocol. With SPARK_SERVER=auto (the default) a step uses this server when it runs for
the same DATA_DIR, and a Spark of its own otherwise (`build_session`).

The stream runs the same way through it: Spark keeps the checkpoint and the Kafka offsets on the
server, and the sink (a foreachBatch function) runs in a Python worker the server starts with the
lab's Python, writing the same DuckDB store in the same transactions. So exactly-once holds as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from obslab.errors import MissingDependencyError, PortInUseError, StreamError
from obslab.processes import port_is_free, recorded_pid, stop_recorded, tail
from obslab.settings import Settings
from obslab.stream.worker import WORKER_ZYGOTE, launcher, zygote_path

# Spark Connect has no authentication of its own: the server listens on SPARK_CONNECT_HOST, 127.0.0.1
# by default (the container lab: every interface of the stream container, which nothing publishes).
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# The server's JVM runs Java's serial collector, which keeps the heap near what is live, where G1 (the
# default) grew it toward SPARK_DRIVER_MEMORY: over 1,000,000 events the JVM's peak PSS was 812 MiB
# instead of 1,098 (medians of 2), in the same time (bench/bench_spark_memory.py, BENCHMARKS.md).
SERVER_JAVA_OPTIONS = "-XX:+UseSerialGC"


@dataclass
class ServerStatus:
    """What `obslab spark status` reports."""

    running: bool
    pid: int | None
    url: str
    message: str


class SparkServer:
    """The lab's Spark Connect server for one DATA_DIR: its pid file, log and address."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.dir = settings.data_dir / "spark"
        self.pid_file = self.dir / "server.pid"
        self.address_file = self.dir / "server.json"  # where clients find it: {"url": ...}
        self.log_file = settings.logs_dir / "spark-connect.log"
        self.zygote_log = settings.logs_dir / "spark-workers.log"

    @property
    def url(self) -> str:
        return f"sc://{self.settings.spark_connect_host}:{self.settings.spark_connect_port}"

    def pid(self) -> int | None:
        """PID of this lab's running server, or None (a stale pid file is ignored)."""
        return recorded_pid(self.pid_file, SERVER_CLASS)

    def running_url(self) -> str | None:
        """The address of this lab's server while it runs (it may run on another port than the
        setting says now: the one it was started with counts)."""
        return None if self.pid() is None else self._recorded_url()

    def _recorded_url(self) -> str | None:
        try:
            return json.loads(self.address_file.read_text())["url"]
        except (OSError, ValueError, KeyError):
            return None

    def start(self, wait: bool = True) -> ServerStatus:
        """Start the server and (`wait`) wait until a client session works; a running server is left as
        it is. Without waiting, a client that connects meanwhile waits for it (Spark Connect's retries)."""
        running = self.status()
        if running.running:
            return ServerStatus(True, running.pid, running.url,
                                f"Spark already running (PID {running.pid}) at {running.url}; nothing to do")
        s = self.settings
        if not port_is_free(s.spark_connect_host, s.spark_connect_port):
            raise PortInUseError(s.spark_connect_port, "SPARK_CONNECT_PORT")
        cmd = self.command()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
               # the foreachBatch sink runs in a Python worker of the server: the lab's own Python, through
               # a launcher that connects back to Spark before the heavy imports (obslab.stream.worker)
               "PYSPARK_PYTHON": str(launcher(self.dir)), "PYSPARK_DRIVER_PYTHON": sys.executable,
               # ... which has the sink's worker forked by the zygote started below, imports done
               WORKER_ZYGOTE: str(zygote_path(self.dir))}
        env.pop("SPARK_REMOTE", None)
        env.pop("SPARK_CONNECT_MODE_ENABLED", None)
        with self.log_file.open("ab") as out:
            # its own session: Ctrl-C in the terminal that started it does not stop it; `obslab spark stop` does
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True, cwd=self.dir)
        self.pid_file.write_text(f"{proc.pid}\n")
        self._start_worker_zygote(proc.pid, env)
        self.address_file.write_text(json.dumps({"url": self.url}))
        if not wait:
            return ServerStatus(True, proc.pid, self.url, f"Spark starting (PID {proc.pid}) at {self.url}")
        try:
            self._wait_until_ready(proc)
        except BaseException:
            self.stop()
            raise
        return ServerStatus(True, proc.pid, self.url, f"Spark started (PID {proc.pid}) at {self.url}")

    def _start_worker_zygote(self, server_pid: int, env: dict[str, str]) -> None:
        """The zygote the sink's Python workers are forked from; it ends when the server does."""
        with self.zygote_log.open("ab") as out:
            subprocess.Popen([sys.executable, "-m", "obslab.stream.worker", "--zygote", str(zygote_path(self.dir)),
                              "--watch", str(server_pid)], stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, start_new_session=True, cwd=self.dir)

    def command(self) -> list[str]:
        """spark-submit of the Connect server: the lab's master, memory and Kafka connector, on loopback."""
        from obslab.stream.session import RUNTIME_CONF, kafka_connector_jars

        s = self.settings
        conf = {"spark.connect.grpc.binding.address": s.spark_connect_host,
                "spark.connect.grpc.binding.port": s.spark_connect_port,
                "spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false",
                "spark.driver.extraJavaOptions": SERVER_JAVA_OPTIONS, **RUNTIME_CONF}
        cmd = [str(spark_home() / "bin" / "spark-submit"), "--class", SERVER_CLASS, "--name", "obslab-spark",
               "--master", s.spark_master, "--driver-memory", s.spark_driver_memory,
               "--jars", ",".join(kafka_connector_jars(s))]
        for key, value in conf.items():
            cmd += ["--conf", f"{key}={value}"]
        return [*cmd, "spark-internal"]

    def stop(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL after a bound); streams running on it fail and resume
        from their checkpoints on the next start."""
        message = stop_recorded(self.pid(), self.pid_file, "Spark")
        self.address_file.unlink(missing_ok=True)
        return message

    def status(self) -> ServerStatus:
        pid = self.pid()
        if pid is None:
            return ServerStatus(False, None, self.url, "Spark is not running (`obslab spark start` starts it); "
                                                       "until then every step starts a Spark of its own")
        url = self._recorded_url() or self.url
        return ServerStatus(True, pid, url, f"Spark running (PID {pid}) at {url}; log {self.log_file}")

    def _wait_until_ready(self, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + self.settings.spark_start_timeout_seconds
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StreamError(f"the Spark server exited with code {proc.returncode} while starting. "
                                  f"Last lines of {self.log_file}:\n{tail(self.log_file)}")
            if not port_is_free(self.settings.spark_connect_host, self.settings.spark_connect_port) and \
                    _answers(self.url):
                return
            time.sleep(0.5)
        raise StreamError(f"the Spark server did not answer at {self.url} within "
                          f"{self.settings.spark_start_timeout_seconds:.0f} s. See {self.log_file}; raise "
                          "SPARK_START_TIMEOUT_SECONDS on a slow machine.")


def _answers(url: str) -> bool:
    """True when the server at `url` runs a query (in a child process: a Connect session in this one
    would switch this process's pyspark to Connect mode for good)."""
    code = ("import sys; from pyspark.sql import SparkSession; "
            "s = SparkSession.builder.remote(sys.argv[1]).getOrCreate(); s.range(1).collect(); s.stop()")
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED")}
    try:
        return subprocess.run([sys.executable, "-c", code, url], capture_output=True, timeout=60,
                              env=env).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def spark_home() -> Path:
    """The installed pyspark package: it is a whole Spark (bin/spark-submit, jars/ with Spark Connect)."""
    try:
        import pyspark
    except ImportError:
        raise MissingDependencyError("pyspark is not installed: run `make setup` (the full lab) first") from None
    return Path(pyspark.__file__).parent


def server_url(settings: Settings) -> str | None:
    """The Spark Connect server the lab's steps use (SPARK_SERVER), or None for a Spark of their own."""
    choice = settings.spark_server
    if choice == "local":
        return None
    if choice.startswith("sc://"):
        return choice
    return SparkServer(settings).running_url()


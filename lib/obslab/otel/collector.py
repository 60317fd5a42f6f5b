"""The lab's OpenTelemetry Collector: built from Go modules once, then run like the broker.

`build` compiles the Collector that builder.yaml describes with the OpenTelemetry Collector Builder
(ocb), everything under CACHE_DIR: the builder in otelcol/builder-<version>/, the generated sources
and the binary in otelcol/build-<hash of the manifest>/, and Go's module and build caches in go/,
so nothing lands in ~/go and deleting .cache deletes it all. `LocalCollector` runs that binary on
config.yaml as it is, with the lab's settings in its environment; it keeps its pid file in
DATA_DIR/otelcol and logs to DATA_DIR/logs/otelcol.log.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from obslab.errors import CollectorError, MissingDependencyError, PortInUseError
from obslab.processes import port_is_free, process_alive, recorded_pid, stop_recorded, tail
from obslab.settings import Settings

BUILDER_MODULE = "go.opentelemetry.io/collector/cmd/builder"
BUILDER_VERSION = "v0.165.0"  # the collector core release builder.yaml pins
MANIFEST = Path(__file__).with_name("builder.yaml")
CONFIG = Path(__file__).with_name("config.yaml")

BUILD_TIMEOUT_S = 1800.0  # a cold build downloads ~660 MB of modules, then compiles for ~100 s on 2 cores
ANSWER_TIMEOUT_S = 2.0  # one readiness probe of the OTLP/HTTP receiver
BUILT_STAMP = ".built"  # written last: a build folder without it stopped half-way


@dataclass
class CollectorStatus:
    """What `obslab otelcol status` reports."""

    running: bool
    pid: int | None = None
    otlp_grpc: str = ""  # host:port
    otlp_http: str = ""  # base URL; spans go to <otlp_http>/v1/traces
    message: str = ""


# ---------------------------------------------------------------------- build


def manifest() -> dict:
    """builder.yaml, parsed."""
    return yaml.safe_load(MANIFEST.read_text())


def build_dir(settings: Settings) -> Path:
    """The build folder of the current manifest and builder: a new one whenever either changes."""
    digest = hashlib.sha256(BUILDER_VERSION.encode() + b"\n" + MANIFEST.read_bytes()).hexdigest()
    return settings.cache_dir / "otelcol" / f"build-{digest[:16]}"


def binary_path(settings: Settings) -> Path:
    """Where `build` puts the Collector of the current manifest (named by its `dist` section)."""
    dist = manifest()["dist"]
    return build_dir(settings) / dist["output_path"] / dist["name"]


def is_built(settings: Settings) -> bool:
    """True when the Collector of the current manifest is built and complete."""
    return (build_dir(settings) / BUILT_STAMP).is_file() and binary_path(settings).is_file()


def built_binary(settings: Settings) -> Path:
    """The Collector of the current manifest; MissingDependencyError when it is not built yet."""
    if not is_built(settings):
        raise MissingDependencyError(
            f"the OpenTelemetry Collector is not built for the current {MANIFEST.name} (no "
            f"{binary_path(settings)}). Run `make otelcol` (or `obslab otelcol build`) first.")
    return binary_path(settings)


def go_env(settings: Settings) -> dict[str, str]:
    """The environment Go runs in: its module and build caches under CACHE_DIR/go, not in ~/go."""
    go = settings.cache_dir / "go"
    # Go makes its module cache read-only; -modcacherw keeps `rm -rf .cache` working without chmod.
    flags = " ".join(f for f in (os.environ.get("GOFLAGS", ""), "-modcacherw") if f)
    return {**os.environ, "GOPATH": str(go), "GOMODCACHE": str(go / "pkg" / "mod"),
            "GOCACHE": str(go / "build-cache"), "GOFLAGS": flags}


def find_go() -> str:
    """The `go` command on PATH, or MissingDependencyError saying what to install."""
    go = shutil.which("go")
    if go is None:
        raise MissingDependencyError(
            "`go` is not on PATH: the OpenTelemetry Collector is compiled from Go modules. Install Go 1.26 "
            "or newer (https://go.dev/doc/install; put its bin folder on PATH), then run `make otelcol` again.")
    return go


def build(settings: Settings) -> Path:
    """Build the Collector of builder.yaml, once per manifest (a built one is returned at once); its path."""
    if is_built(settings):
        return binary_path(settings)
    go = find_go()
    builder = install_builder(settings, go)
    folder = build_dir(settings)
    shutil.rmtree(folder, ignore_errors=True)  # a build that stopped half-way starts afresh
    folder.mkdir(parents=True)
    log_file = settings.logs_dir / "otelcol-build.log"
    _run([str(builder), f"--config={MANIFEST}"], folder, go_env(settings), log_file, "building the Collector")
    if not binary_path(settings).is_file():
        raise CollectorError(f"the builder finished but wrote no {binary_path(settings)}; see {log_file}.")
    (folder / BUILT_STAMP).write_text(f"{BUILDER_VERSION}\n")
    for old in folder.parent.glob("build-*"):  # builds of earlier manifests: 46 MB each
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return binary_path(settings)


def install_builder(settings: Settings, go: str) -> Path:
    """The pinned OpenTelemetry Collector Builder, installed with `go install` into CACHE_DIR/otelcol."""
    folder = settings.cache_dir / "otelcol" / f"builder-{BUILDER_VERSION}"
    builder = folder / "builder"
    if builder.is_file():
        return builder
    folder.mkdir(parents=True, exist_ok=True)
    _run([go, "install", f"{BUILDER_MODULE}@{BUILDER_VERSION}"], folder, {**go_env(settings), "GOBIN": str(folder)},
         settings.logs_dir / "otelcol-build.log", f"installing the builder {BUILDER_VERSION}")
    return builder


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log_file: Path, what: str) -> None:
    """Run one build step with its output in log_file; CollectorError with the log's tail when it fails."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as out:
        try:
            result = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CollectorError(f"{what} took more than {BUILD_TIMEOUT_S:.0f} s and was stopped. "
                                 f"Last lines of {log_file}:\n{tail(log_file)}") from None
    if result.returncode != 0:
        raise CollectorError(
            f"{what} failed (exit code {result.returncode}). Last lines of {log_file}:\n{tail(log_file)}\n"
            "The Go module proxy (GOPROXY) must be reachable for the first build.")


# ---------------------------------------------------------------------- run


def collector_env(settings: Settings) -> dict[str, str]:
    """The variables config.yaml reads, from the settings of the same names."""
    s = settings
    return {
        "OTEL_HOST": s.otel_host,
        "OTLP_GRPC_PORT": str(s.otlp_grpc_port),
        "OTLP_HTTP_PORT": str(s.otlp_http_port),
        # The Collector splits a string list at commas, and keeps spaces: none go in.
        "KAFKA_BOOTSTRAP_SERVERS": ",".join(b.strip() for b in s.kafka_bootstrap_servers.split(",") if b.strip()),
        "TOPIC_OTLP_SPANS": s.topic_otlp_spans,
    }


def otlp_grpc_endpoint(settings: Settings) -> str:
    return f"{settings.otel_host}:{settings.otlp_grpc_port}"


def otlp_http_endpoint(settings: Settings) -> str:
    """Base URL of the OTLP/HTTP receiver; exporters post spans to <this>/v1/traces."""
    return f"http://{settings.otel_host}:{settings.otlp_http_port}"


def otlp_http_answers(settings: Settings) -> bool:
    """True when the OTLP/HTTP receiver answers (with any status: it takes spans by POST only)."""
    # No proxy: an HTTP_PROXY in the environment must not see, or swallow, a loopback probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        opener.open(f"{otlp_http_endpoint(settings)}/v1/traces", timeout=ANSWER_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return True  # 405 Method Not Allowed: the receiver is there
    except (OSError, http.client.HTTPException):
        return False
    return True


class LocalCollector:
    """The lab's Collector as one local process: OTLP in on OTEL_HOST, spans out to TOPIC_OTLP_SPANS."""

    def __init__(self, settings: Settings, binary: Path | None = None):
        self.settings = settings
        self.binary = binary  # None: the build of the current manifest
        self.dir = settings.data_dir / "otelcol"
        self.pid_file = self.dir / "otelcol.pid"
        self.log_file = settings.logs_dir / "otelcol.log"

    def start(self) -> CollectorStatus:
        """Start the Collector and wait until it answers; a running one is left as it is."""
        s = self.settings
        pid = self.pid()
        if pid is not None:
            return self._status(pid, f"Collector already running (PID {pid}); nothing to do")
        for port, setting in ((s.otlp_grpc_port, "OTLP_GRPC_PORT"), (s.otlp_http_port, "OTLP_HTTP_PORT")):
            if not port_is_free(s.otel_host, port):
                raise PortInUseError(port, setting)
        binary = self.binary or built_binary(s)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            # A new session, as the broker's: Ctrl-C in the starting terminal leaves it running.
            proc = subprocess.Popen([str(binary), "--config", f"file:{CONFIG}"], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.dir, env={**os.environ, **collector_env(s)})
        self.pid_file.write_text(f"{proc.pid}\n")
        try:
            self._wait_until_ready(proc)
        except BaseException:
            self.stop()
            raise
        return self._status(proc.pid, f"Collector started (PID {proc.pid}): OTLP gRPC {otlp_grpc_endpoint(s)}, "
                                      f"HTTP {otlp_http_endpoint(s)}; spans to topic {s.topic_otlp_spans} "
                                      f"on {s.kafka_bootstrap_servers}")

    def stop(self) -> str:
        """Stop the Collector (SIGTERM: it flushes what it holds; SIGKILL after a bound)."""
        return stop_recorded(self.pid(), self.pid_file, "Collector")

    def pid(self) -> int | None:
        """PID of this lab's running Collector, or None (a stale pid file is ignored)."""
        return recorded_pid(self.pid_file, f"file:{CONFIG}")

    def status(self) -> CollectorStatus:
        """Running or not, and whether its OTLP/HTTP receiver answers."""
        pid = self.pid()
        if pid is None:
            return self._status(None, "Collector is not running")
        if not otlp_http_answers(self.settings):
            return self._status(pid, f"Collector running (PID {pid}) but {otlp_http_endpoint(self.settings)} "
                                     f"does not answer; see {self.log_file}")
        return self._status(pid, f"Collector running (PID {pid})")

    def _status(self, pid: int | None, message: str) -> CollectorStatus:
        return CollectorStatus(pid is not None, pid, otlp_grpc_endpoint(self.settings),
                               otlp_http_endpoint(self.settings), message)

    def _wait_until_ready(self, proc: subprocess.Popen) -> None:
        s = self.settings
        deadline = time.monotonic() + s.otelcol_start_timeout_seconds
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CollectorError(f"the Collector exited with code {proc.returncode} while starting. "
                                     f"Last lines of {self.log_file}:\n{tail(self.log_file)}")
            if otlp_http_answers(s):
                return
            time.sleep(0.2)
        raise CollectorError(
            f"the Collector did not answer on {otlp_http_endpoint(s)} within {s.otelcol_start_timeout_seconds:.0f} s. "
            f"Last lines of {self.log_file}:\n{tail(self.log_file)}\n"
            "Raise OTELCOL_START_TIMEOUT_SECONDS on a slow machine.")

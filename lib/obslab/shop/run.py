"""The shop's processes: start, stop and status of its three services, and Locust's load on it.

Each service runs detached as `python -m obslab.shop.services <name>` on 127.0.0.1, in a session of
its own (Ctrl-C in the terminal that started it does not stop it; `obslab shop stop` does). Pid
files and the ports of the running shop live under DATA_DIR/shop, logs in DATA_DIR/logs/shop-<name>.log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from obslab.errors import ObslabError, PortInUseError
from obslab.processes import port_is_free, process_alive, stop_all, tail
from obslab.settings import Settings
from obslab.shop.faults import FlagFile, begin_run
from obslab.shop.topology import DEFAULT_PORTS, FRONTEND, SERVICES, callees, start_order

START_TIMEOUT_S = 30.0  # a service that does not answer within this failed to start
STOP_TIMEOUT_S = 10.0  # then SIGKILL
PROBE_TIMEOUT_S = 2.0  # one readiness probe
LOAD_GRACE_S = 60.0  # Locust's start and stop, beyond the run time of a load
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def otlp_traces_url(settings: Settings) -> str:
    """The Collector's OTLP/HTTP traces endpoint, where the services send their spans."""
    return f"http://{settings.otel_host}:{settings.otlp_http_port}/v1/traces"


class ShopError(ObslabError):
    """A shop service could not be started, or the load could not be run."""


@dataclass
class ServiceStatus:
    """One service: its port, its PID while running, whether it answers."""

    service: str
    port: int
    pid: int | None = None
    answering: bool = False


@dataclass
class ShopStatus:
    """What `obslab shop status` reports."""

    services: list[ServiceStatus]
    run_id: str | None = None
    message: str = ""

    @property
    def running(self) -> bool:
        return all(s.answering for s in self.services)


@dataclass
class LoadResult:
    """What a load did: requests and failures per route (Locust's request name)."""

    requests: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


class Shop:
    """The shop's three processes, under DATA_DIR/shop."""

    def __init__(self, settings: Settings, ports: dict[str, int] | None = None):
        self.settings = settings
        self.dir = settings.data_dir / "shop"
        self.flags = FlagFile(self.dir / "faults.json")
        self.ports_file = self.dir / "ports.json"
        # Given ports, else those of the running shop, else the defaults.
        self.ports = {**DEFAULT_PORTS, **self._recorded_ports(), **(ports or {})}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    # ------------------------------------------------------------------ lifecycle

    def start(self, store) -> ShopStatus:
        """Start the services not running yet, callees first; a new run (ground truth, catalogue)
        begins when none was running. Each must answer before the next starts."""
        missing = [s for s in start_order() if self.pid(s) is None]
        if not missing:
            return self.status("the shop is already running; nothing to do")
        for service in missing:
            if not port_is_free("127.0.0.1", self.ports[service]):
                raise PortInUseError(self.ports[service], f"--{service}-port")
        self.dir.mkdir(parents=True, exist_ok=True)
        if len(missing) == len(SERVICES):
            begin_run(self.flags, store)
        self.ports_file.write_text(json.dumps(self.ports) + "\n")
        try:
            for service in missing:
                self._wait_until_answering(service, self._spawn(service))
        except BaseException:
            self.stop()
            raise
        return self.status(f"the shop is running: {self.url(FRONTEND)}/checkout and /browse")

    def stop(self) -> str:
        """Stop every service (SIGTERM, then SIGKILL after a bound); no process is left."""
        pids = {s: p for s in SERVICES if (p := self.pid(s)) is not None}
        killed = stop_all(pids, STOP_TIMEOUT_S)
        for service in SERVICES:
            self._pid_file(service).unlink(missing_ok=True)
        if not pids:
            return "the shop is not running"
        late = f"; killed {', '.join(killed)} after {STOP_TIMEOUT_S:.0f} s" if killed else ""
        return f"stopped {', '.join(f'{s} (PID {p})' for s, p in pids.items())}{late}"

    def pid(self, service: str) -> int | None:
        """PID of the running service, or None (a stale pid file, or a reused PID, is ignored)."""
        try:
            pid = int(self._pid_file(service).read_text().strip())
        except (OSError, ValueError):
            return None
        if not process_alive(pid):
            return None
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.Error:
            return pid  # its command line cannot be read: trust the pid file
        return pid if "obslab.shop.services" in cmdline and service in cmdline else None

    def status(self, message: str = "") -> ShopStatus:
        """Each service's PID and whether it answers; the run the flag file holds."""
        pids = {s: self.pid(s) for s in SERVICES}
        services = [ServiceStatus(s, self.ports[s], pid, pid is not None and self._answers(s))
                    for s, pid in pids.items()]
        state = self.flags.read()
        status = ShopStatus(services, state.run_id if state else None, message)
        if not message:
            up = [s.service for s in services if s.answering]
            status.message = ("the shop is running" if status.running else
                              f"the shop is not running ({', '.join(up)} up)" if up else "the shop is not running")
        return status

    # ------------------------------------------------------------------ internals

    def _pid_file(self, service: str) -> Path:
        return self.dir / f"{service}.pid"

    def _log_file(self, service: str) -> Path:
        return self.settings.logs_dir / f"shop-{service}.log"

    def _recorded_ports(self) -> dict[str, int]:
        try:
            return json.loads(self.ports_file.read_text())
        except (OSError, ValueError):
            return {}

    def _spawn(self, service: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "obslab.shop.services", service, "--port", str(self.ports[service]),
               "--faults", str(self.flags.path), "--otlp-endpoint", otlp_traces_url(self.settings),
               *[a for c in callees(service) for a in ("--peer", f"{c}={self.url(c)}")]]
        log_file = self._log_file(service)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.dir)
        self._pid_file(service).write_text(f"{proc.pid}\n")
        return proc

    def _answers(self, service: str) -> bool:
        try:
            return httpx.get(f"{self.url(service)}/healthz", timeout=PROBE_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait_until_answering(self, service: str, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ShopError(f"{service} exited with code {proc.returncode} while starting. Last lines of "
                                f"{self._log_file(service)}:\n{tail(self._log_file(service))}")
            if self._answers(service):
                return
            time.sleep(0.2)
        raise ShopError(f"{service} did not answer on {self.url(service)} within {START_TIMEOUT_S:.0f} s; "
                        f"see {self._log_file(service)}")

    # ------------------------------------------------------------------ load

    def load(self, users: int, rate: float, seconds: float) -> LoadResult:
        """Run Locust headless against the frontend for `seconds`: `users` shoppers making `rate`
        requests a second between them. Its log goes to DATA_DIR/logs/shop-locust.log."""
        if users < 1 or not rate > 0 or not seconds > 0:
            raise ShopError(f"a load needs at least 1 user, a rate and a length above 0; got users={users}, "
                            f"rate={rate:g}, seconds={seconds:g}")
        self.dir.mkdir(parents=True, exist_ok=True)
        stats = self.dir / "locust-stats.json"
        stats.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
               "-u", str(users), "-r", str(users), "--user-rate", str(rate / users), "--host", self.url(FRONTEND),
               "--run-time", f"{seconds:g}s", "--json-file", str(stats.with_suffix("")),
               "--exit-code-on-error", "0"]
        log_file = self._log_file("locust")
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as out:
            # Run from DATA_DIR/shop, so no locust.conf or pyproject.toml of the working folder applies.
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  cwd=self.dir, timeout=seconds + LOAD_GRACE_S)
        if done.returncode != 0 or not stats.exists():
            raise ShopError(f"locust exited with code {done.returncode}. Last lines of {log_file}:\n{tail(log_file)}")
        return _load_result(json.loads(stats.read_text()))


def _load_result(entries: list[dict]) -> LoadResult:
    """Locust's final stats (its --json-file: one entry per request name) as a LoadResult."""
    result = LoadResult()
    for entry in entries:
        result.requests[entry["name"]] = entry["num_requests"]
        result.failures[entry["name"]] = entry["num_failures"]
    return result

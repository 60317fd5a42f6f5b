"""The soak (issue 26): the whole lab for half an hour at 1,000 events/s while a seeded fault schedule
hits it; at the end every acknowledged event must be counted once and every injected fault found.

The lab: `obslab demo` (broker, the lab's Spark server, generator, stream, detector, narrator,
dashboard, under the demo's Supervisor) and `obslab airflow start` with its three DAGs unpaused, in a
DATA_DIR on a tmpfs this script mounts (so the data folder's disk can be filled), on free ports. The
narrator talks to a stand-in Ollama server of this process (bench/soak_ollama.py), so its backend can
hang. The generator's scenario is written here: one injected fault every 5 minutes (soak_plan.py).

Faults (soak_plan.FAULTS, each once, seeded order and moments, never two at once): SIGKILL of the
stream, detector, narrator, generator, dashboard and an Airflow task's notebook kernel (a
data_quality_dag run is triggered for it); the broker stopped and started 30 s later; the store held
for writing by another process for 2 minutes; the tmpfs filled for a minute; the narrator's backend
accepting and never answering for a minute.

The operator: a stage the demo's Supervisor does not restart (the generator, or one it gave up on), or
that nobody restarts (one this script restarted before), is restarted by this script, logged. A
restarted generator runs the rest of the scenario (its faults not begun yet, moved to its start) with
a new seed, no history and no lead-in.

Measured: every SAMPLE_S, freshness (now minus the newest stored window end) and which stage runs
with which pid; memory (PSS summed over every process whose environment has this DATA_DIR, by
bench_lab_memory.Sampler); after each fault its recovery (freshness back under --fresh-bound and the
killed stage running again; for the kernel, its DAG run succeeding). At the end the generator is
stopped, the stream drains, and the broker's end offsets of raw_events (what it acknowledged) are
compared with the store's counts (sum of request_count + dead letters); the store's injected faults
are matched to incidents by obslab.evaluation's in-time rule.

    sudo-free as root: .venv/bin/python bench/soak.py [--minutes 30] [--seed 26] [--rate 1000]
        [--faults kill:stream,store_lock,...] [--out bench/results] [--plot docs/reliability-memory.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lab_memory import Sampler  # noqa: E402
from common import free_port, isolated_settings, machine  # noqa: E402
from soak_ollama import MODEL, StandInOllama  # noqa: E402
from soak_plan import FAULTS, SETTLE_S, TAIL_S, WARMUP_S, Fault, continued_scenario, count_check, fault_schedule, \
    generator_deaths, recovery_seconds, soak_scenario  # noqa: E402

from obslab import demo  # noqa: E402
from obslab.broker import LocalBroker, end_offsets  # noqa: E402
from obslab.schedule import server  # noqa: E402
from obslab.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_S = 5.0  # freshness, stage pids and the operator's look, this often
MEMORY_SAMPLE_S = 5.0
TMPFS_SIZE = "6g"  # DATA_DIR's tmpfs: 30 min at 1,000 events/s keep ~1.5 GB in Kafka
DAGS = ("obslab_pipeline", "monitoring_dag", "data_quality_dag")
KERNEL_DAG = "data_quality_dag"  # triggered for the kernel kill: it runs 6-hourly, so a run is ours to watch
OPERATOR_GRACE_S = 10.0  # a stage seen dead this long, that nobody restarts, is restarted by the operator
OPERATOR_MAX_RESTARTS = 20  # per stage: one that dies at once each time has a cause to report, not to retry
DRAIN_S = 300.0
HANG_WAIT_S = 420.0  # the hanging backend waits this long for the narrator's first request  # at the end, how long the stream may take to consume what the broker holds


class EventLog:
    """The soak's log: one JSON object a line, each with its wall time; echoed to stderr."""

    def __init__(self, path: Path):
        self.path, self.lock = path, threading.Lock()
        self.events: list[dict] = []

    def __call__(self, event: str, **fields) -> dict:
        row = {"t": round(time.time(), 3), "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "event": event, **fields}
        with self.lock:
            self.events.append(row)
            with self.path.open("a") as out:
                out.write(json.dumps(row, default=str) + "\n")
        print(f"{row['at']} {event} {json.dumps(fields, default=str)[:200]}", file=sys.stderr, flush=True)
        return row


class _Every(threading.Event):
    """An Event whose timed waits last `seconds`: Sampler's loop (1 s) paced to MEMORY_SAMPLE_S."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def wait(self, timeout=None):
        return super().wait(self.seconds if timeout is not None else None)


class _Timed(list):
    """Sampler's samples, each appended with its time.time() in `times`."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def append(self, item) -> None:
        self.times.append(time.time())
        super().append(item)


def memory_sampler(data: Path) -> Sampler:
    sampler = Sampler(data)
    sampler.samples, sampler._stop = _Timed(), _Every(MEMORY_SAMPLE_S)
    return sampler


class Soak:
    """One soak run: the lab on a tmpfs, the fault schedule, the samples, the end counts."""

    def __init__(self, args):
        self.args, self.began = args, 0.0
        self.stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M")
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = EventLog(self.out / f"soak-{self.stamp}-events.jsonl")
        self.keep = Path(tempfile.mkdtemp(prefix="obslab-soak-kept-"))  # logs and store copy, off the tmpfs
        self.mount = Path(tempfile.mkdtemp(prefix="obslab-soak-"))
        self.data = self.mount / "data"
        self.samples: list[dict] = []
        self.faults: list[dict] = []  # each scheduled fault with what happened
        self.operator: list[dict] = []
        self.generator_runs: list[dict] = []  # {"pid", "launched", "scenario_zero"} of each generator run
        self.in_fault: set[str] = set()  # targets under a fault now (the operator leaves them alone)
        self.seen_dead: dict[str, tuple[int, float]] = {}  # stage -> (its dead pid, when first seen dead)
        self.given_up: set[str] = set()
        self.watchers: list[threading.Thread] = []  # of the kernel's DAG run, after the kill
        self.helpers: list[subprocess.Popen] = []  # the store's holder: killed at the end if still there
        self.ollama_port = free_port()
        self.scenario = soak_scenario(args.minutes * 60 + 900)

    # ------------------------------------------------------------------ the lab
    def start_lab(self) -> None:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.args.tmpfs}", "tmpfs", str(self.mount)], check=True)
        self.log("mounted", path=str(self.mount), size=self.args.tmpfs)
        self.data.mkdir()
        scenario_path = self.data / "soak-scenario.yaml"
        scenario_path.write_text(yaml.safe_dump(self.scenario, sort_keys=False))
        self.settings = isolated_settings(self.data, spark_connect_port=free_port(), airflow_port=free_port(),
                                          events_per_second=self.args.rate, scenario=str(scenario_path),
                                          seed=self.args.seed, narrator_backend="ollama",
                                          ollama_host=f"http://127.0.0.1:{self.ollama_port}", ollama_model=MODEL)
        # The lab's settings as environment: what the demo, Airflow and a stage the operator restarts run with.
        self.lab_env = {**server.environment(self.settings), "DUCKDB_PATH": ""}
        self.lab_env.pop("AIRFLOW_HOME")
        self.lab_env.pop("AIRFLOW_CONFIG")
        env = self.env = {**os.environ, **self.lab_env}
        self.dashboard_port = free_port()
        self.demo_out = (self.keep / "demo.out").open("w")
        self.demo = subprocess.Popen([sys.executable, "-m", "obslab.cli", "demo", "--port", str(self.dashboard_port),
                                      "--minutes", str(self.args.minutes + 20), "--backfill-minutes", "10"],
                                     env=env, stdout=self.demo_out, stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=ROOT)
        self.log("demo started", pid=self.demo.pid, dashboard_port=self.dashboard_port,
                 kafka=self.settings.kafka_bootstrap_servers, spark_port=self.settings.spark_connect_port)
        deadline = time.monotonic() + 300
        while not all(self.pid(name) for name in demo.PROCESSES):
            if time.monotonic() > deadline or self.demo.poll() is not None:
                raise RuntimeError(f"the demo did not start its processes; see {self.keep / 'demo.out'}")
            time.sleep(1)
        self.generator_runs.append(self._generator_run(self.pid("generate"), self.settings.demo_lead_in_seconds))
        done = subprocess.run([sys.executable, "-m", "obslab.cli", "airflow", "start"], env=env,
                              capture_output=True, text=True, timeout=600, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"obslab airflow start failed: {done.stdout[-500:]} {done.stderr[-500:]}")
        from bench_airflow import Api

        self.api = Api(self.settings)
        for dag in DAGS:
            self.api.call("PATCH", f"/dags/{dag}", {"is_paused": False})
        self.log("airflow started", port=self.settings.airflow_port, unpaused=list(DAGS))

    def _generator_run(self, pid: int, lead_in_s: float) -> dict:
        launched = psutil.Process(pid).create_time()
        return {"pid": pid, "launched": launched, "scenario_zero": launched - lead_in_s}

    def pid(self, name: str) -> int | None:
        """The running pid of a demo stage, from its run record; None when it does not run."""
        for info in demo.status(self.settings, (name,)):
            return info.pid if info.running else None
        return None

    # ------------------------------------------------------------------ samples and the operator
    def freshness(self) -> float | None:
        try:
            rows = Store(self.settings.duckdb_path, lock_timeout_s=2.0).query(
                "SELECT max(window_end) FROM service_metrics")
        except Exception:  # noqa: BLE001 - busy, locked, disk full: no sample this time
            return None
        newest = rows[0][0] if rows else None
        if newest is None:
            return None
        newest = newest if newest.tzinfo else newest.replace(tzinfo=timezone.utc)
        return round(time.time() - newest.timestamp(), 1)

    def sample(self) -> None:
        pids = {name: self.pid(name) for name in demo.PROCESSES}
        self.samples.append({"t": time.time(), "freshness_s": self.freshness(), "pids": pids,
                             "broker": LocalBroker(self.settings).pid()})

    def operate(self) -> None:
        """Restart what nobody else will, as an operator would; a target under a fault is left alone."""
        if "broker" not in self.in_fault and LocalBroker(self.settings).pid() is None:
            self.operator.append(self.log("operator restarts broker", why="not running"))
            try:
                LocalBroker(self.settings).start()
            except Exception as err:  # noqa: BLE001 - tried again at the next look
                self.log("broker start failed", error=f"{type(err).__name__}: {err}"[:300])
        for info in demo.status(self.settings, demo.PROCESSES):
            if info.running or info.name in self.in_fault or info.state in ("restarting", "finished", "stopped"):
                self.seen_dead.pop(info.name, None)
                continue
            # Maybe the Supervisor has not seen it yet, or it died at once again: wait, longer each time.
            done = sum(1 for r in self.operator if r.get("stage") == info.name)
            first = self.seen_dead.setdefault(info.name, (info.pid, time.time()))
            if first[0] != info.pid:
                self.seen_dead[info.name] = (info.pid, time.time())
                continue
            if time.time() - first[1] < min(OPERATOR_GRACE_S * 2 ** done, 60.0) and info.state == "exited":
                continue
            self.seen_dead.pop(info.name, None)
            if done >= OPERATOR_MAX_RESTARTS:
                if info.name not in self.given_up:
                    self.given_up.add(info.name)
                    self.log("operator gives up", stage=info.name, restarts=OPERATOR_MAX_RESTARTS)
                continue
            self.restart(info)

    def restart(self, info) -> None:
        record = json.loads((demo.run_dir(self.settings) / f"{info.name}.json").read_text())
        env = dict(record.get("env") or {})
        if info.name == "generate":
            elapsed = time.time() - self.generator_runs[-1]["scenario_zero"]
            path = self.data / f"soak-scenario-{len(self.generator_runs)}.yaml"
            rest = continued_scenario(self.scenario, elapsed, f"soak-{len(self.generator_runs)}")
            path.write_text(yaml.safe_dump(rest, sort_keys=False))
            env.update({"SCENARIO": str(path), "BACKFILL_MINUTES": "0", "GENERATE_LEAD_IN_SECONDS": "0",
                        "SEED": str(self.args.seed + len(self.generator_runs))})
            self.scenario = rest
        new = demo.spawn(self.settings, info.name, record["command"], {**self.lab_env, **env}, record.get("restarts", 0),
                         record.get("last_exit"), record.get("max_restarts", demo.MAX_RESTARTS))
        if info.name == "generate":
            self.generator_runs.append(self._generator_run(new.pid, 0.0))
        self.operator.append(self.log("operator restarts", stage=info.name, state=info.state, old_pid=info.pid,
                                      new_pid=new.pid, **({"seed": env["SEED"]} if info.name == "generate" else {})))

    # ------------------------------------------------------------------ faults
    def inject(self, fault: Fault) -> None:
        row = {**fault.as_dict(), "began": time.time()}
        self.faults.append(row)
        try:
            if fault.kind.startswith("kill:") and fault.kind != "kill:kernel":
                stage = FAULTS[fault.kind][0]
                pid = self.pid(stage)
                row["old_pid"] = pid
                if pid:
                    os.kill(pid, signal.SIGKILL)
                self.log("fault", kind=fault.kind, pid=pid)
            elif fault.kind == "kill:kernel":
                self.kill_kernel(row)
            elif fault.kind == "broker_restart":
                self.in_fault.add("broker")
                self.log("fault", kind=fault.kind, action="broker stop", said=LocalBroker(self.settings).stop())
                time.sleep(fault.duration_s)
                status = LocalBroker(self.settings).start()
                self.in_fault.discard("broker")
                self.log("fault end", kind=fault.kind, action="broker start", said=status.message)
            elif fault.kind == "store_lock":
                self.hold_store(row, fault.duration_s)
            elif fault.kind == "disk_full":
                self.fill_disk(row, fault.duration_s)
            elif fault.kind == "backend_hang":
                self.ollama.hang.set()
                self.log("fault", kind=fault.kind, action="stand-in Ollama hangs")
                # The narrator asks only when an incident is new or changed: the minute is counted from the
                # first request the hang holds (waiting for one at most HANG_WAIT_S).
                deadline = time.monotonic() + HANG_WAIT_S
                while self.ollama.held == 0 and time.monotonic() < deadline:
                    time.sleep(1)
                row["first_held_after_s"] = round(time.time() - row["began"], 1) if self.ollama.held else None
                self.log("fault", kind=fault.kind, action="first request held" if self.ollama.held else
                         f"no request in {HANG_WAIT_S:.0f} s")
                time.sleep(fault.duration_s)
                self.ollama.hang.clear()
                self.log("fault end", kind=fault.kind, held_requests=self.ollama.held)
                row["held_requests"] = self.ollama.held
        except Exception as err:  # noqa: BLE001 - a fault that could not be injected is reported, not fatal
            row["error"] = f"{type(err).__name__}: {err}"
            self.log("fault failed", kind=fault.kind, error=row["error"], trace=traceback.format_exc()[-600:])
        row["ended"] = time.time()

    def kill_kernel(self, row: dict) -> None:
        run = self.api.call("POST", f"/dags/{KERNEL_DAG}/dagRuns", {"logical_date": None})
        row["dag_run"] = run["dag_run_id"]
        self.log("fault", kind="kill:kernel", action="triggered", dag=KERNEL_DAG, run=run["dag_run_id"])
        deadline = time.monotonic() + 300
        kernel = None
        while kernel is None and time.monotonic() < deadline:
            for proc in psutil.process_iter(["cmdline"]):
                try:
                    env = proc.environ()
                    if "ipykernel" in " ".join(proc.info["cmdline"] or ()) and env.get("DATA_DIR") == str(self.data) \
                            and env.get("AIRFLOW_CTX_DAG_ID", KERNEL_DAG) == KERNEL_DAG:
                        kernel = proc
                        break
                except psutil.Error:
                    continue
            time.sleep(0.2)
        if kernel is None:
            raise RuntimeError(f"no notebook kernel of {KERNEL_DAG} appeared within 300 s")
        row["old_pid"] = kernel.pid
        row["began"] = time.time()
        kernel.kill()
        self.log("fault", kind="kill:kernel", pid=kernel.pid)
        watcher = threading.Thread(target=self.watch_run, args=(row, run["dag_run_id"]), daemon=True)
        watcher.start()
        self.watchers.append(watcher)

    def watch_run(self, row: dict, run_id: str) -> None:
        """Wait for the killed kernel's DAG run to end (its task retried), at most 15 minutes."""
        deadline = time.monotonic() + 900
        run = {"dag_run_id": run_id}
        while time.monotonic() < deadline:
            state = self.api.call("GET", f"/dags/{KERNEL_DAG}/dagRuns/{run['dag_run_id']}")["state"]
            if state in ("success", "failed"):
                row["dag_run_state"], row["recovered_at"] = state, time.time()
                self.log("kernel's dag run ended", state=state, run=run["dag_run_id"])
                return
            time.sleep(5)

    def hold_store(self, row: dict, seconds: float) -> None:
        holder = subprocess.Popen([sys.executable, "-c", (
            "import duckdb, sys, time\n"
            "deadline = time.monotonic() + 120\n"
            "while True:\n"
            "    try:\n"
            f"        con = duckdb.connect({str(self.settings.duckdb_path)!r}); break\n"
            "    except duckdb.IOException:\n"
            "        if time.monotonic() > deadline: raise\n"
            "        time.sleep(0.05)\n"
            "print('held', flush=True)\n"
            f"time.sleep({seconds})\n"
            "con.close()\n")], stdout=subprocess.PIPE, text=True, start_new_session=True)
        row["holder_pid"] = holder.pid
        self.helpers.append(holder)
        line = holder.stdout.readline().strip()
        row["began"] = time.time()
        self.log("fault", kind="store_lock", holder=holder.pid, said=line)
        holder.wait(timeout=seconds + 180)
        self.log("fault end", kind="store_lock", code=holder.returncode)

    def fill_disk(self, row: dict, seconds: float) -> None:
        filler = self.mount / "filler.bin"
        # The broker stops when its log folder fails (Kafka's own rule): the operator waits for space to start it.
        self.in_fault.update(("broker", "disk"))
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        filled = 0
        try:
            for chunk in (64 * 2**20, 2**20, 4096):  # allocate until nothing is left, coarse then fine
                while True:
                    try:
                        os.posix_fallocate(fd, filled, chunk)
                    except OSError:
                        break
                    filled += chunk
            free = os.statvfs(self.mount).f_bavail * os.statvfs(self.mount).f_frsize
            row["filled_bytes"], row["began"] = filled, time.time()
            self.log("fault", kind="disk_full", filled_bytes=filled, free_after=free)
            time.sleep(seconds)
        finally:
            os.close(fd)
            filler.unlink()
            self.in_fault.difference_update(("broker", "disk"))
        self.log("fault end", kind="disk_full")

    # ------------------------------------------------------------------ the end
    def drain_and_count(self) -> dict:
        pid = self.pid("generate")
        if pid:
            os.kill(pid, signal.SIGTERM)  # a clean end: the producer flushes what it has
            self.log("generator stopped", pid=pid)
        deadline = time.monotonic() + 60
        while self.pid("generate") and time.monotonic() < deadline:
            time.sleep(1)
        acked = end_offsets(self.settings, [self.settings.topic_raw_events]).get(self.settings.topic_raw_events, {})
        self.log("acknowledged", end_offsets=acked)
        deadline = time.monotonic() + DRAIN_S
        consumed: dict = {}
        while time.monotonic() < deadline:
            try:
                consumed = dict(Store(self.settings.duckdb_path, lock_timeout_s=5).query(
                    "SELECT kafka_partition, next_offset FROM stream_offsets WHERE topic = ?",
                    [self.settings.topic_raw_events]))
            except Exception:  # noqa: BLE001 - busy: ask again
                consumed = consumed
            if consumed == acked:
                break
            time.sleep(5)
        self.log("drained" if consumed == acked else "not drained", consumed=consumed)
        time.sleep(2 * SAMPLE_S)  # let the stream's last transaction settle before counting
        store = Store(self.settings.duckdb_path, lock_timeout_s=60)
        requests = store.query("SELECT coalesce(sum(request_count), 0) FROM service_metrics")[0][0]
        dead = store.query("SELECT count(*) FROM dead_letter_events WHERE topic = ?",
                           [self.settings.topic_raw_events])[0][0]
        reasons = dict(store.query("SELECT reason, count(*) FROM dead_letter_events GROUP BY reason"))
        check = count_check(sum(acked.values()), int(requests), int(dead))
        check.update({"end_offsets": acked, "consumed_offsets": consumed, "offsets_ok": consumed == acked,
                      "dead_letter_reasons": reasons})
        self.log("counts", **check)
        return check

    def dag_runs(self) -> dict:
        out = {}
        for dag in DAGS:
            try:
                runs = self.api.call("GET", f"/dags/{dag}/dagRuns?limit=100")["dag_runs"]
            except Exception as err:  # noqa: BLE001
                out[dag] = {"error": str(err)}
                continue
            states: dict[str, int] = {}
            for r in runs:
                states[r["state"]] = states.get(r["state"], 0) + 1
            out[dag] = states
        return out

    def stop_lab(self) -> None:
        subprocess.run([sys.executable, "-m", "obslab.cli", "airflow", "stop"], env=self.env, capture_output=True,
                       timeout=300, cwd=ROOT)
        if self.demo.poll() is None:
            self.demo.send_signal(signal.SIGINT)
            try:
                self.demo.wait(timeout=300)
            except subprocess.TimeoutExpired:
                self.demo.kill()
        demo.stop(self.settings, grace_s=10)  # a stage the operator restarted is the demo's no longer
        for helper in self.helpers:
            if helper.poll() is None:
                helper.kill()
                helper.wait()
        left = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("DATA_DIR") == str(self.data) and proc.pid != os.getpid():
                    left.append(proc)
            except psutil.Error:
                continue
        for proc in left:  # every process left with this DATA_DIR is one this soak started
            proc.kill()
        self.log("lab stopped", killed_leftovers=[p.pid for p in left])

    def unmount(self) -> None:
        if self.data.exists():
            shutil.copytree(self.data / "logs", self.keep / "logs", dirs_exist_ok=True)
            if self.settings.duckdb_path.exists():
                shutil.copy2(self.settings.duckdb_path, self.keep / "observability.duckdb")
        for _ in range(10):
            if subprocess.run(["umount", str(self.mount)]).returncode == 0:
                break
            time.sleep(3)
        else:  # still busy: detached now, freed when its last user ends
            subprocess.run(["umount", "-l", str(self.mount)])
        try:
            self.mount.rmdir()
        except OSError as err:
            self.log("mount point left", path=str(self.mount), error=str(err))
        self.log("unmounted", path=str(self.mount), kept=str(self.keep))

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        schedule = fault_schedule(self.args.seed, self.args.minutes * 60,
                                  self.args.faults.split(",") if self.args.faults else None,
                                  self.args.warmup, self.args.tail, self.args.settle)
        self.log("schedule", seed=self.args.seed, faults=[f.as_dict() for f in schedule])
        result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                                 text=True, cwd=ROOT).stdout.strip(),
                        "load_before": os.getloadavg(), "args": vars(self.args)}
        threads = []
        with StandInOllama(self.ollama_port) as self.ollama, memory_sampler(self.data) as memory:
            try:
                self.start_lab()
                self.began = time.time()
                self.log("soak began", minutes=self.args.minutes)
                pending = list(schedule)
                while time.time() - self.began < self.args.minutes * 60:
                    try:
                        self.sample()
                        if "disk" not in self.in_fault:  # an operator frees space before restarting anything
                            self.operate()
                    except Exception as err:  # noqa: BLE001 - the operator's own tools fail too: say so, go on
                        self.log("operator step failed", error=f"{type(err).__name__}: {err}"[:300],
                                 trace=traceback.format_exc()[-800:])
                    # Never two faults at once: one that ran long (a slow broker start) delays the next.
                    idle = not threads or (not threads[-1].is_alive() and
                                           time.time() - self.faults[-1]["ended"] >= self.args.settle)
                    if pending and idle and time.time() - self.began >= pending[0].at_s:
                        fault = pending.pop(0)
                        t = threading.Thread(target=self.inject, args=(fault,), daemon=True)
                        t.start()
                        threads.append(t)
                    time.sleep(SAMPLE_S)
                for fault in pending:
                    self.log("fault not injected", kind=fault.kind, why="the soak ended before its turn")
                for t in [*threads, *self.watchers]:
                    t.join(timeout=900)
                result["counts"] = self.drain_and_count()
                result["dag_runs"] = self.dag_runs()
            except Exception as err:  # noqa: BLE001 - the lab is stopped and the partial result kept
                result["error"] = f"{type(err).__name__}: {err}"
                self.log("soak failed", error=result["error"], trace=traceback.format_exc()[-1500:])
            finally:
                self.stop_lab()
                result["load_after"] = os.getloadavg()
                self.unmount()
        result.update(self.summarise(memory))
        return result

    def summarise(self, memory) -> dict:
        bound = self.args.fresh_bound
        for row in self.faults:
            stage = FAULTS[row["kind"]][0] if row["kind"].startswith("kill:") and row["kind"] != "kill:kernel" \
                else None
            since = row["began"] if stage else row.get("ended", row["began"])
            if row["kind"] == "kill:kernel":
                row["recovery_s"] = round(row["recovered_at"] - row["began"], 1) if "recovered_at" in row else None
            else:
                row["recovery_s"] = recovery_seconds(self.samples, since, bound, stage, row.get("old_pid"))
        fresh = [s["freshness_s"] for s in self.samples if s["freshness_s"] is not None]
        mib = [(t, sum(v[1] for v in parts.values()) / 2**20) for t, parts in zip(memory.samples.times, memory.samples)]
        log = self.keep / "logs" / "generate.log"
        reports = [line.strip() for line in (log.read_text(errors="replace").replace("\r", "\n").splitlines()
                                             if log.exists() else []) if "events acknowledged in" in line]
        return {"began": self.began, "fresh_bound_s": bound, "generator_reports": reports, "faults": self.faults, "operator": self.operator,
                "generator_runs": self.generator_runs, "incidents": self._incidents_or_error(),
                "freshness": {"samples": len(self.samples), "unreadable": len(self.samples) - len(fresh),
                              "median_s": sorted(fresh)[len(fresh) // 2] if fresh else None,
                              "max_s": max(fresh) if fresh else None},
                "memory": {"samples": len(mib), "peak_pss_mib": round(max((m for _, m in mib), default=0)),
                           "first_pss_mib": round(mib[0][1]) if mib else None,
                           "last_pss_mib": round(mib[-1][1]) if mib else None,
                           "series": [[round(t - self.began, 1), round(m)] for t, m in mib]},
                "samples": [{**s, "t": round(s["t"] - self.began, 1)} for s in self.samples],
                "kept": str(self.keep)}

    def _incidents_or_error(self) -> dict:
        try:
            return self.incidents()
        except Exception as err:  # noqa: BLE001 - the rest of the result is kept; the store copy too
            return {"error": f"{type(err).__name__}: {err}", "store_copy": str(self.keep / "observability.duckdb")}

    def incidents(self) -> dict:
        """The store's injected faults matched to incidents (obslab.evaluation's in-time rule), on a copy: a
        fault whose generator was killed has no end; it ends, for the match, when its generator died."""
        from obslab.evaluation.matching import match_incidents

        copy = self.keep / "observability.duckdb"
        if not copy.exists():
            return {"error": "no store copy"}
        store = Store(copy)
        deaths = generator_deaths(self.samples)
        for run_id, fault_id, start in store.query(
                "SELECT run_id, fault_id, start_time FROM injected_incidents WHERE end_time IS NULL"):
            start = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
            end = min((d for d in deaths if d > start.timestamp()), default=time.time())
            store.execute("UPDATE injected_incidents SET end_time = ? WHERE run_id = ? AND fault_id = ?",
                          [datetime.fromtimestamp(end, timezone.utc), run_id, fault_id])
        faults, incidents, _, _ = match_incidents(store)
        narratives = {f"{b} ({why or 'no fallback'})": n for b, why, n in store.query(
            "SELECT backend, split_part(fallback_reason, ':', 1), count(*) FROM incident_summaries GROUP BY ALL ORDER BY ALL")}
        rows = [{"fault_id": f.fault_id, "type": f.type, "service": f.service, "start": f.start.isoformat(),
                 "end": f.end.isoformat(), "outcome": f.outcome, "ttd_s": f.ttd_seconds, "late_s": f.late_seconds}
                for f in faults]
        return {"faults": rows, "found_in_time": sum(1 for f in faults if f.detected), "total": len(faults),
                "incidents": len(incidents), "narratives": narratives}


def table(result: dict) -> str:
    lines = [f"{'fault':<16} {'at (s)':>7} {'lasts':>5} {'recovery (s)':>12}  notes"]
    for f in result.get("faults", []):
        began = f["began"] - result["began"]
        notes = f.get("error") or f.get("dag_run_state") or (f"held {f['held_requests']} requests"
                                                             if "held_requests" in f else "")
        rec = "never" if f.get("recovery_s") is None else f"{f['recovery_s']:.0f}"
        lines.append(f"{f['kind']:<16} {began:>7.0f} {f['duration_s']:>5.0f} {rec:>12}  {notes}")
    c = result.get("counts", {})
    if c:
        lines.append(f"acknowledged {c['acknowledged']:,}  counted {c['counted']:,} ({c['requests']:,} in windows + "
                     f"{c['dead_letters']:,} dead letters)  lost {c['lost']:,}  double {c['double']:,}  "
                     f"offsets consumed == acknowledged: {c['offsets_ok']}")
    i = result.get("incidents", {})
    if "total" in i:
        lines.append(f"injected faults found in time: {i['found_in_time']} of {i['total']}  " +
                     ", ".join(f"{f['type']}/{f['service']}: {f['outcome']}" for f in i["faults"]))
    m = result.get("memory", {})
    lines.append(f"memory (PSS sum): first {m.get('first_pss_mib')} MiB, peak {m.get('peak_pss_mib')} MiB, "
                 f"last {m.get('last_pss_mib')} MiB; operator restarts: {len(result.get('operator', []))}")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Memory (PSS sum) and freshness over the soak, each fault a labelled rule."""
    import altair as alt
    import pandas as pd

    mem = pd.DataFrame(result["memory"]["series"], columns=["seconds", "pss_mib"])
    mem["minute"] = mem["seconds"] / 60
    fresh = pd.DataFrame([(s["t"] / 60, s["freshness_s"]) for s in result["samples"] if s["freshness_s"] is not None],
                         columns=["minute", "freshness_s"])
    faults = pd.DataFrame([((f["began"] - result["began"]) / 60, f["kind"]) for f in result["faults"]],
                          columns=["minute", "fault"])
    rules = alt.Chart(faults).mark_rule(color="firebrick", strokeDash=[4, 3]).encode(x="minute:Q")
    labels = alt.Chart(faults).mark_text(angle=270, align="left", dx=4, dy=-4, fontSize=9, color="firebrick").encode(
        x="minute:Q", y=alt.value(4), text="fault:N")
    top = alt.Chart(mem).mark_line().encode(x=alt.X("minute:Q", title="minutes since the soak began"),
                                            y=alt.Y("pss_mib:Q", title="PSS sum of the lab (MiB)"))
    bottom = alt.Chart(fresh).mark_line(color="seagreen").encode(
        x=alt.X("minute:Q", title="minutes since the soak began"),
        y=alt.Y("freshness_s:Q", title="freshness (s)"))
    chart = alt.vconcat((top + rules + labels).properties(width=720, height=260, title="Memory of the whole lab"),
                        (bottom + rules).properties(width=720, height=160, title="Freshness: now - newest window end")
                        ).resolve_scale(x="shared")
    chart.save(str(path), ppi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the lab runs under faults")
    parser.add_argument("--seed", type=int, default=26, help="seed of the fault schedule (and the generator)")
    parser.add_argument("--rate", type=float, default=1000.0, help="generator events per second")
    parser.add_argument("--faults", default="", help=f"comma-separated subset of: {','.join(FAULTS)} (default all)")
    parser.add_argument("--warmup", type=float, default=WARMUP_S, help="no fault in the first this many seconds")
    parser.add_argument("--tail", type=float, default=TAIL_S, help="no fault in the last this many seconds")
    parser.add_argument("--settle", type=float, default=SETTLE_S, help="seconds from one fault's end to the next")
    parser.add_argument("--fresh-bound", type=float, default=60.0,
                        help="recovered: freshness at most this (s); open windows end in the future, so it runs "
                             "from about -60 to +40 s in quiet times")
    parser.add_argument("--tmpfs", default=TMPFS_SIZE, help="size of DATA_DIR's tmpfs")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder of the JSON result and log")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "reliability-memory.png"), help="PNG to write")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the soak mounts a tmpfs: run it as root")
    if args.faults:
        fault_schedule(args.seed, args.minutes * 60, args.faults.split(","), args.warmup, args.tail, args.settle)  # a bad list fails before the lab starts
    soak = Soak(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the lab stops, the tmpfs is unmounted
    result = soak.run()
    path = soak.out / f"soak-{soak.stamp}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    if result.get("memory", {}).get("series"):
        plot(result, Path(args.plot))
    print(table(result))
    print(f"result: {path}   log: {soak.log.path}   plot: {args.plot}   logs and store: {soak.keep}")


if __name__ == "__main__":
    main()

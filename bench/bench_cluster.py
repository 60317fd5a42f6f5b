"""The stream on the local cluster vs on one machine's Spark (issue 26): events/s and events per CPU second.

Two labs, each in a temporary data folder on free ports, hold the same N events (the `mixed` scenario,
seed 42, a fixed start, published at max rate by the real generator):

  local     one broker (`obslab broker start`, replication 1), the stream on SPARK_MASTER=local[2]
  cluster   `obslab cluster start`: three brokers (replication 3, min ISR 2), the stream's driver here and its
            tasks on a standalone master's two workers (1 core each): SPARK_MASTER=spark://...

Each round runs `obslab stream --available-now --json` (a subprocess, SPARK_SERVER=local) once on each lab,
with a fresh checkpoint and a fresh DuckDB file; rounds alternate the labs. events/s = N / the stream's own
seconds (query start to caught up, the Spark start not counted); per core = that / 2 (both give Spark 2 task
slots). CPU seconds of the stream's process tree (driver: Python + JVM), of the workers (with the executors
they ran and reaped) and of the brokers are read with psutil, with the whole machine's busy CPU seconds, so a
run that shared the 2 cores with other work shows it. Every run must count exactly N events.

    .venv/bin/python bench/bench_cluster.py [--events 200000] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
from common import busy_cpu_seconds, isolated_settings, machine  # bench/ is on sys.path

from obslab.broker import LocalBroker
from obslab.cluster import LocalCluster
from obslab.generator.run import RunPlan, generate
from obslab.generator.sinks import kafka_sink
from obslab.settings import Settings, load_settings
from obslab.store import Store

START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
SPARK_SLOTS = 2  # local[2]; two workers with one core each
PINNED = dict(scenario="mixed", seed=42, events_per_second=1000, backfill_minutes=0, generate_lead_in_seconds=0,
              spark_server="local", window_seconds=60, watermark_seconds=120, max_offsets_per_trigger=None,
              kafka_heap="512m")


def preload(s: Settings, n: int) -> None:
    """The same n events into the lab's raw topic (same seed, scenario and start give the same events)."""
    sink = kafka_sink(s)
    try:
        report, _ = generate(RunPlan(max_rate=True, count=n, start=START, store_truth=False), s, sink=sink)
    finally:
        sink.close()
    if report.events_acked != n:
        raise SystemExit(f"preload acknowledged {report.events_acked} of {n} events: {report.first_error}")


class TreeCpu:
    """CPU seconds of a process tree, sampled every 0.2 s (a process that exits keeps its last sample)."""

    def __init__(self, root: int):
        self.root, self.last, self._stop = root, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [psutil.Process(self.root), *psutil.Process(self.root).children(recursive=True)]
            except psutil.Error:
                procs = []
            for proc in procs:
                try:
                    t = proc.cpu_times()
                    self.last[proc.pid] = t.user + t.system
                except psutil.Error:
                    continue
            self._stop.wait(0.2)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.last.values())


def own_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes so far, with the children they reaped (a worker's executors)."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def stream_once(s: Settings, n: int, run: int, daemons: list[int], brokers: list[int]) -> dict:
    """One `obslab stream --available-now` over the n events, fresh checkpoint and store."""
    store_path = s.data_dir / f"run-{run}.duckdb"
    env = {**os.environ, "DATA_DIR": str(s.data_dir), "DUCKDB_PATH": str(store_path), "SPARK_SERVER": "local",
           "SPARK_MASTER": s.spark_master, "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
           "KAFKA_REPLICATION_FACTOR": str(s.kafka_replication_factor), "CHECKPOINT_NAME": f"bench-{run}",
           "TOPIC_RAW_EVENTS": s.topic_raw_events, "TOPIC_AGGREGATED_METRICS": s.topic_aggregated_metrics,
           "WINDOW_SECONDS": "60", "WATERMARK_SECONDS": "120"}
    for name in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "MAX_OFFSETS_PER_TRIGGER"):
        env.pop(name, None)
    daemons0, brokers0, busy0, wall0 = own_cpu(daemons), own_cpu(brokers), busy_cpu_seconds(), time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "obslab.cli", "stream", "--available-now", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    sampler = TreeCpu(proc.pid)
    out, _ = proc.communicate(timeout=1800)
    stream_cpu = sampler.stop()
    time.sleep(3)  # the master ends the application: its executors exit and the workers reap them
    if proc.returncode != 0:
        raise SystemExit(f"the stream failed on {s.spark_master} (exit {proc.returncode})")
    report = json.loads(out.strip().splitlines()[-1])
    counted = Store(store_path).query("SELECT sum(request_count) FROM service_metrics")[0][0]
    if report["events"] != n or counted != n:
        raise SystemExit(f"run {run} on {s.spark_master}: the stream took {report['events']} and counted {counted} "
                         f"of {n} events")
    return {"seconds": report["seconds"], "events_per_s": n / report["seconds"],
            "events_per_s_per_core": n / report["seconds"] / SPARK_SLOTS, "wall_s": time.monotonic() - wall0,
            "cpu_s_stream": stream_cpu, "cpu_s_workers": own_cpu(daemons) - daemons0,
            "cpu_s_brokers": own_cpu(brokers) - brokers0, "cpu_s_machine": busy_cpu_seconds() - busy0}


def summary(runs: list[dict], n: int) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    cpu = med["cpu_s_stream"] + med["cpu_s_workers"] + med["cpu_s_brokers"]
    return {"runs": runs, "median": med, "events_per_cpu_s": n / cpu if cpu else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n = args.events
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the finally: stop every JVM
    with tempfile.TemporaryDirectory(prefix="obslab-bench-cluster-") as tmp:
        local_s = isolated_settings(Path(tmp) / "local", spark_master="local[2]", kafka_replication_factor=1,
                                    **PINNED)
        cluster = LocalCluster(load_settings(data_dir=Path(tmp) / "cluster", kafka_bootstrap_servers="", **PINNED))
        broker = LocalBroker(local_s)
        results: dict[str, list[dict]] = {"local": [], "cluster": []}
        try:
            print(broker.start().message, file=sys.stderr)
            print(cluster.start().message, file=sys.stderr)
            cluster_s = cluster.use_settings()
            for s in (local_s, cluster_s):
                preload(s, n)
            brokers = {"local": [broker.pid()], "cluster": [cluster.pid(f"kafka-{i}") for i in (1, 2, 3)]}
            daemons = {"local": [], "cluster": [cluster.pid(name) for name in ("master", "worker-1", "worker-2")]}
            for run in range(args.runs):
                for name, s in (("local", local_s), ("cluster", cluster_s))[::1 if run % 2 == 0 else -1]:
                    result = stream_once(s, n, run, daemons[name], brokers[name])
                    results[name].append(result)
                    print(f"{name:<8} run {run}: {result['events_per_s']:,.0f} events/s "
                          f"({result['events_per_s_per_core']:,.0f}/core), {result['seconds']:.1f} s; CPU s: stream "
                          f"{result['cpu_s_stream']:.1f}, workers {result['cpu_s_workers']:.1f}, brokers "
                          f"{result['cpu_s_brokers']:.1f}, machine {result['cpu_s_machine']:.1f}", file=sys.stderr)
        finally:
            print(cluster.stop(), file=sys.stderr)
            print(broker.stop(), file=sys.stderr)
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(), "events": n,
           "runs": args.runs, **{name: summary(r, n) for name, r in results.items()}}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name in ("local", "cluster"):
            med = out[name]["median"]
            print(f"{name:<8} median of {args.runs}: {med['events_per_s']:,.0f} events/s, "
                  f"{med['events_per_s_per_core']:,.0f} events/s per core, {out[name]['events_per_cpu_s']:,.0f} events "
                  f"per CPU second (stream + workers + brokers)")


if __name__ == "__main__":
    main()

"""The lab's Spark server: its JVM's memory and the stream's time with G1 (Java's default) or the serial
collector (`-XX:+UseSerialGC`, the server's SERVER_JAVA_OPTIONS since 2026-12-06), which sizes the heap near
what is live instead of growing it toward the maximum.

One broker with EVENTS preloaded events (`mixed`, simulated time); for each variant in turn (rounds
alternate): a fresh `SparkServer` (SPARK_DRIVER_MEMORY 1g), two `obslab stream --available-now` clients in a
row on a fresh checkpoint and store (the first counts everything, the second nothing), then 20 s idle; the
server JVM's PSS and RSS sampled every 0.5 s. Reported per run: peak PSS and RSS, the PSS at the end, and the
first client's wall time; per variant the medians.

    .venv/bin/python bench/bench_spark_memory.py [--events 1000000] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_broker, free_port, isolated_settings, machine  # noqa: E402

from obslab.broker import LocalBroker  # noqa: E402
from obslab.generator.run import RunPlan, generate  # noqa: E402
from obslab.lab import Lab  # noqa: E402
from obslab.stream import server as spark_server  # noqa: E402
from obslab.stream.server import SparkServer  # noqa: E402

MIB = 2**20
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
VARIANTS = {"g1": "-XX:+UseG1GC", "serial": "-XX:+UseSerialGC"}  # the server's SERVER_JAVA_OPTIONS


class Sampler:
    def __init__(self, pid: int):
        import psutil

        self.procs = [psutil.Process(pid)]
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            rss = pss = 0
            for proc in [self.procs[0], *self.procs[0].children(recursive=True)]:
                try:
                    if "java" not in proc.name():
                        continue
                    mem = proc.memory_full_info()
                except psutil.Error:
                    continue
                rss, pss = rss + mem.rss, pss + mem.pss
            self.samples.append((rss, pss))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def one(base, variant: str, round_no: int) -> dict:
    data = base.data_dir / f"{variant}-{round_no}"
    settings = base.model_copy(update={"data_dir": data, "duckdb_path": data / "observability.duckdb",
                                       "spark_connect_port": free_port()})
    spark_server.SERVER_JAVA_OPTIONS = VARIANTS[variant]  # the driver is the server's JVM (client mode)
    server = SparkServer(settings)
    server.start(wait=True)
    env = {**os.environ, "DATA_DIR": str(data), "DUCKDB_PATH": str(settings.duckdb_path),
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers, "TOPIC_RAW_EVENTS": settings.topic_raw_events,
           "SPARK_SERVER": server.url}
    times = []
    try:
        with Sampler(server.pid()) as sampler:
            for _ in range(2):
                began = time.monotonic()
                out = subprocess.run([sys.executable, "-m", "obslab.cli", "stream", "--available-now", "--json"],
                                     env=env, capture_output=True, text=True, timeout=1800)
                times.append(round(time.monotonic() - began, 1))
                if out.returncode != 0:
                    raise RuntimeError(out.stderr[-2000:])
                report = json.loads(out.stdout.strip().splitlines()[-1])
                times.append(report["events"])
            time.sleep(20)
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    rss, pss = zip(*sampler.samples)
    return {"variant": variant, "first_client_s": times[0], "events_counted": times[1],
            "second_client_s": times[2], "peak_pss_mib": round(max(pss) / MIB), "peak_rss_mib": round(max(rss) / MIB),
            "end_pss_mib": round(pss[-1] / MIB)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    def make_settings(folder: Path):
        return isolated_settings(folder, scenario="mixed", seed=42, spark_driver_memory="1g")

    runs = []
    with bench_broker(make_settings) as (settings, _broker):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        LocalBroker(settings).ensure_topics()
        lab = Lab(settings)
        generate(RunPlan(max_rate=True, count=args.events, start=START, store_truth=False), settings, sink=lab.events)
        lab.events.close()
        for round_no in range(args.rounds):
            for variant in VARIANTS:
                runs.append(one(settings, variant, round_no))
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    summary = {"date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "machine": machine(),
               "events": args.events, "runs": runs}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        summary[variant] = {key: statistics.median(r[key] for r in mine)
                            for key in ("peak_pss_mib", "peak_rss_mib", "end_pss_mib", "first_client_s")}
    print(json.dumps(summary, indent=None if args.json else 1))


if __name__ == "__main__":
    main()

"""The local broker's memory with its heap starting small (-Xms64m, now) or whole (-Xms = -Xmx, before).

For each variant in turn, in one invocation: a fresh broker (KAFKA_HEAP 512m) in a temporary folder,
the generator publishing EVENTS events at its maximum rate (confluent-kafka), then the broker idle
for 30 s; RSS and PSS of the broker's JVM are sampled every 0.5 s. Reported per variant: the peak and
the last value of each. Rounds alternate the variants.

    .venv/bin/python bench/bench_broker_memory.py [--events 300000] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import isolated_settings, machine  # noqa: E402

from obslab import broker  # noqa: E402
from obslab.broker import LocalBroker  # noqa: E402
from obslab.generator.run import RunPlan, generate  # noqa: E402
from obslab.lab import Lab  # noqa: E402

MIB = 2**20
START = datetime(2026, 1, 1, tzinfo=timezone.utc)  # simulated time: all of it in the past


class Sampler:
    def __init__(self, pid: int):
        import psutil

        self.proc, self.samples, self._stop = psutil.Process(pid), [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            mem = self.proc.memory_full_info()
            self.samples.append((mem.rss, mem.pss))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def one(initial_heap: str, events: int) -> dict:
    broker.INITIAL_HEAP = initial_heap
    data = Path(tempfile.mkdtemp(prefix="obslab-bench-broker-mem-"))
    settings = isolated_settings(data, kafka_heap="512m")
    lab_broker = LocalBroker(settings)
    lab_broker.start()
    try:
        lab_broker.ensure_topics()
        with Sampler(lab_broker.pid()) as sampler:
            began = time.monotonic()
            lab = Lab(settings)
            generate(RunPlan(max_rate=True, count=events, start=START, store_truth=False), settings, sink=lab.events)
            lab.events.close()
            publish_s = time.monotonic() - began
            time.sleep(30)
    finally:
        lab_broker.stop()
        shutil.rmtree(data, ignore_errors=True)
    rss, pss = zip(*sampler.samples)
    return {"initial_heap": initial_heap, "publish_s": round(publish_s, 1), "peak_rss_mib": round(max(rss) / MIB),
            "peak_pss_mib": round(max(pss) / MIB), "last_rss_mib": round(rss[-1] / MIB),
            "last_pss_mib": round(pss[-1] / MIB)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = []
    for _ in range(args.rounds):
        for heap in ("64m", "512m"):
            runs.append(one(heap, args.events))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    summary = {"machine": machine(), "events": args.events, "runs": runs}
    for heap in ("64m", "512m"):
        mine = [r for r in runs if r["initial_heap"] == heap]
        summary[f"median_peak_pss_mib_xms_{heap}"] = statistics.median(r["peak_pss_mib"] for r in mine)
        summary[f"median_peak_rss_mib_xms_{heap}"] = statistics.median(r["peak_rss_mib"] for r in mine)
    print(json.dumps(summary, indent=None if args.json else 1))


if __name__ == "__main__":
    main()

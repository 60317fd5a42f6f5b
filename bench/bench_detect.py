"""Detection quality (issue 5): `obslab evaluate` on the shipped scenarios and several seeds.

For each (scenario, seed) it runs the evaluation twice in the same process and Spark session:

  early        the defaults: open windows are judged once they hold PARTIAL_WINDOW_MIN_REQUESTS
  final-only   the reference: PARTIAL_WINDOW_MIN_REQUESTS=0, only completed windows are judged,
               as the original design did (its rules ran on finished 1-minute windows)

and prints recall, precision, median time to detect (TTD), false incidents, and the TTD ratio
early / final-only. The clean scenario also runs 30 simulated minutes at 10 and 1,000 events/s.
These are quality figures, not timings; the evaluation's own wall time is printed for reference.

    .venv/bin/python bench/bench_detect.py [--seeds 42 7 2026] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generator import machine  # noqa: E402

from obslab.detect.evaluate import evaluate  # noqa: E402
from obslab.settings import load_settings  # noqa: E402
from obslab.stream.session import build_session  # noqa: E402

FAULT_SCENARIOS = ("demo", "workshop", "mixed")
CLEAN_RATES = (10, 1000)


def run(seeds: list[int]) -> dict:
    work = Path(tempfile.mkdtemp(prefix="obslab-bench-detect-"))
    early = load_settings(data_dir=work)
    final_only = early.model_copy(update={"partial_window_min_requests": 0})
    spark = build_session(early, app_name="bench-detect")
    rows = []
    for name in FAULT_SCENARIOS:
        for seed in seeds:
            for variant, settings in (("early", early), ("final-only", final_only)):
                started = time.monotonic()
                r = evaluate(name, settings, seed=seed, spark=spark, keep_store=False)
                rows.append({"scenario": name, "seed": seed, "variant": variant, "events": r.events,
                             "faults": len(r.faults), "recall": r.recall, "precision": r.precision,
                             "median_ttd_seconds": r.median_ttd_seconds, "false_incidents": r.false_incidents,
                             "ttds": [f.ttd_seconds for f in r.faults],
                             "wall_seconds": round(time.monotonic() - started, 1)})
                print(json.dumps(rows[-1]), flush=True)
    for rate in CLEAN_RATES:
        for seed in seeds:
            started = time.monotonic()
            r = evaluate("clean", early, seed=seed, spark=spark, events_per_second=rate, minutes=30, keep_store=False)
            rows.append({"scenario": f"clean@{rate}/s x 30 min", "seed": seed, "variant": "early", "events": r.events,
                         "faults": 0, "recall": r.recall, "precision": r.precision, "median_ttd_seconds": None,
                         "false_incidents": r.false_incidents, "ttds": [],
                         "wall_seconds": round(time.monotonic() - started, 1)})
            print(json.dumps(rows[-1]), flush=True)
    spark.stop()
    return {"date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "machine": machine(), "rows": rows,
            "summary": summary(rows)}


def summary(rows: list[dict]) -> dict:
    out = {}
    for variant in ("early", "final-only"):
        fault_rows = [r for r in rows if r["variant"] == variant and r["faults"]]
        ttds = [t for r in fault_rows for t in r["ttds"] if t is not None]
        faults = sum(r["faults"] for r in fault_rows)
        detected = sum(len([t for t in r["ttds"] if t is not None]) for r in fault_rows)
        out[variant] = {"faults": faults, "detected": detected,
                        "pooled_median_ttd_seconds": statistics.median(ttds) if ttds else None,
                        "false_incidents": sum(r["false_incidents"] for r in rows if r["variant"] == variant)}
    e, f = out["early"]["pooled_median_ttd_seconds"], out["final-only"]["pooled_median_ttd_seconds"]
    out["ttd_ratio_early_to_final_only"] = round(e / f, 3) if e and f else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 2026])
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON at the end")
    args = parser.parse_args()
    result = run(args.seeds)
    print(json.dumps(result if args.json else result["summary"], indent=1))


if __name__ == "__main__":
    main()

"""Traffic drops on synthetic series: how many `baseline_shift` finds, and how often it pages on clean traffic.

A family is a per-minute request series: a mean, a rhythm (amplitude and period in minutes; 0: none),
and an over-dispersion (the coefficient of variation of a gamma multiplier drawn per minute; 0:
Poisson arrivals alone). For each family and seed: one series with a drop of 50-70 % lasting 4
minutes that starts inside a minute (early: 25-50 minutes in, a rhythm seen about once; late:
70-110 minutes in, seen two or more times; trough: a fast, deep rhythm, the drop near one of its
troughs), and one clean 3-hour series. Found: the final windows walked flag a window of the drop.
In time: polled as `obslab detect` sees the series live (a poll at each window's end, the last two
windows open but complete), the first poll that flags the drop comes before its end plus a window,
a trigger and a poll; TTD from the drop's start to that poll plus 10 s. This isolates the traffic
model from Spark and the rest of the pipeline.

    .venv/bin/python bench/bench_traffic.py [--seeds 15] [--reference-lib PATH] [--json]

`--reference-lib`: the `lib` folder of another checkout (e.g. a `git worktree` of an earlier
commit); the same series go through its detector in a second process, for a ratio in the same run.
The families are not the shipped scenarios and the seeds are not the evaluation's: nothing here is
tuned to either.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

FAMILIES = [  # mean per minute, rhythm amplitude, period (min), over-dispersion
    (400, 0.5, 30, 0.15), (130, 0.5, 30, 0.15), (400, 0.3, 45, 0.10), (2000, 0.4, 20, 0.20),
    (100, 0.0, 0, 0.0), (60, 0.5, 30, 0.0), (1000, 0.5, 60, 0.15), (300, 0.2, 0, 0.10),
]
CLEAN_ONLY = [(20, 0.5, 30, 0.0), (50, 0.0, 0, 0.3), (5000, 0.6, 90, 0.05), (200, 0.4, 12, 0.1),
              (800, 0.5, 240, 0.1)]
PHASES = {"early": (25, 50), "late": (70, 110)}
DROP_MINUTES = 4
WATERMARK = 2  # windows still open at a poll (WATERMARK_SECONDS 120 s of 60 s windows)
POLL_MINUTES = 10 / 60  # a trigger and a poll (5 s each) after a window's end
# A drop in the trough of a fast, deep rhythm: a 20-minute cycle swinging +-80 %, 10 % over-dispersion;
# the drop (50-70 %) begins a quarter-cycle either side of the trough, after two cycles or more.
TROUGH_FAMILY = (300, 0.8, 20, 0.10)
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def series(seed: int, minutes: int, family, drop=None):
    from obslab.detect.detectors import Window

    mean, amplitude, period, cv = family
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * math.pi)
    out = []
    for i in range(minutes):
        rate = mean * (1 + amplitude * math.sin(2 * math.pi * (i + 0.5) / period + phase)) if period else mean
        if cv:
            rate *= rng.gamma(1 / cv ** 2, cv ** 2)
        if drop:
            start, length, size = drop
            rate *= 1 - size * max(0.0, min(i + 1, start + length) - max(i, start))
        start_at = T0 + timedelta(minutes=i)
        out.append(Window("svc", None, start_at, start_at + timedelta(minutes=1), int(rng.poisson(rate)), 0,
                          50.0, 90.0, True, 45.0))
    return out


def drops_found(windows) -> list[float]:
    from obslab.detect.detectors import DetectorConfig, baseline_shift

    return [(a.window_start - T0).total_seconds() / 60 for a in baseline_shift(windows, DetectorConfig())
            if a.metric == "request_count"]


def first_poll_finding(windows, start: float, end: float) -> float | None:
    """The time (minutes) of the first poll that raises a drop in a window of [start - 1, end]: a
    poll at each window's end, the last WATERMARK windows still open (complete: their time has
    passed, and their counts are whole here), as `obslab detect` sees them live."""
    from dataclasses import replace

    from obslab.detect.detectors import DetectorConfig, detect_series

    cfg, memory = DetectorConfig(), _memory()
    for k in range(len(windows)):
        view = [w if i < k + 1 - WATERMARK else replace(w, is_final=False) for i, w in enumerate(windows[:k + 1])]
        # the poll comes as window k ends: its time has passed (live, window k + 1 has begun)
        kwargs = {"memory": memory, "elapsed": windows[k].window_end} if memory is not None else {}
        for a in detect_series(view, cfg, ["baseline_shift"], **kwargs):
            at = (a.window_start - T0).total_seconds() / 60
            if a.metric == "request_count" and start - 1 <= at <= end:
                return k + 1
    return None


def _memory():
    """A per-series memory where the detectors take one (the reference may be older: None)."""
    try:
        from obslab.detect.walk import SeriesMemory
    except ImportError:
        return None
    return SeriesMemory()


def score_drops(family, drops: list[tuple[int, float, float]], minutes: int) -> dict:
    """Per family: drops found (any window of it flagged, final windows walked), windows flagged
    outside it, drops found in time as polled, and their times to detect."""
    found = outside = in_time = 0
    ttds = []
    for seed, start, size in drops:
        windows = series(seed, minutes, family, (start, DROP_MINUTES, size))
        at = drops_found(windows)
        inside = [t for t in at if start - 1 <= t <= start + DROP_MINUTES]
        found += bool(inside)
        outside += len(at) - len(inside)
        polled = first_poll_finding(windows, start, start + DROP_MINUTES)
        # in time: raised before the drop's end plus one window, one trigger and one poll
        if polled is not None and polled + POLL_MINUTES < start + DROP_MINUTES + 1 + POLL_MINUTES:
            in_time += 1
            ttds.append(round((polled + POLL_MINUTES - start) * 60, 1))
    return {"found": found, "of": len(drops), "false_windows": outside, "in_time": in_time, "ttd_seconds": ttds}


def trough_start(seed: int, draw: random.Random) -> float:
    """A drop's start a quarter-cycle either side of a trough of TROUGH_FAMILY's rhythm, 50 minutes in or later."""
    period = TROUGH_FAMILY[2]
    phase = np.random.default_rng(seed).uniform(0, 2 * math.pi)  # the series' own first draw
    first = ((1.5 * math.pi - phase) / (2 * math.pi) * period - 0.5) % period
    trough = first + period * math.ceil((50 - first) / period)
    return trough + draw.uniform(-period / 4, period / 4) - DROP_MINUTES / 2


def measure(seeds: int) -> dict:
    out = {"drops": {}, "clean": {}}
    started = time.monotonic()
    for phase, (lo, hi) in PHASES.items():
        for family in FAMILIES:
            drops = []
            for seed in range(2000, 2000 + seeds):
                draw = random.Random(seed)
                drops.append((seed, draw.uniform(lo, hi), draw.uniform(0.5, 0.7)))
            out["drops"][f"{phase} {family}"] = score_drops(family, drops, int(hi) + 10)
    drops = []
    for seed in range(2000, 2000 + seeds):
        draw = random.Random(seed)
        drops.append((seed, trough_start(seed, draw), draw.uniform(0.5, 0.7)))
    out["drops"][f"trough {TROUGH_FAMILY}"] = score_drops(TROUGH_FAMILY, drops, 110)
    for family in FAMILIES + CLEAN_ONLY:
        false = sum(len(drops_found(series(seed, 180, family))) for seed in range(9000, 9000 + seeds))
        out["clean"][str(family)] = {"false_windows": false, "hours": 3 * seeds}
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def totals(result: dict) -> dict:
    t = {}
    for phase in [*PHASES, "trough"]:
        rows = [v for k, v in result["drops"].items() if k.startswith(phase)]
        t[f"{phase}_found"] = sum(r["found"] for r in rows)
        t[f"{phase}_of"] = sum(r["of"] for r in rows)
    t["in_time"] = sum(v.get("in_time", 0) for v in result["drops"].values())
    t["ttd_p50"] = _median([x for v in result["drops"].values() for x in v.get("ttd_seconds", [])])
    t["clean_false_windows"] = sum(v["false_windows"] for v in result["clean"].values())
    t["clean_hours"] = sum(v["hours"] for v in result["clean"].values())
    return t


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=15)
    parser.add_argument("--reference-lib", type=Path, help="lib folder of another checkout, measured in the same run")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:
        print(json.dumps(measure(args.seeds)))
        return
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seeds": args.seeds,
              "this": measure(args.seeds)}
    if args.reference_lib:
        env = dict(os.environ, PYTHONPATH=str(args.reference_lib.resolve()))
        done = subprocess.run([sys.executable, __file__, "--seeds", str(args.seeds), "--measure-only"],
                              env=env, capture_output=True, text=True, check=True)
        result["reference"] = json.loads(done.stdout)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for name in ("this", "reference"):
        if name in result:
            t = totals(result[name])
            print(f"{name}: drops found early {t['early_found']}/{t['early_of']}, late {t['late_found']}/"
                  f"{t['late_of']}, trough {t['trough_found']}/{t['trough_of']}; in time {t['in_time']}, "
                  f"TTD p50 {t['ttd_p50']} s; clean: {t['clean_false_windows']} windows called a drop in "
                  f"{t['clean_hours']} h ({result[name]['seconds']} s)")


if __name__ == "__main__":
    main()

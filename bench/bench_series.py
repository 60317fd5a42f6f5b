"""`obslab detect-series` against the rolling z-score baseline on a labelled corpus of real series,
scored with NAB's standard profile (window_score.py), plus a false-alert budget: alerts per 1,000
points outside every anomaly window. Runtime: the median over --runs of each detector's time over
the whole corpus (reading the files included), and its ratio to the baseline's.

    .venv/bin/python bench/bench_series.py CORPUS/data [--runs 3] [--half dev|held-out|all] [--json OUT]

CORPUS: see series_corpus.py and BENCHMARKS.md ("Real series") for where to get it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from obslab.detect.series import detect_csv
from series_corpus import TIME_COL, VALUE_COL, LabelledFile, corpus_files, zscore_alerts
from window_score import FileScore, label_runs, normalised, score_file, windows_for

Z = 5.0  # detect-series' default --z


def series_alerts(f: LabelledFile) -> list[int]:
    """Row indices of detect-series' alerts (one per episode, at its start)."""
    result = detect_csv(f.path, TIME_COL, VALUE_COL, Z)
    row_of: dict[str, int] = {}
    for i, text in enumerate(pd.read_csv(f.path, dtype=str)[TIME_COL].str.strip()):
        row_of.setdefault(text, i)
    return [row_of[a["time"]] for a in result.alerts()]


def baseline_alerts(f: LabelledFile) -> list[int]:
    frame = pd.read_csv(f.path)
    values = pd.to_numeric(frame[VALUE_COL], errors="coerce").to_numpy(float)
    return zscore_alerts(pd.DatetimeIndex(pd.to_datetime(frame[TIME_COL], utc=True)), values)


DETECTORS = {"zscore": baseline_alerts, "detect-series": series_alerts}


def run_once(files: list[LabelledFile]) -> tuple[dict, dict]:
    """(per detector and file: score; per detector: seconds over the corpus)."""
    scores: dict[str, dict[str, FileScore]] = {name: {} for name in DETECTORS}
    seconds = {}
    for name, alerts_of in DETECTORS.items():
        began = time.perf_counter()
        found = {f.name: alerts_of(f) for f in files}
        seconds[name] = time.perf_counter() - began
        for f in files:
            windows = windows_for(len(f.labels), label_runs(f.labels))
            scores[name][f.name] = score_file(len(f.labels), windows, found[f.name])
    return scores, seconds


def summary(scores: dict[str, FileScore]) -> dict:
    """Normalised score, counts and the clean-stretch alert rate of a set of files."""
    s = list(scores.values())
    clean = sum(x.clean_points for x in s)
    return {"score": None if normalised(s) is None else round(normalised(s), 1), "files": len(s),
            "windows": sum(x.windows for x in s), "tp": sum(x.tp for x in s), "fn": sum(x.fn for x in s),
            "fp": sum(x.fp for x in s), "clean_points": clean,
            "alerts_per_1000_clean": round(1000 * sum(x.fp_clean for x in s) / clean, 3) if clean else None}


def groups(files: list[LabelledFile]) -> dict[str, list[str]]:
    """The file names of each half, of each folder (kind of metric), and of all."""
    out: dict[str, list[str]] = {"all": [f.name for f in files]}
    for f in files:
        out.setdefault(f.half, []).append(f.name)
        out.setdefault(f.name.split("/")[0], []).append(f.name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path, help="the corpus' data/ folder")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (the scores are the same each run)")
    parser.add_argument("--half", default="all", choices=["all", "dev", "held-out"])
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    files = [f for f in corpus_files(args.corpus) if args.half in ("all", f.half)]
    timings = []
    for _ in range(args.runs):
        scores, seconds = run_once(files)
        timings.append(seconds)
    runtime = {name: statistics.median(t[name] for t in timings) for name in DETECTORS}
    table = {group: {name: summary({n: scores[name][n] for n in names}) for name in DETECTORS}
             for group, names in groups(files).items()}
    for group, row in table.items():
        cells = "  ".join(f"{name} {r['score']!s:>6} (tp {r['tp']}/{r['windows']}, fp {r['fp']}, "
                          f"{r['alerts_per_1000_clean']}/1000 clean)" for name, r in row.items())
        print(f"{group:<40} {cells}")
    print("runtime (median s): " + ", ".join(f"{n} {s:.2f}" for n, s in runtime.items())
          + f"; ratio {runtime['detect-series'] / runtime['zscore']:.1f}x the baseline")
    if args.json:
        from common import machine  # noqa: PLC0415 (the machine's description needs the lab's imports)

        out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               "runs": args.runs, "runtime_median_s": runtime, "table": table, "files": [f.name for f in files],
               "per_file": {name: {n: vars(s) for n, s in per.items()} for name, per in scores.items()}}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())

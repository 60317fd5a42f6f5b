"""The labelled corpus bench_series.py scores on, and the rolling z-score baseline.

Corpus: Microsoft's Cloud Monitoring Dataset (github.com/microsoft/cloud-monitoring-dataset,
commit 6a07a53c2fac495fb6831811df4c980d6c04bd10, folder data/): 67 real series from production
telemetry (crash rates, purchase counts, ingress rates, API requests and latency, MongoDB
requests, service unavailability), hourly or per minute, CSV `TimeStamp,Value,Label` (1 marks an
anomalous point). It is read from a folder given on the command line; nothing of it is committed.

Development and held-out halves: the files sorted by path, alternately (the first, third, ...
develop; the second, fourth, ... are held out).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TIME_COL, VALUE_COL, LABEL_COL = "TimeStamp", "Value", "Label"
Z_LIMIT = 6.0  # the baseline alerts beyond 6 standard deviations of the previous day's points
Z_MIN_POINTS = 3  # a standard deviation from fewer points is no baseline


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    name: str  # folder/file, relative to the corpus
    labels: list[int]  # per row, in file order (the corpus's rows are sorted and unique)
    times: pd.DatetimeIndex
    values: np.ndarray
    half: str  # dev | held-out


def corpus_files(root: Path) -> list[LabelledFile]:
    """Every labelled CSV under `root`, with its half."""
    paths = sorted(p for p in Path(root).rglob("*.csv"))
    if not paths:
        raise SystemExit(f"no CSV files under {root}; see BENCHMARKS.md for how to get the corpus")
    out = []
    for number, path in enumerate(paths):
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        times = pd.DatetimeIndex(pd.to_datetime([r[TIME_COL] for r in rows], utc=True))
        values = np.array([float(r[VALUE_COL] or "nan") for r in rows])  # an empty cell is a missing value
        labels = [int(float(r[LABEL_COL])) for r in rows]
        out.append(LabelledFile(path, str(path.relative_to(root)), labels, times, values,
                                "dev" if number % 2 == 0 else "held-out"))
    return out


def zscore_alerts(times: pd.DatetimeIndex, values: np.ndarray) -> list[int]:
    """Rolling z-score: a point beyond Z_LIMIT standard deviations of the previous day's points
    alerts when the point before it did not (one alert per burst)."""
    series = pd.Series(values, index=times)
    past = series.rolling("1D", closed="left", min_periods=Z_MIN_POINTS)
    mean, std = past.mean().to_numpy(), past.std().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.abs(values - mean) / std > Z_LIMIT
    out &= np.isfinite(mean) & (std > 0)
    return [int(i) for i in np.flatnonzero(out) if i == 0 or not out[i - 1]]

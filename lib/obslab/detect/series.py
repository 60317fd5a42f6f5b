"""`obslab detect-series`: the generic detectors on any single metric series from a CSV file.

Two rules, both on the robust z-score of baseline_shift (each point against the median and MAD
of the clean points before it, once there are MIN_HISTORY of them):

- spike: |z| above the threshold (`--z`, default SHIFT_Z).
- shift: a two-sided tabular CUSUM (Page) of z clipped to +-CLIP, with allowance CUSUM_K and
  decision limit CUSUM_H. It confirms a sustained move of about one robust standard deviation or
  more within a few points, while one wild point (clipped) cannot confirm it alone. When it fires,
  the point where the move began (the first point since the CUSUM last left zero that is a full
  standard deviation out in the move's direction) is reported, the points after
  it are taken as the new normal (the baseline restarts from them), and their spike flags are
  withdrawn: the shift explains them.

Input is validated strictly: nothing is guessed, and every error names the column or the row
(1 = the first data row).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from statistics import median

from obslab.detect.detectors import robust_z
from obslab.errors import ObslabError

# A robust scale from fewer points is too noisy for a CUSUM that trusts it: 12 points before the
# first judgement (and again after a shift). K = 0.5 targets moves of one standard deviation; H = 6
# is a little stricter than the textbook 5, because the scale is estimated, not known.
MIN_HISTORY = 12
CLIP, CUSUM_K, CUSUM_H = 3.0, 0.5, 6.0


class SeriesError(ObslabError):
    """A metric series file cannot be used; names the column or row and why."""


@dataclass(frozen=True)
class Point:
    timestamp: str
    value: float
    score: float
    anomalous: bool
    rule: str | None = None  # spike | shift


def read_series_csv(path: Path, time_col: str, value_col: str) -> list[tuple[str, datetime, float]]:
    """(original timestamp text, parsed time, value) per row, validated."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise SeriesError(f"{path}: the file is empty; expected a header row with {time_col!r} and {value_col!r}")
            for col in (time_col, value_col):
                if col not in reader.fieldnames:
                    raise SeriesError(f"{path}: no column {col!r}; the columns are {reader.fieldnames}")
            rows = list(reader)
    except OSError as err:
        raise SeriesError(f"{path}: cannot read it: {err.strerror}") from None
    if not rows:
        raise SeriesError(f"{path}: has a header but no data rows")
    out, previous = [], None
    for number, row in enumerate(rows, 1):
        text = (row[time_col] or "").strip()
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise SeriesError(f"{path}: row {number}: {time_col}={text!r} is not an ISO-8601 time") from None
        raw = (row[value_col] or "").strip()
        try:
            value = float(raw)
        except ValueError:
            raise SeriesError(f"{path}: row {number}: {value_col}={raw!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise SeriesError(f"{path}: row {number}: {value_col}={raw!r} is not a finite number")
        if previous is not None:
            try:
                order = (when > previous) - (when < previous)
            except TypeError:
                raise SeriesError(f"{path}: row {number}: mixes times with and without a time zone") from None
            if order == 0:
                raise SeriesError(f"{path}: row {number}: duplicate timestamp {text!r}")
            if order < 0:
                raise SeriesError(f"{path}: row {number}: {text!r} is earlier than the row before; sort by {time_col}")
        previous = when
        out.append((text, when, value))
    return out


def detect_points(values: list[float], z_threshold: float, lookback: int = 60,
                  min_relative: float = 0.0) -> list[tuple[float, str | None]]:
    """(score, rule or None) per value. A spike's score is its |z|; a shift's is the size of the
    move in robust standard deviations (median of the points since it began against the old median)."""
    result: list[tuple[float, str | None]] = [(0.0, None)] * len(values)
    history: list[float] = []
    high = low = 0.0
    high_from = low_from = None  # where each CUSUM side last left zero
    zs = [0.0] * len(values)
    for i, value in enumerate(values):
        if len(history) < MIN_HISTORY:
            history.append(value)
            continue
        z, centre, scale = robust_z(value, history[-lookback:], min_relative)
        spike = abs(z) > z_threshold
        clipped = max(-CLIP, min(CLIP, z))
        high_from = (i if high == 0 else high_from) if high + clipped - CUSUM_K > 0 else None
        low_from = (i if low == 0 else low_from) if low - clipped - CUSUM_K > 0 else None
        high = max(0.0, high + clipped - CUSUM_K)
        low = max(0.0, low - clipped - CUSUM_K)
        zs[i] = z
        if high > CUSUM_H or low > CUSUM_H:
            sign = 1 if high > CUSUM_H else -1
            run_start = high_from if sign > 0 else low_from
            # The move began at the run's first point a full standard deviation out (the run may
            # start a little early, on ordinary noise that happened to lean the same way).
            began = next((j for j in range(run_start, i + 1) if sign * zs[j] > 1.0), run_start)
            moved = values[began:i + 1]
            size = abs(median(moved) - centre) / scale
            for j in range(began + 1, i + 1):
                result[j] = (0.0, None)
            result[began] = (round(size, 3), "shift")
            history = list(moved)  # the new normal
            high = low = 0.0
            high_from = low_from = None
            continue
        result[i] = (round(abs(z), 3), "spike" if spike else None)
        if not spike:
            history.append(value)
    return result


def detect_csv(path: Path, time_col: str, value_col: str, z_threshold: float) -> list[Point]:
    rows = read_series_csv(path, time_col, value_col)
    scored = detect_points([v for _, _, v in rows], z_threshold, min_relative=0.01)
    return [Point(text, value, score, rule is not None, rule) for (text, _, value), (score, rule) in zip(rows, scored)]

"""`obslab detect-series`: the generic detector on any single metric series from a CSV file.

The rule is baseline_shift's robust z-score: each point against the median and MAD of the
non-anomalous points before it (at least MIN_HISTORY of them). Input is validated strictly:
nothing is guessed, and every error names the column or the row (1 = the first data row).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from obslab.detect.detectors import robust_z
from obslab.errors import ObslabError

MIN_HISTORY = 5


class SeriesError(ObslabError):
    """A metric series file cannot be used; names the column or row and why."""


@dataclass(frozen=True)
class Point:
    timestamp: str
    value: float
    score: float
    anomalous: bool


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
                  min_relative: float = 0.0) -> list[tuple[float, bool]]:
    """(score, anomalous) per value: |robust z| against the clean points before it."""
    history: list[float] = []
    result = []
    for value in values:
        if len(history) >= MIN_HISTORY:
            z, _, _ = robust_z(value, history[-lookback:], min_relative)
            score = abs(z)
        else:
            score = 0.0
        anomalous = score > z_threshold
        if not anomalous:
            history.append(value)
        result.append((round(score, 3), anomalous))
    return result


def detect_csv(path: Path, time_col: str, value_col: str, z_threshold: float) -> list[Point]:
    rows = read_series_csv(path, time_col, value_col)
    scored = detect_points([v for _, _, v in rows], z_threshold, min_relative=0.01)
    return [Point(text, value, score, flag) for (text, _, value), (score, flag) in zip(rows, scored)]

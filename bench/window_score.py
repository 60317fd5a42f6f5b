"""Anomaly-window scoring after NAB's published "standard" profile, written from its description
(Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms: the Numenta Anomaly
Benchmark", 2015, and NAB's scoring documentation); no NAB code or data.

- Windows. Each labelled anomaly gets a window; the windows of a series share 10 % of its length
  equally (NAB's window size), each centred on its anomaly. A labelled range (a run of labelled
  points) is its own window, widened to that size around its centre when shorter. Overlapping
  windows merge.
- Detections. The first detection inside a window is a true positive worth
  A_TP * sigma(y) / sigma(-1), where y = -(window end - i + 1) / window length runs from -1 at
  the window's start to 0 at its end, and sigma(y) = 2 / (1 + e^(5y)) - 1: early is worth ~A_TP,
  late ~0. Later detections in the same window count nothing. A detection outside every window
  costs A_FP (= -0.11) times the sigmoid of how far it is past the end of the window before it
  (y = distance / (that window's length - 1)): near a window's tail it costs little, far from it
  nearly the full A_FP; before any window it costs the full A_FP. A window with no detection
  costs A_FN (= -1).
- Probation. Detections in the first PROBATION_FRACTION of a series (at most PROBATION_MAX
  points) are not scored: a detector is still learning there (as NAB does).
- Normalisation over a set of series: 100 * (raw - null) / (perfect - null), where null is the
  raw score of a detector that never alerts (every window missed) and perfect the raw score of
  one alert at each window's start and nowhere else. Null = 0, perfect = 100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

A_TP, A_FP, A_FN = 1.0, -0.11, -1.0  # NAB's standard profile
WINDOW_FRACTION = 0.10  # the windows of a series together cover 10 % of it
PROBATION_FRACTION, PROBATION_MAX = 0.15, 750  # NAB's probationary period


def sigmoid(y: float) -> float:
    """NAB's scaled sigmoid: 2 / (1 + e^(5y)) - 1 (1 at y = -inf, 0 at y = 0, -1 at y = +inf)."""
    return 2.0 / (1.0 + math.exp(min(5.0 * y, 700.0))) - 1.0


@dataclass(frozen=True)
class FileScore:
    raw: float
    null: float
    perfect: float
    tp: int
    fp: int
    fn: int
    windows: int
    fp_clean: int  # detections outside every window (scored or not)
    clean_points: int  # points outside every window


def label_runs(labels: list[int]) -> list[tuple[int, int]]:
    """(first, last) index of each run of consecutive labelled points."""
    runs, start = [], None
    for i, flag in enumerate(list(labels) + [0]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


def windows_for(n: int, anomalies: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Scoring windows (first, last index, inclusive) of a series of n points with these labelled
    anomalies (a point is a range of one)."""
    if not anomalies:
        return []
    size = int(WINDOW_FRACTION * n / len(anomalies))
    out = []
    for first, last in anomalies:
        centre = (first + last) / 2
        a = min(first, int(math.ceil(centre - size / 2)))
        b = max(last, int(math.floor(centre + size / 2)))
        out.append((max(0, a), min(n - 1, b)))
    merged: list[list[int]] = []
    for a, b in sorted(out):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def probation(n: int) -> int:
    """Points at the start of a series of n points where detections are not scored."""
    return min(int(math.floor(PROBATION_FRACTION * n)), PROBATION_MAX)


def _raw(n: int, windows: list[tuple[int, int]], detections: list[int]) -> tuple[float, int, int, int]:
    """(raw score, true positives, scored false positives, detections outside every window)."""
    window_of = {}
    for number, (a, b) in enumerate(windows):
        for i in range(a, b + 1):
            window_of[i] = number
    start = probation(n)
    hit: dict[int, float] = {}
    raw, fp, fp_clean = 0.0, 0, 0
    for i in sorted(set(detections)):
        number = window_of.get(i)
        if number is None:
            fp_clean += 1
        if i < start:
            continue
        if number is not None:
            if number not in hit:
                a, b = windows[number]
                hit[number] = A_TP * sigmoid(-(b - i + 1) / (b - a + 1)) / sigmoid(-1.0)
            continue
        before = [w for w in windows if w[1] < i]
        if before:
            a, b = before[-1]
            cost = -sigmoid((i - b) / max(1, b - a))  # 0 just past the tail, 1 far from it
        else:
            cost = 1.0
        raw += A_FP * cost
        fp += 1
    raw += sum(hit.values()) + A_FN * (len(windows) - len(hit))
    return raw, len(hit), fp, fp_clean


def score_file(n: int, windows: list[tuple[int, int]], detections: list[int]) -> FileScore:
    """The raw NAB score of detection indices on a series of n points with these windows, with
    the raw scores of the null detector (no alert) and the perfect one (an alert at each window's
    start) on the same series."""
    raw, tp, fp, fp_clean = _raw(n, windows, detections)
    null = _raw(n, windows, [])[0]
    perfect = _raw(n, windows, [a for a, _ in windows])[0]
    clean = n - sum(b - a + 1 for a, b in windows)
    return FileScore(raw, null, perfect, tp, fp, len(windows) - tp, len(windows), fp_clean, clean)


def normalised(scores: list[FileScore]) -> float | None:
    """100 * (raw - null) / (perfect - null) over a set of series; None when they have no window."""
    raw = sum(s.raw for s in scores)
    null = sum(s.null for s in scores)
    perfect = sum(s.perfect for s in scores)
    return None if perfect == null else 100.0 * (raw - null) / (perfect - null)

"""Exercise 2: a detector of your own, `error_jump`.

A detector is a function from one series of windows (one service, oldest first) to the
anomalies it finds, with the evidence of each: the same interface as the detectors in
lib/obslab/detect/detectors.py. Write `detect` so that it flags the final windows whose error
COUNT is more than chance allows at the series' usual error rate (see README.md), then run

    make check-exercise 2
"""

from __future__ import annotations

from obslab.detect.detectors import Anomaly, DetectorConfig, Window, severity

NAME = "error_jump"


def detect(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """The final windows of `series` whose error count is beyond chance at the usual error rate."""
    found: list[Anomaly] = []
    for w in sorted(series, key=lambda w: w.window_start):
        if not w.is_final or w.request_count == 0:
            continue  # open windows are still filling; a silent window has no error rate
        # TODO: compare w with the usual error rate of the clean windows before it, and append
        # flag(w, usual_rate, threshold_rate) to `found` when w is beyond chance.
    return found


def flag(w: Window, usual_rate: float, threshold_rate: float) -> Anomaly:
    """An anomaly for window w, with its evidence: the window's error rate, the usual rate, the threshold."""
    return Anomaly(NAME, w.service, w.endpoint, "error_rate", w.error_rate, usual_rate, threshold_rate,
                   w.window_start, w.window_end, w.request_count,
                   severity(max(w.error_rate / threshold_rate, 1.0)) if threshold_rate > 0 else "critical",
                   not w.is_final)

"""Exercise 2, a reference solution: `error_jump` (copy over exercises/02_new_detector/detector.py).

A detector is a function from one series of windows (one service, oldest first) to the
anomalies it finds, with the evidence of each: the same interface as the detectors in
lib/obslab/detect/detectors.py. Write `detect` so that it flags the final windows whose error
COUNT is more than chance allows at the series' usual error rate (see README.md), then run

    make check-exercise 2
"""

from __future__ import annotations

import math
from collections import deque

from obslab.detect.detectors import Anomaly, DetectorConfig, Window, severity

NAME = "error_jump"
HISTORY = 30  # clean final windows that make the usual rate
MIN_HISTORY = 5  # fewer than this: no judgement yet
Z = 4.0  # one-sided: a clean window goes past this about once in 30,000
MIN_ERRORS = 5  # a handful of errors on a quiet service is never a jump
RATE_FLOOR = 0.001  # a service that never failed still may fail now and then


def detect(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """The final windows of `series` whose error count is beyond chance at the usual error rate."""
    found: list[Anomaly] = []
    clean: deque[tuple[int, int]] = deque(maxlen=HISTORY)  # (requests, errors) of recent unflagged windows
    for w in sorted(series, key=lambda w: w.window_start):
        if not w.is_final or w.request_count == 0:
            continue  # open windows are still filling; a silent window has no error rate
        if len(clean) >= MIN_HISTORY:
            requests, errors = sum(n for n, _ in clean), sum(e for _, e in clean)
            usual = max(errors / max(requests, 1), RATE_FLOOR)
            # The usual rate is an estimate too: judge against its upper end (about 2 sd of its count).
            high = max((errors + 2 * math.sqrt(errors + 1)) / max(requests, 1), RATE_FLOOR)
            n = w.request_count
            # Errors of n requests at that rate: binomial, mean n p, sd sqrt(n p (1 - p)).
            limit = n * high + Z * math.sqrt(n * high * (1 - high))
            if w.error_count > limit and w.error_count >= MIN_ERRORS:
                found.append(flag(w, usual, limit / n))
                continue  # a flagged window stays out of the baseline
        clean.append((w.request_count, w.error_count))
    return found


def flag(w: Window, usual_rate: float, threshold_rate: float) -> Anomaly:
    """An anomaly for window w, with its evidence: the window's error rate, the usual rate, the threshold."""
    return Anomaly(NAME, w.service, w.endpoint, "error_rate", w.error_rate, usual_rate, threshold_rate,
                   w.window_start, w.window_end, w.request_count,
                   severity(max(w.error_rate / threshold_rate, 1.0)) if threshold_rate > 0 else "critical",
                   not w.is_final)

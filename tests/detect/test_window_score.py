"""bench/window_score.py (NAB's standard profile) on tiny series whose scores are worked out by
hand. The sigmoid 2 / (1 + e^(5y)) - 1 equals -tanh(5y / 2), which the expected values use."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from window_score import label_runs, normalised, probation, score_file, windows_for  # noqa: E402

N = 100  # probation: the first 15 points; one anomaly at 50 gets the window 45..55 (10 % of 100, centred)
WINDOW = [(45, 55)]
EARLIEST = math.tanh(2.5)  # sigma(-1), the worth of a detection at a window's start before scaling


def test_windows_are_ten_percent_shared_centred_widened_to_a_range_and_merged():
    assert windows_for(N, [(50, 50)]) == WINDOW
    assert windows_for(N, [(40, 60)]) == [(40, 60)]  # a labelled range longer than the size is its own window
    # Two anomalies share the 10 points: 48..52 and 50..54 overlap and merge.
    assert windows_for(N, [(50, 50), (52, 52)]) == [(48, 54)]
    assert windows_for(N, [(2, 2)]) == [(0, 7)]  # clipped at the series' start
    assert windows_for(N, []) == []
    assert label_runs([0, 1, 1, 0, 1]) == [(1, 2), (4, 4)]
    assert probation(N) == 15 and probation(100_000) == 750


@pytest.mark.parametrize(
    "detections, raw",
    [
        ([], -1.0),  # the window is missed: A_FN
        ([45], 1.0),  # at the window's start: A_TP
        ([45, 50, 55], 1.0),  # later detections in the same window count nothing
        ([55], math.tanh(5 / 22) / EARLIEST),  # at its end: y = -1/11
        ([50], math.tanh(5 * 6 / 22) / EARLIEST),  # y = -(55 - 50 + 1) / 11
        ([20], -0.11 - 1.0),  # a false alarm before any window costs all of A_FP, and the window is missed
        ([10], -1.0),  # in the probation: not scored
        ([45, 56], 1.0 - 0.11 * math.tanh(0.25)),  # just past the tail: y = 1/10, cost A_FP x tanh(5y/2)
        ([45, 99], 1.0 - 0.11 * math.tanh(5 * 4.4 / 2)),  # far past it: nearly all of A_FP
    ],
)
def test_the_raw_score_of_one_window(detections, raw):
    score = score_file(N, WINDOW, detections)
    assert score.raw == pytest.approx(raw)
    assert (score.null, score.perfect) == (-1.0, 1.0)


def test_the_normalised_score_puts_no_alert_at_0_and_a_perfect_detector_at_100():
    assert normalised([score_file(N, WINDOW, [])]) == 0
    assert normalised([score_file(N, WINDOW, [45])]) == 100
    # A clean file adds its false alarms to the raw total but nothing to the null or perfect one.
    both = [score_file(N, WINDOW, [45]), score_file(N, [], [30, 60])]
    assert normalised(both) == pytest.approx(100 * (1.0 - 0.22 + 1.0) / 2)
    assert both[1].fp_clean == 2 and both[1].clean_points == N
    assert normalised([score_file(N, [], [30])]) is None  # no window: nothing to normalise by


def test_the_z_score_baseline_alerts_once_per_burst_beyond_six_sd_of_the_previous_day():
    import numpy as np
    import pandas as pd
    from series_corpus import zscore_alerts

    times = pd.date_range("2026-01-05", periods=72, freq="h", tz="UTC")
    values = np.tile([10.0, 12.0], 36)  # mean 11, sd about 1 over any day
    values[[30, 31, 60]] = [30.0, 30.0, 17.5]  # a two-hour burst 19 sd out; 6.4 sd at hour 60 (a clean day before)
    assert zscore_alerts(times, values) == [30, 60]  # one alert for the burst, one for the lone point

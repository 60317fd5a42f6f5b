"""The forecasts (obslab.detect.forecasts): the rhythm fitted to a cycle, and Trend's choice among them."""

from dataclasses import replace

import numpy as np

from obslab.detect.forecasts import Trend, fit_rhythm
from tests.detect.helpers import CFG


def test_the_rhythm_forecast_follows_a_repeating_cycle_it_has_seen_once():
    # A 30-window cycle, noise-free, 40 points seen: the fitted level and sine forecast the next
    # windows where a line or a parabola through the last few points cannot (they overshoot the turn).
    points = [(k, 500 + 250 * np.sin(2 * np.pi * k / 30 + 1.0)) for k in range(40)]
    forecast, period = fit_rhythm(points, CFG)
    assert abs(period - 30) < 0.3
    for ahead in (1, 2, 4):
        truth = 500 + 250 * np.sin(2 * np.pi * (39 + ahead) / 30 + 1.0)
        assert abs(forecast(ahead) - truth) < 0.01 * 500
    assert fit_rhythm(points[:10], CFG) is None  # too few points to say there is a cycle


def test_the_rhythm_is_scored_as_it_is_now_not_as_it_was_on_its_first_cycle():
    # A noise-free 30-window cycle, 45 points: on its first 20-odd points the rhythm's period was
    # wrong and its forecasts far off. Scored by what it missed then, it stayed out of use and its
    # noise looked large for a cycle more; as it is now it forecasts the recent points almost exactly.
    trend = Trend(replace(CFG, trend_windows=12))
    for k in range(45):
        trend.add(k, 500 + 250 * np.sin(2 * np.pi * k / 30 + 1.0))
    assert abs(trend.period - 30) < 0.5 and trend.chosen() == "rhythm"
    assert max(trend.errors["rhythm"]) < 5.0 ** 2  # within 5 requests of 250-750, one step ahead
    assert max(trend.ahead[8]["rhythm"]) < 10.0 ** 2  # and 8 steps ahead

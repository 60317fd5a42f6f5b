"""Sampling and seasonality (obslab.detect.period): gaps on the step grid keep the phase, and a period is
found where there is one, to the step, and not where there is none."""

from datetime import timedelta

import numpy as np
import pytest

from obslab.detect.period import detect_period
from obslab.detect.series import detect
from obslab.detect.series_io import Series
from tests.detect.helpers import Z, ar1, daily_sine, regular


def test_missing_steps_are_gaps_that_keep_the_phase():
    # A noise-free daily rhythm with 5 % of its hours lost: counted by rows, the phase would slip
    # at every gap and the rhythm would look broken.
    rng = np.random.default_rng(1)
    values = daily_sine(24 * 40)
    keep = np.sort(rng.choice(len(values), size=int(len(values) * 0.95), replace=False))
    full = regular(values)
    series = Series([full.texts[i] for i in keep], [full.times[i] for i in keep], [full.values[i] for i in keep],
                    len(keep), 0, 0)
    result = detect(series, Z)
    assert result.summary["gaps"] == len(values) - len(keep) - (len(values) - 1 - keep[-1]) - keep[0]
    assert result.summary["period"] == 24 and result.episodes == []


@pytest.mark.parametrize(
    "step, period, shape",
    [
        (timedelta(hours=1), 24, "sine"),  # the case: 4,000 hourly points of a daily sine
        (timedelta(minutes=5), 288, "sine"),  # a day of 5-minute points: under 14 cycles in 4,000
        (timedelta(hours=1), 24, "office"),  # a flat night and a busy day: not a sine at all
        (timedelta(days=1), 7, "sine"),  # a weekly rhythm of daily points
    ],
)
def test_a_noise_free_rhythm_is_found_to_the_step_and_raises_nothing(step, period, shape):
    phase = np.arange(4000) % period
    values = daily_sine(4000, period) if shape == "sine" else np.where((phase >= 8) & (phase < 18), 250.0, 40.0)
    result = detect(regular(values, step), Z)
    assert result.summary["period"] == period and result.summary["period_source"] == "detected"
    assert result.episodes == [] and not any(p.anomalous for p in result.points)


@pytest.mark.parametrize("n", [300, 3000])
@pytest.mark.parametrize("kind", ["white", "random walk", "ar 0.9", "heavy tails", "trend and shift"])
def test_no_rhythm_is_found_where_there_is_none(kind, n):
    # The significance rule lets a rhythmless series pass for periodic with chance 0.1 %; over
    # these 10 kinds x lengths x 3 seeds, any false period would be a rule that does not hold.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        values = {
            "white": lambda: rng.normal(size=n),
            "random walk": lambda: np.cumsum(rng.normal(size=n)),
            "ar 0.9": lambda: ar1(rng, n, 0.9),
            "heavy tails": lambda: rng.standard_t(2, size=n),
            "trend and shift": lambda: 0.01 * np.arange(n) + 5 * (np.arange(n) >= n // 2) + rng.normal(size=n),
        }[kind]()
        assert detect_period(values, np.arange(n))[0] is None, (kind, n, seed)


def test_a_slow_rhythm_under_fast_noise_is_found():
    # 5-minute points of a daily cycle only twice the noise's standard deviation: step to step,
    # noise is 40 times the rhythm's change, so the differences alone do not show it.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        values = 50 + 2 * np.sin(2 * np.pi * np.arange(288 * 14) / 288) + rng.normal(size=288 * 14)
        period, _ = detect_period(values, np.arange(len(values)), 300.0)
        assert period is not None and abs(period - 288) <= 2  # within 10 minutes of a day


@pytest.mark.parametrize("weekend_factor, period", [(0.7, 168), (1.0, 24)])
def test_a_weekly_rhythm_wins_over_the_daily_one_only_when_weekends_differ(weekend_factor, period):
    rng = np.random.default_rng(0)
    hours = np.arange(24 * 7 * 10)
    weekend = (hours // 24) % 7 >= 5
    values = daily_sine(len(hours), 24) * np.where(weekend, weekend_factor, 1.0) + rng.normal(0, 3, len(hours))
    result = detect(regular(values), Z)
    assert result.summary["period"] == period
    assert result.episodes == []  # with the right period, weekends are no surprise

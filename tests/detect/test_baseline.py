"""The level model of detect-series (obslab.detect.baseline): a wandering level (AR(1) pull) and small
counts (Poisson) are judged as what they are."""

import math
from datetime import timedelta
from statistics import NormalDist

import numpy as np
import pytest

from obslab.detect.baseline import poisson_z
from obslab.detect.series import detect
from tests.detect.helpers import Z, ar1, regular


@pytest.mark.parametrize("kind", ["random walk", "ar 0.95"])
def test_a_wandering_series_is_not_a_string_of_alerts(kind):
    # Its level moves all the time; judged as independent points it raised ~200 shifts in 4,000.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        noise = np.cumsum(rng.normal(size=4000)) if kind == "random walk" else ar1(rng, 4000, 0.95)
        assert len(detect(regular(1000 + noise), Z).episodes) <= 2, seed


@pytest.mark.parametrize("mean", [pytest.param(0.05, marks=pytest.mark.slow), 0.3])  # 0.05: the same property, rarer
def test_rare_counts_are_judged_as_counts(mean):
    # Errors per 5 minutes, mostly none: 3 where 0.3 are usual happen one step in 300, though
    # that is many robust standard deviations (all but 0) out; judged as measurements alone,
    # such a series raised 20 to 170 episodes in 4,000 steps. A burst of 12 is no accident.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        counts = rng.poisson(mean, 4000).astype(float)
        assert detect(regular(counts, timedelta(minutes=5)), Z).episodes == [], seed
        counts[3000] += 12
        series = regular(counts, timedelta(minutes=5))
        assert [e.peak for e in detect(series, Z).episodes] == [series.texts[3000]], seed


@pytest.mark.parametrize("observed, mean, tail", [
    (3, 0.3, 1 - math.exp(-0.3) * (1 + 0.3 + 0.3 ** 2 / 2)),  # P(X >= 3) at 0.3: one step in 278
    (0, 5.0, math.exp(-5.0)),  # P(X <= 0) at 5: none where five are usual
    (5, 5.0, 0.5),  # at its mean (P(X >= 5) = 0.56): no surprise at all, z 0
], ids=["above", "below", "at the mean"])
def test_a_count_is_scored_by_its_poisson_tail(observed, mean, tail):
    assert poisson_z(observed, mean) == pytest.approx(-NormalDist().inv_cdf(tail), rel=1e-9, abs=1e-12)

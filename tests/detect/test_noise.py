"""The noise model's tails against their definitions (sums of the probability mass functions),
and the dispersion estimate against draws whose variance is known."""

import json
import math

import numpy as np
import pytest

from obslab.detect.noise import (Dispersion, binomial_sf, chi2_quantile, poisson_cdf, tail_probability,
                                 trimmed_mean_square, wilson_upper)


def binomial_tail_by_sum(k: int, n: int, p: float) -> float:
    def log_term(x):
        log_choose = math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1)
        return log_choose + x * math.log(p) + (n - x) * math.log1p(-p)

    return math.fsum(math.exp(log_term(x)) for x in range(k, n + 1))


def poisson_cdf_by_sum(k: int, mu: float) -> float:
    return sum(math.exp(-mu + x * math.log(mu) - math.lgamma(x + 1)) for x in range(0, k + 1))


@pytest.mark.parametrize("k, n, p", [
    (3, 10, 0.02),     # 3 errors in 10 requests at a 2 % rate: the small-sample case
    (1, 1, 0.5),
    (0, 20, 0.3),      # at least 0: certain
    (21, 20, 0.3),     # more than n: impossible
    (12, 200, 0.02),
    (60, 200, 0.06),
    (1300, 20000, 0.06),
    (950, 1000, 0.97),  # a service that mostly fails
])
def test_binomial_tail_is_the_sum_of_its_terms(k, n, p):
    assert binomial_sf(k, n, p) == pytest.approx(binomial_tail_by_sum(k, n, p), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("k, mu", [(0, 20.0), (0, 0.5), (5, 20.0), (14, 20.0), (30, 20.0), (14000, 20000.0),
                                   (19800, 20000.0)])
def test_poisson_cdf_is_the_sum_of_its_terms(k, mu):
    assert poisson_cdf(k, mu) == pytest.approx(poisson_cdf_by_sum(k, mu), rel=1e-9, abs=1e-300)


def test_real_valued_counts_lie_between_their_integer_neighbours():
    # Quasi-likelihood counts (divided by phi) are real: the tails interpolate monotonically.
    assert poisson_cdf(4, 10.0) < poisson_cdf(4.5, 10.0) < poisson_cdf(5, 10.0)
    assert binomial_sf(5, 40, 0.1) > binomial_sf(5.5, 40, 0.1) > binomial_sf(6, 40, 0.1)


def test_tail_probability_is_the_normal_tail():
    assert tail_probability(0) == pytest.approx(0.5)
    assert tail_probability(3) == pytest.approx(1.3499e-3, rel=1e-4)  # the textbook value
    assert tail_probability(5) == pytest.approx(2.8665e-7, rel=1e-4)


def test_wilson_upper_covers_the_true_rate():
    # 2 % errors, windows of 200 requests: the z = 2 upper bound is below the true rate in about
    # 2.3 % of histories (the one-sided normal tail), far from never and far from half the time.
    rng = np.random.default_rng(7)
    errors = rng.binomial(200, 0.02, 20000)
    below = np.mean([wilson_upper(e, 200, 2.0) < 0.02 for e in errors])
    assert 0.005 < below < 0.05
    assert wilson_upper(0, 0, 2.0) == 1.0  # no data: anything is possible


@pytest.mark.parametrize("variance", [1.0, 4.0])
def test_trimmed_mean_square_estimates_the_variance_of_normal_values(variance):
    values = np.random.default_rng(3).normal(0, math.sqrt(variance), 20000).tolist()
    assert trimmed_mean_square(values) == pytest.approx(variance, rel=0.05)
    # One wild value barely moves it.
    assert trimmed_mean_square(values + [1e6]) == pytest.approx(variance, rel=0.05)


def test_dispersion_is_at_least_one_and_wider_when_the_noise_is():
    rng = np.random.default_rng(11)
    calm, wide = Dispersion(120), Dispersion(120)
    for x in rng.normal(0, 1, 120):
        calm.add(x)
    for x in rng.normal(0, 3, 120):
        wide.add(x)
    assert calm.phi == pytest.approx(1.0, abs=0.4)  # Poisson-like errors: phi about 1 (never below)
    assert 9 * 0.8 < wide.phi < 9 * 1.6  # three times the noise: nine times the variance, bounded up
    assert Dispersion(120).phi == 1.0  # nothing known yet


def test_dispersion_from_few_errors_errs_on_the_wide_side():
    # The same variance from 10 errors gives a larger phi than from 120: the estimate is its
    # upper 95 % bound, and 10 errors pin a variance down far less.
    rng = np.random.default_rng(5)
    few, many = Dispersion(120), Dispersion(120)
    draws = rng.normal(0, 2, 120)
    for x in draws[:10]:
        few.add(x)
    for x in draws:
        many.add(x)
    assert few.phi > many.phi > 4 * 0.8


@pytest.mark.parametrize("dof", [10, 30, 120])
def test_chi2_quantile_matches_simulation(dof):
    draws = np.random.default_rng(dof).chisquare(dof, 200000)
    assert chi2_quantile(dof, -1.645) == pytest.approx(np.quantile(draws, 0.05), rel=0.02)


def test_a_dispersion_written_down_and_read_back_is_the_same():
    # 40 errors into a window of 30: the oldest 10 have left; what remains, and phi, survive JSON
    rng = np.random.default_rng(7)
    errors = rng.standard_t(4, 41)
    noise = Dispersion(30)
    for e in errors[:40]:
        noise.add(float(e))
    copy = Dispersion.from_snapshot(json.loads(json.dumps(noise.snapshot())))
    assert (len(copy), copy.phi, copy.estimate) == (30, noise.phi, noise.estimate)
    noise.add(float(errors[40]))
    copy.add(float(errors[40]))
    assert copy.phi == noise.phi and copy.snapshot() == noise.snapshot()

"""The noise model: how far a count, a share or an average may stray by chance.

Every detector asks the same question of a window: is what it holds further from what was
expected than chance allows, given how many requests it holds? A window's numbers are counts
(requests, errors) and averages over its requests, so their noise depends on its size: 6 of 20
requests failing is weak evidence, 6,000 of 20,000 is overwhelming. The tails here are exact for
the textbook models (binomial errors, Poisson arrivals), so a small window is judged as what it
is rather than by a normal approximation that is worst exactly where the counts are small:

    errors of n requests at rate p       -> binomial_sf      P(X >= k)
    requests in a window expecting mu    -> poisson_cdf      P(X <= k)
    z (standard deviations)              -> tail_probability the one-sided normal tail it stands for

Over-dispersion (real traffic varies more than Poisson arrivals, error rates wobble) is handled
by the callers the quasi-likelihood way: counts divided by the dispersion factor phi >= 1 that the
series' own history shows, which keeps the mean and multiplies the variance by phi. Both tails
therefore accept real-valued counts (the regularized incomplete beta and gamma functions).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from functools import lru_cache

_EPS = 1e-14
_TINY = 1e-300
_MAX_TERMS = 100_000  # continued fractions and series converge in O(sqrt(count)) terms
_NORMAL_ABOVE = 1e7  # expected counts above this: the normal approximation is exact enough


def tail_probability(z: float) -> float:
    """P(Z > z) for a standard normal Z: the false-alarm rate a one-sided z-threshold stands for."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def binomial_sf(k: float, n: float, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p); k and n may be real (quasi-binomial counts)."""
    if k <= 0 or p >= 1:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if n * p * (1 - p) > _NORMAL_ABOVE:
        return tail_probability((k - 0.5 - n * p) / math.sqrt(n * p * (1 - p)))
    # P(X >= k) = I_p(k, n - k + 1), the regularized incomplete beta function.
    return incomplete_beta(k, n - k + 1, p)


def poisson_cdf(k: float, mu: float) -> float:
    """P(X <= k) for X ~ Poisson(mu); k may be real (quasi-Poisson counts)."""
    if k < 0:
        return 0.0
    if mu <= 0:
        return 1.0
    if mu > _NORMAL_ABOVE:
        return tail_probability((mu - k - 0.5) / math.sqrt(mu))
    # P(X <= k) = Q(k + 1, mu), the regularized upper incomplete gamma function.
    return upper_incomplete_gamma(k + 1, mu)


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    # The continued fraction converges fast on one side of the mean; use the symmetry on the other.
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b


def upper_incomplete_gamma(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x)."""
    if x <= 0:
        return 1.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:  # the series for P(a, x) converges here
        term = total = 1.0 / a
        denominator = a
        for _ in range(_MAX_TERMS):
            denominator += 1
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    # Q(a, x) by its continued fraction (modified Lentz).
    b = x + 1 - a
    c = 1 / _TINY
    d = 1 / b
    h = d
    for i in range(1, _MAX_TERMS):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < _EPS:
            break
    return min(1.0, math.exp(log_front) * h)


def _beta_fraction(a: float, b: float, x: float) -> float:
    # The continued fraction of the incomplete beta function (modified Lentz).
    c = 1.0
    d = 1 - (a + b) * x / (a + 1)
    d = 1 / (_TINY if abs(d) < _TINY else d)
    h = d
    for m in range(1, _MAX_TERMS):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((a - 1 + m2) * (a + m2)),
                          -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1 + m2))):
            d = 1 + numerator * d
            d = 1 / (_TINY if abs(d) < _TINY else d)
            c = 1 + numerator / c
            c = _TINY if abs(c) < _TINY else c
            step = d * c
            h *= step
        if abs(step - 1) < _EPS:
            break
    return h


def wilson_upper(errors: float, n: float, z: float) -> float:
    """Upper bound of the Wilson score interval of a proportion (1.0 when there is no data)."""
    if n <= 0:
        return 1.0
    p = errors / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


def trimmed_mean_square(values: list[float], keep: float = 0.9) -> float | None:
    """Mean of the squares of `values` with the largest (1 - keep) left out, rescaled so that for
    standard normal values it estimates 1 (a variance ratio that one stray point cannot inflate).
    None for fewer than 4 values."""
    if len(values) < 4:
        return None
    squares = sorted(v * v for v in values)
    kept = squares[:max(1, int(round(keep * len(squares))))]
    return (sum(kept) / len(kept)) / _chi2_1_trimmed_mean(keep)


class Dispersion:
    """Over-dispersion phi >= 1 from the last `size` standardized prediction errors of a series,
    updated as errors arrive.

    The estimate is a winsorized mean square: each squared error counts up to CLIP^2 x the
    trimmed mean square (see `trimmed_mean_square`). Heavy tails therefore widen the noise (a
    plain trimmed mean would cut them off and call them normal), while one stray error from an
    anomaly that went unflagged counts as a CLIP-sigma error, not as a hundred. A mean square of
    m errors is uncertain (m x estimate / phi is chi-square with m degrees of freedom), so phi is
    the upper end of its one-sided 80 % interval: x 1.6 from 10 errors, x 1.13 from 120. Below 4
    errors it is 1: too few to say anything.
    """

    CLIP = 5.0
    CONFIDENCE_Z = -0.8416  # phi is the upper end of its 80 % interval: a few errors do not vouch for calm

    def __init__(self, size: int, keep: float = 0.9):
        self.size, self.keep = size, keep
        self._arrived: deque[float] = deque()
        self._sorted: list[float] = []
        self._phi: float | None = 1.0
        self._estimate = 1.0

    def __len__(self) -> int:
        return len(self._arrived)

    def add(self, error: float) -> None:
        square = error * error
        self._arrived.append(square)
        bisect.insort(self._sorted, square)
        if len(self._arrived) > self.size:
            del self._sorted[bisect.bisect_left(self._sorted, self._arrived.popleft())]
        self._phi = None

    def snapshot(self) -> dict:
        """Its size, trim and the squared errors it holds, oldest first (see `from_snapshot`)."""
        return {"size": self.size, "keep": self.keep, "squares": list(self._arrived)}

    @classmethod
    def from_snapshot(cls, data: dict) -> Dispersion:
        """The `Dispersion` `snapshot` wrote (phi is computed again from the same squares)."""
        dispersion = cls(data["size"], data["keep"])
        dispersion._arrived.extend(data["squares"])
        dispersion._sorted = sorted(data["squares"])
        dispersion._phi = None
        return dispersion

    @property
    def phi(self) -> float:
        """The upper end of phi's interval: what judgements use."""
        if self._phi is None:
            self._estimate, self._phi = dispersion_of(self._sorted, self.keep)
        return self._phi

    @property
    def estimate(self) -> float:
        """phi's point estimate (at least 1): what deciding to learn a window uses."""
        self.phi  # noqa: B018 (computes both)
        return self._estimate


def dispersion_of(squares: list[float], keep: float = 0.9) -> tuple[float, float]:
    """(estimate, upper 80 % bound) of phi >= 1 from sorted squared standardized errors (see
    `Dispersion`); (1, 1) below 4 of them."""
    n = len(squares)
    if n < 4:
        return 1.0, 1.0
    kept = max(1, int(round(keep * n)))
    trimmed = sum(squares[:kept]) / kept / _chi2_1_trimmed_mean(keep)
    cap = Dispersion.CLIP * Dispersion.CLIP * max(trimmed, 1e-12)
    above = n - bisect.bisect_right(squares, cap)
    winsorized = (sum(squares[:n - above]) + above * cap) / n
    return max(1.0, winsorized), max(1.0, winsorized * n / chi2_quantile(n, Dispersion.CONFIDENCE_Z))


def chi2_quantile(dof: int, z: float) -> float:
    """The quantile of a chi-square distribution with `dof` degrees of freedom at the normal
    quantile z (Wilson-Hilferty: within 3 % at 4 degrees of freedom, 0.3 % from 10 on)."""
    h = 2.0 / (9.0 * dof)
    return dof * max(1 - h + z * math.sqrt(h), 0.05) ** 3


@lru_cache(maxsize=8)
def _chi2_1_trimmed_mean(keep: float) -> float:
    # E[X | X < q] for X ~ chi-square(1), q its `keep` quantile; E[X 1(X < q)] = P(chi2(3) < q).
    q = _normal_quantile(0.5 + keep / 2) ** 2
    p3 = math.erf(math.sqrt(q / 2)) - math.sqrt(2 * q / math.pi) * math.exp(-q / 2)
    return p3 / keep


def _normal_quantile(p: float) -> float:
    # Bisection on the normal CDF: called with a handful of fixed arguments, so speed is moot.
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2

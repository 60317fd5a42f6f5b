"""The level model a point of a series is judged against (see `obslab.detect.series`).

The seasonally adjusted points of the current level give a robust line, the lag-1 pull of its
deviations (AR(1), for series whose noise wanders; kept only when significant) and robust scales
of the one-step surprises and of the deviations. Small counts are judged as Poisson counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

# Points of a level before the first judgement, and after a shift: a robust scale from 12 made
# one series in 30 raise a false alarm in its first points (measured on white noise).
MIN_HISTORY = 24
PHI_MAX = 0.95  # the pull of the last point is capped: a series is never taken for a pure random walk
MAD_TO_SD = 1.4826  # MAD x this estimates a normal standard deviation


def fast_median(a: np.ndarray) -> float:
    """np.median without its overhead (this runs several times per point)."""
    half = len(a) // 2
    if len(a) % 2:
        return float(np.partition(a, half)[half])
    part = np.partition(a, (half - 1, half))
    return float(part[half - 1] + part[half]) / 2


def robust_scale(residuals: np.ndarray, floor: float) -> float:
    """1.4826 x MAD; when over half the residuals are equal (a mostly flat or mostly zero
    series, where MAD is 0) the root mean square deviation from their median; never below
    `floor`."""
    centre = fast_median(residuals)
    dev = np.abs(residuals - centre)
    mad = fast_median(dev)
    return max(MAD_TO_SD * mad if mad > 0 else float(np.sqrt(np.mean(dev ** 2))), floor, 1e-9)


def _robust_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Median of the slopes between each point and the one half the window later (a trend that
    outliers do not bend, in linear time), shrunk towards zero by twice its standard error: a
    trend within the noise is no trend, and extrapolating one would bias every later z."""
    half = len(x) // 2
    slopes = (y[half:2 * half] - y[:half]) / (x[half:2 * half] - x[:half])
    slope = float(fast_median(slopes))
    error = 1.2533 * MAD_TO_SD * float(fast_median(np.abs(slopes - slope))) / np.sqrt(half)
    return float(np.sign(slope) * max(0.0, abs(slope) - 2 * error))


@dataclass(frozen=True)
class Baseline:
    """The level model at one moment: a line in step numbers; the pull of the last clean point's
    deviation from it (AR(1): in a series whose noise wanders, the next point starts from where
    the last one was); and robust scales of the one-step surprises and of the deviations."""

    slope: float
    intercept: float
    phi: float
    last_position: int
    last_deviation: float
    scale: float  # of one-step surprises
    spread: float  # of deviations from the line

    def level(self, position: float) -> float:
        return self.intercept + self.slope * position

    def predict(self, position: int) -> float:
        return self.level(position) + self.phi ** (position - self.last_position) * self.last_deviation

    @property
    def long_run(self) -> float:
        return self.spread * float(np.sqrt((1 + self.phi) / (1 - self.phi)))

    def surprise_scale(self, position: int) -> float:
        if self.phi == 0:
            return self.scale
        steps = position - self.last_position
        return self.scale * float(np.sqrt((1 - self.phi ** (2 * steps)) / (1 - self.phi ** 2)))


def fit_baseline(positions: np.ndarray, adjusted: np.ndarray, raw: np.ndarray, min_relative: float,
         slope_before: float) -> Baseline:
    """Fit the level model to the clean points of the current level (positions ascending)."""
    floor = min_relative * float(fast_median(np.abs(raw)))
    # A slope from fewer than two history's worth of points is mostly noise: keep the one before.
    slope = _robust_slope(positions.astype(float), adjusted) if len(adjusted) >= 2 * MIN_HISTORY else slope_before
    intercept = float(fast_median(adjusted - slope * positions))
    deviations = adjusted - (intercept + slope * positions)
    spread = robust_scale(deviations, floor)
    adjacent = np.diff(positions) == 1
    before, after = deviations[:-1][adjacent], deviations[1:][adjacent]
    phi, scale = 0.0, spread
    if len(before) >= MIN_HISTORY:
        a, b = np.clip(before, -3 * spread, 3 * spread), np.clip(after, -3 * spread, 3 * spread)
        if np.sum(a * a) > 0:
            # Kept only beyond twice its standard error, sqrt((1 - phi^2) / pairs): a pull within
            # the noise is no pull, and a spurious one would blunt the shift rule.
            phi = float(np.clip(np.sum(a * b) / np.sum(a * a), 0.0, PHI_MAX))
            phi = phi if phi > 2 * np.sqrt((1 - phi ** 2) / len(a)) else 0.0
        scale = robust_scale(after - phi * before, floor)
    return Baseline(slope, intercept, phi, int(positions[-1]), float(deviations[-1]), scale, spread)


def poisson_z(observed: float, mean: float) -> float:
    """How unlikely a count is for a Poisson count of that mean, as a one-sided normal z (away
    from the mean). Small counts are not normal: 3 errors where 0.3 are usual happen one step in
    300, though a series mostly of zeros has a robust scale near 0 that puts them far out."""
    mean = max(mean, 1e-3)  # a baseline at or below zero still expects a count now and then

    def log_pmf(j: int) -> float:
        return j * math.log(mean) - mean - math.lgamma(j + 1)

    count = int(round(observed))
    if count >= mean:  # P(X >= count): terms fall away fast above the mean
        terms, j = [], count
        while not terms or terms[-1] - terms[0] > -40:
            terms.append(log_pmf(j))
            j += 1
    else:  # P(X <= count)
        terms = [log_pmf(j) for j in range(count + 1)]
    top = max(terms)
    tail = min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))
    return -NormalDist().inv_cdf(max(min(tail, 0.5), 1e-300))

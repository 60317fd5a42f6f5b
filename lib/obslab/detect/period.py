"""Sampling and seasonality of a series: the step grid with its gaps, and the period.

- Sampling. When rows come at a regular step (within REGULAR_JITTER, so calendar months count),
  a missing step is a gap: a point's phase in a cycle is its step number, not its row number.
- Seasonality (detect_period): autocorrelation peaks of the differenced series, at several time
  scales, with a significance bound; refined to the step.
"""

from __future__ import annotations

from datetime import datetime
from statistics import NormalDist

import numpy as np

PERIOD_ALPHA = 0.001  # chance of finding a period in a rhythmless series (all lags together)
WEEK_GAIN = 0.1  # a weekly period must cut the same-phase error of a daily one by 10 %
REGULAR_JITTER = 0.15  # a step within 15 % of the median step is regular
# The step grid may hold at most this many steps per point: gaps longer than that (years of
# seconds between two rows) are not sampling, and filling them would exhaust memory.
MAX_GRID_PER_POINT = 20
FFT_FROM = 64  # moving averages over more points than this are computed by FFT
MIN_PERIOD_POINTS = 16  # four cycles of four steps at the least


def grid_positions(times: list[datetime]) -> tuple[np.ndarray, float | None]:
    """(step number of each point, step in seconds) when the sampling is regular with gaps;
    (row number, None) when it is not, so a period then counts rows."""
    n = len(times)
    if n < 3:
        return np.arange(n), None
    seconds = np.array([(t - times[0]).total_seconds() for t in times])
    diffs = np.diff(seconds)
    step = float(np.median(diffs))
    if step <= 0:
        return np.arange(n), None
    ratio = diffs / step
    steps = np.rint(ratio)
    if np.any(steps < 1) or np.any(np.abs(ratio - steps) > REGULAR_JITTER * steps):
        return np.arange(n), None
    if steps.sum() > MAX_GRID_PER_POINT * n:
        return np.arange(n), None
    return np.concatenate([[0], np.cumsum(steps)]).astype(int), step


def _filled(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The series on every step, gaps bridged by straight lines."""
    grid = np.arange(positions[-1] + 1)
    return np.interp(grid, positions, values)


def _winsorized(d: np.ndarray) -> np.ndarray | None:
    """d clipped at 5 robust standard deviations and centred; None when it is constant."""
    centre = np.median(d)
    spread = 1.4826 * np.median(np.abs(d - centre)) or 1.2533 * np.mean(np.abs(d - centre))
    if spread == 0:
        return None
    d = np.clip(d, centre - 5 * spread, centre + 5 * spread)
    return d - d.mean()


def _autocorrelation(d: np.ndarray, max_lag: int) -> np.ndarray:
    """1 - D(k) / (2 var) for k = 0..max_lag, D(k) the mean squared difference of the points k
    apart: exactly 1 at the period of a noise-free rhythm (the usual estimator is not)."""
    n = len(d)
    spectrum = np.fft.rfft(d, 2 * n)
    cross = np.fft.irfft(spectrum * np.conj(spectrum), 2 * n)[: max_lag + 1]
    squares = np.concatenate([[0.0], np.cumsum(d ** 2)])
    lags = np.arange(max_lag + 1)
    head = squares[n - lags]  # sum of d[t]^2, t < n - k
    tail = squares[n] - squares[lags]  # sum of d[t]^2, t >= k
    return 1 - (head + tail - 2 * cross) / (n - lags) / (2 * float(np.mean(d ** 2)))


def _differenced_peak(series: np.ndarray, min_lag: int, alpha: float) -> int | None:
    """The lag of the rhythm in `series` by the autocorrelation of its differences, or None.

    Differencing keeps a trend, a level shift or a wandering level from passing for a rhythm,
    and winsorizing at 5 robust standard deviations keeps one wild point from masking one. With
    no rhythm, the autocorrelations beyond lag 1 of a differenced series have variance about
    (1 + 2 r1^2) / (n - k) (Bartlett); a peak counts when it beats that times the normal quantile
    for `alpha` shared over all the lags tried (up to a quarter of the series: four cycles at
    least). Of the peaks that count, the shortest one within two standard errors of the highest
    that also peaks at each of its multiples up to that one wins (a rhythm peaks at multiples)."""
    d = _winsorized(np.diff(series))
    n = 0 if d is None else len(d)
    max_lag = n // 4
    if max_lag <= min_lag:
        return None  # too short, or a straight line: no rhythm to find
    acf = _autocorrelation(d, max_lag + 1)
    quantile = NormalDist().inv_cdf(1 - alpha / (2 * (max_lag - min_lag + 1)))
    error = np.sqrt((1 + 2 * acf[1] ** 2) / (n - np.arange(max_lag + 2)))
    bound = quantile * error
    peaks = [k for k in range(min_lag, max_lag + 1)
             if acf[k] > bound[k] and acf[k] >= acf[k - 1] and acf[k] >= acf[k + 1]]
    if not peaks:
        return None
    best = max(peaks, key=lambda k: acf[k])

    def fundamental(k: int) -> bool:
        multiples = [m for m in range(2 * k, best + 2, k) if m <= max_lag]
        return acf[k] >= acf[best] - 2 * error[best] and all(acf[m - 1:m + 2].max() > bound[m] for m in multiples)

    return next(k for k in peaks if fundamental(k))


def _refined(filled: np.ndarray, rough: int) -> tuple[int, float] | None:
    """(period, strength) near `rough` (-20 %/+25 %): where the series less its moving average
    over one cycle repeats best (the vertex of a parabola through the autocorrelation around its
    highest lag, so noise on a flat peak does not pull it aside), and that autocorrelation
    (1: a perfect rhythm). Twice, the second time less the refined cycle's average. None when
    the series is too short to tell."""
    found = rough
    for _ in range(2):
        low, high = max(2, int(found * 0.8)), int(np.ceil(found * 1.25))
        rest = _less_cycle_mean(filled, found)
        if rest is None or high >= len(rest) // 2:
            return None
        local = _autocorrelation(rest, high + 1)
        top = low + int(np.argmax(local[low:high + 1]))
        width = max(1, top // 20)
        lags = np.arange(max(2, top - width), min(high + 1, top + width) + 1)
        found = _vertex(lags, local[lags], top)
    return found, float(local[found])


def _vertex(lags: np.ndarray, acf: np.ndarray, top: int) -> int:
    """The lag of the top of a parabola fitted through the autocorrelation at `lags` around
    `top`, kept among those lags; `top` itself when no parabola opening down can be fitted."""
    if len(lags) < 3:
        return top  # two points fix no parabola
    a, b, _ = np.polynomial.polynomial.polyfit(lags - top, acf, 2)[::-1]
    if a >= 0:
        return top
    return int(np.clip(top + round(-b / (2 * a)), lags[0], lags[-1]))


def detect_period(values: np.ndarray, positions: np.ndarray,
                  step_seconds: float | None = None) -> tuple[int | None, float]:
    """(period in steps or None, its strength: the autocorrelation at the period of the series
    less its moving average over one cycle).

    Differencing (see _differenced_peak) drowns a slow rhythm in fast noise (a daily cycle of
    5-minute points, say), so the search runs on the series and on its means over blocks of 2,
    4, 8, ... steps (at least 64 blocks), PERIOD_ALPHA shared over them; each find is refined to
    the step on the full series. Of the finds, the shortest one whose strength is within two
    standard errors of the strongest wins. A daily period of a time-stamped series is then
    checked for a weekly one."""
    filled = _filled(values, positions)
    n = len(filled)
    if n < MIN_PERIOD_POINTS:
        return None, 0.0
    sizes = [1] + [2 ** e for e in range(1, 32) if n // 2 ** e >= 64]
    finds: dict[int, float] = {}
    for size in sizes:
        blocks = filled[: n // size * size].reshape(-1, size).mean(axis=1)
        # A block of 2+ steps looks for rhythms of 4+ blocks; shorter ones are the finer scale's.
        lag = _differenced_peak(blocks, 2 if size == 1 else 4, PERIOD_ALPHA / len(sizes))
        refined = _refined(filled, lag * size) if lag else None
        if refined:
            finds[refined[0]] = max(refined[1], finds.get(refined[0], -1.0))
    if not finds:
        return None, 0.0
    strongest = max(finds.values())
    found = min(p for p, r in finds.items() if r >= strongest - 2 / np.sqrt(n - p))
    week = round(7 * 86400 / step_seconds) if step_seconds else 0
    if step_seconds and abs(found * step_seconds / 86400 - 1) < 0.02 and 4 * week <= n:
        # A daily rhythm may hide a weekly one (weekends): the week wins when comparing a point
        # with the same hour a week before, rather than a day before, cuts the mean squared
        # difference by WEEK_GAIN at least, and by more than two standard errors.
        rest = _less_cycle_mean(filled, week)
        if rest is not None:
            local = _autocorrelation(rest, week + 1)
            gain = local[week - 1:week + 2].max() - local[found]
            if gain > max(WEEK_GAIN * (1 - local[found]), 2 / np.sqrt(len(rest) - week)):
                found = week - 1 + int(np.argmax(local[week - 1:week + 2]))
                return found, float(local[found])
    return found, finds[found]


def _less_cycle_mean(filled: np.ndarray, period: int) -> np.ndarray | None:
    """The series less its moving average over one period (trend gone, rhythm kept), ends cut."""
    rest = filled - _centred(filled, _cycle_weights(period))
    half = period // 2 + 1
    return _winsorized(rest[half:len(rest) - half]) if len(rest) > 3 * period else None


def _centred(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """np.convolve(x, weights, mode="same") for an odd number of weights, by FFT when the
    direct sum would cost more (n x weights operations: minutes for a million points and a day
    of minutes)."""
    if len(weights) <= FFT_FROM:
        return np.convolve(x, weights, mode="same")
    size = 1 << int(np.ceil(np.log2(len(x) + len(weights) - 1)))
    full = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(weights, size), size)
    half = len(weights) // 2
    return full[half:half + len(x)]


def _cycle_weights(period: int) -> np.ndarray:
    """Weights of the centred moving average over one period (2 x p for an even p, as in
    classical decomposition): exact on a straight line, and cancels any shape that repeats."""
    half = period // 2
    weights = np.ones(2 * half + 1) if period % 2 else np.r_[0.5, np.ones(2 * half - 1), 0.5]
    return weights / weights.sum()


def _cycle_means(values: np.ndarray, positions: np.ndarray, period: int) -> np.ndarray:
    """Per point, the mean of the full cycle centred on it (2 x p for even p, as in classical
    decomposition; exact on a straight line, and cancels any shape that repeats every p steps);
    NaN near the ends or where over half the cycle is gap."""
    filled = _filled(values, positions)
    present = np.zeros(len(filled))
    present[positions] = 1.0
    half = period // 2
    means = _centred(filled, _cycle_weights(period))
    coverage = _centred(present, np.ones(2 * half + 1) / (2 * half + 1))
    out = means[positions]
    inside = (positions >= half) & (positions < len(filled) - half) & (coverage[positions] >= 0.5)
    return np.where(inside, out, np.nan)


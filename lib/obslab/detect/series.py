"""`obslab detect-series`: the generic detectors on any single metric series from a CSV file.

The file is read into points (one per instant, `series_io`); each point is judged against a
baseline built from the points before it (`baseline`); anomalous points are grouped into
episodes, and each episode with the evidence (`pages`) raises one alert, at its start, unless it
follows a page the same way within a hold-off and is not clearly worse (`series_alerts`).

- Seasonality. `--period N` steps, or detected (`period.detect_period`). With a period, a point's
  seasonal part is the median, over the same phase in its last K_MAX cycles (K_MIN at least,
  anomalous points left out), of how far that point was above the mean of the cycle centred on
  it. A noise-free rhythm is then removed exactly.
- Baseline. The seasonally adjusted points of the current level (at most a window: LOOKBACK
  points or a cycle) give a robust line, an AR(1) pull and robust scales (`baseline.fit_baseline`).
- Rules. `spike`: a point whose one-step surprise is more than the z threshold robust standard
  deviations. Sustained moves: a two-sided CUSUM (Page) of the deviations from the line, in
  long-run standard deviations, clipped to +-CLIP; on alarm the move is judged with a window of
  hindsight (_Scorer.settle): a `shift` if the level is still out over the window and at its
  end (reported once, where it began; the new level becomes the baseline), else a departure
  that came back (a `spike` episode) when its points add up to more than the z threshold in
  standard errors, else noise.
- Episodes. Anomalous points at most EPISODE_GAP points apart form one episode, widened to the
  neighbours still half the threshold out; it has start, end, peak and score (peak |z|).
"""

from __future__ import annotations

import bisect
from collections import deque
from pathlib import Path
from statistics import NormalDist, median

import numpy as np

from obslab.detect.baseline import MIN_HISTORY, Baseline, fit_baseline, poisson_z
from obslab.detect.period import _cycle_means, detect_period, grid_positions
from obslab.detect.series_alerts import hold_off
from obslab.detect.series_result import Episode, Point, Result
from obslab.detect.series_io import TIMESTAMP_POLICIES, Series, SeriesError, read_series_csv

__all__ = ["Episode", "Point", "Result", "Series", "SeriesError", "TIMESTAMP_POLICIES", "detect", "detect_csv",
           "detect_period", "grid_positions", "read_series_csv", "score_series"]

# The level window without a period (with one: at least a cycle). The scale of a shorter one
# wobbles enough to double the false alarms in white noise (measured at 60).
LOOKBACK = 120
# CUSUM allowance and limit in robust standard deviations: K = 0.75 targets moves of 1.5 sd and
# more; with H = 6, independent normal points with a known level raise an alarm about once in
# 25,000 points (simulated). The hindsight of settle() then drops most alarms that are noise.
CLIP, CUSUM_K, CUSUM_H = 3.0, 0.75, 6.0
# A seasonal part from fewer than 3 earlier cycles is not robust: one odd cycle would echo.
K_MIN, K_MAX = 3, 5
EPISODE_GAP = 2  # anomalous points at most this many points apart are one episode
SMALL_COUNT = 50.0  # counts with a smaller expected total are checked as Poisson counts
# Paging: a level that moved by less than 2 standard deviations stays inside the band the series
# shows every day (the baseline follows it, nobody is paged); a lone point is one sample of a
# heavy-tailed metric and pages only 40 % beyond the threshold (z 7 at the default 5).
SHIFT_ALERT_SD, ONE_POINT_ALERT = 2.0, 1.4
# Calibration: the 99th percentile of the last 2,000 one-step |z| (about a day and a half of
# minutes, three months of hours) shows how heavy the series' tail is; anomalies are rarer than
# 1 in 100 points, so they do not set it. From 200 points on (before, the tail is unknown).
TAIL_QUANTILE, CALIBRATION_POINTS, CALIBRATION_MIN = 0.9, 2000, 200
NORMAL_TAIL = NormalDist().inv_cdf(1 - (1 - TAIL_QUANTILE) / 2)  # the same percentile of a normal |z|


class _Scorer:
    """One pass over a series: z per point against its baseline, spikes, and confirmed moves.

    State: `adjusted` caches each point without its seasonal part; `excluded` marks anomalous
    points, kept out of later seasonal parts and levels; `history` holds the clean points of the
    current level (it restarts at a shift)."""

    def __init__(self, values: list[float], positions: np.ndarray, period: int | None, z_threshold: float,
                 min_relative: float):
        self.x = np.asarray(values, dtype=float)
        self.positions = positions
        self.period = period
        self.z_threshold = z_threshold
        self.min_relative = min_relative
        # Counts (whole numbers, none negative) of a small mean are judged as counts too: an
        # anomaly must also be unlikely for a Poisson count of the expected mean.
        self.counts = bool(np.all(self.x >= 0) and np.all(self.x == np.round(self.x)))
        self.recent_mean = 0.0  # of the values the current baseline was fitted to
        n = len(self.x)
        self.index_of = {int(p): i for i, p in enumerate(positions)}
        self.cycle_mean = _cycle_means(self.x, positions, period) if period else None
        self.window = max(LOOKBACK, period or 0)
        # A departure is the best of many runs the CUSUM could have picked: its bar is the z of the
        # spike rule's tail chance shared over the run lengths up to a window (one per doubling).
        tail = NormalDist().cdf(-z_threshold) / (1 + np.log2(self.window))
        self.departure_threshold = -NormalDist().inv_cdf(tail)
        self.z = np.full(n, np.nan)
        self.expected = np.full(n, np.nan)
        self.adjusted = np.full(n, np.nan)
        self.excluded = np.zeros(n, dtype=bool)
        self.history: list[int] = []
        self.recent_z: list[float] = []  # |z| before calibration of the last judged points, sorted
        self.recent_order: deque[float] = deque()  # the same, in time order
        self.slope = 0.0
        self.shifts: list[tuple[int, float, float]] = []  # (where it began, signed size in sd, old level there)
        self.departures: list[tuple[int, int]] = []  # (first, last) point of a move that came back

    def seasonal(self, i: int) -> float | None:
        """What point i's phase was above its cycle's mean, over its last K_MAX clean cycles."""
        if not self.period:
            return 0.0
        samples = []
        for k in range(1, K_MAX + 1):
            j = self.index_of.get(int(self.positions[i]) - k * self.period)
            if j is not None and not self.excluded[j] and not np.isnan(self.cycle_mean[j]):
                samples.append(self.x[j] - self.cycle_mean[j])
        return median(samples) if len(samples) >= K_MIN else None

    def adjust(self, i: int) -> bool:
        if np.isnan(self.adjusted[i]):
            part = self.seasonal(i)
            if part is None:
                return False
            self.adjusted[i] = self.x[i] - part
        return True

    def baseline(self) -> Baseline:
        recent = np.array(self.history[-self.window:])
        base = fit_baseline(self.positions[recent], self.adjusted[recent], self.x[recent], self.min_relative, self.slope)
        self.slope = base.slope
        self.recent_mean = float(np.mean(self.x[recent]))
        return base

    def judge(self, i: int, base: Baseline) -> float:
        """z of point i: its one-step surprise against the baseline."""
        position = int(self.positions[i])
        predicted = base.predict(position)
        self.expected[i] = self.x[i] - self.adjusted[i] + predicted
        raw = (self.adjusted[i] - predicted) / base.surprise_scale(position)
        self.z[i] = raw / self.calibration()
        self.remember(i, raw)
        return self.z[i]

    def calibration(self) -> float:
        """How much heavier the tail of the recent one-step z's is than a normal's (1 at least):
        their TAIL_QUANTILE over the last CALIBRATION_POINTS judged points against the normal's.
        A model that misses part of a series' structure (a rhythm that drifts, bursts that are
        the series' habit) is judged by the errors it actually makes, not the ones it assumes."""
        if len(self.recent_z) < CALIBRATION_MIN:
            return 1.0
        return max(1.0, self.recent_z[int(TAIL_QUANTILE * (len(self.recent_z) - 1))] / NORMAL_TAIL)

    def remember(self, i: int, raw: float) -> None:
        """Keep |raw z| of point i among the recent ones (sorted), the oldest leaving."""
        bisect.insort(self.recent_z, abs(raw))
        self.recent_order.append(abs(raw))
        if len(self.recent_order) > CALIBRATION_POINTS:
            gone = self.recent_order.popleft()
            del self.recent_z[bisect.bisect_left(self.recent_z, gone)]

    def deviation(self, i: int, base: Baseline) -> tuple[float, float]:
        """(z, expected) of point i against the baseline's level alone: how far out, not how
        surprising."""
        level = base.level(int(self.positions[i]))
        return (self.adjusted[i] - level) / base.spread, self.x[i] - self.adjusted[i] + level

    def unlikely_count(self, points: list[int], threshold: float, judged: dict | None = None) -> bool:
        """For a series of counts whose expected total here is small (under SMALL_COUNT), whether
        the points' total is beyond `threshold` as a Poisson count; True for other series."""
        if not self.counts:
            return True
        # The baseline follows the median, which for rare counts is 0: the rate is their mean.
        expected = sum(max(judged[j][1] if judged else self.expected[j], self.recent_mean) for j in points)
        if expected >= SMALL_COUNT:
            return True  # the normal approximation holds
        return poisson_z(float(self.x[points].sum()), expected) > threshold

    def keep_or_exclude(self, i: int) -> None:
        """A judged point is a spike (kept out of the baseline) or joins the history."""
        if abs(self.z[i]) > self.z_threshold and self.unlikely_count([i], self.z_threshold):
            self.excluded[i] = True
        else:
            self.history.append(i)

    def run(self) -> _Scorer:
        high = low = 0.0
        high_from = low_from = None  # where each CUSUM side last left zero
        i, n = 0, len(self.x)
        while i < n:
            if not self.adjust(i):
                i += 1
                continue
            if len(self.history) < MIN_HISTORY:
                self.history.append(i)
                i += 1
                continue
            base = self.baseline()
            self.judge(i, base)
            # The CUSUM adds up deviations from the level, in units of their long-run standard
            # deviation (spread x sqrt((1 + phi) / (1 - phi))): one-step surprises would hide a
            # shift in a series whose noise wanders, after its first step.
            drift = (self.adjusted[i] - base.level(int(self.positions[i]))) / base.long_run
            clipped = max(-CLIP, min(CLIP, drift))
            high_from = (i if high == 0 else high_from) if high + clipped - CUSUM_K > 0 else None
            low_from = (i if low == 0 else low_from) if low - clipped - CUSUM_K > 0 else None
            high = max(0.0, high + clipped - CUSUM_K)
            low = max(0.0, low - clipped - CUSUM_K)
            if high > CUSUM_H or low > CUSUM_H:
                sign = 1 if high > CUSUM_H else -1
                i = self.settle(self.began(high_from if sign > 0 else low_from, i, sign, base), i, sign, base)
                high = low = 0.0
                high_from = low_from = None
                continue
            self.keep_or_exclude(i)
            i += 1
        return self

    def began(self, run_start: int, confirmed: int, sign: int, base: Baseline) -> int:
        """Where a move the CUSUM confirmed began: of the points since the CUSUM last left zero
        (the run may start early, on noise that leaned the same way), the start that makes the
        points from it on most unlike the old level (largest (sum of deviations)^2 / count)."""
        run = [j for j in range(run_start, confirmed + 1) if not np.isnan(self.adjusted[j])]
        out = np.array([sign * (self.adjusted[j] - base.level(int(self.positions[j]))) for j in run])
        tails = np.cumsum(out[::-1])[::-1]  # sum from each start to the end
        evidence = np.where(tails > 0, tails ** 2 / (len(out) - np.arange(len(out))), 0.0)
        return run[int(np.argmax(evidence))]

    def settle(self, began: int, confirmed: int, sign: int, base: Baseline) -> int:
        """Decide, with a window's hindsight, what a move the CUSUM confirmed was: a level shift
        (out over the window and still out at its end), a departure that came back (its points
        out by more than the z threshold in standard errors of their mean), or noise. Record it
        and return the point to resume at."""
        n = len(self.x)
        ahead = [j for j in range(began, min(n, began + self.window)) if self.adjust(j)]
        judged = {j: self.deviation(j, base) for j in ahead}
        out = {j: sign * z for j, (z, _) in judged.items()}  # how far out, in the move's direction
        size = median(out.values())
        tail = median(out[j] for j in ahead[-MIN_HISTORY:])
        resume = confirmed + 1
        if size > 1.0 and tail > 1.0:
            new = ahead[:MIN_HISTORY]
            self.shifts.append((began, sign * size, judged[began][1]))
            self.z[new] = np.nan
            self.expected[new] = np.nan
            self.excluded[new] = False  # spikes among them were the move
            self.history = list(new)
            resume = new[-1] + 1
        else:
            end = confirmed
            for j in ahead:
                if j > confirmed and out[j] > 1.0:
                    end = j
                elif j > end + EPISODE_GAP:
                    break
            span = [j for j in ahead if j <= end]
            # Points of a series whose noise wanders (phi) are not independent: the evidence of
            # m of them is that of m (1 - phi) / (1 + phi) independent ones.
            evidence = sum(out[j] for j in span) / np.sqrt(len(span)) * np.sqrt((1 - base.phi) / (1 + base.phi))
            if evidence > self.departure_threshold and self.unlikely_count(span, self.departure_threshold,
                                                                               judged):
                for j in span:
                    self.z[j], self.expected[j] = judged[j]
                self.excluded[began:end + 1] = True
                self.departures.append((began, end))
                resume = end + 1
            else:  # a false alarm: the point is judged on its own
                self.keep_or_exclude(confirmed)
        # Points looked at ahead of time are judged again from the resume point, with what is known then.
        later = [j for j in ahead if j >= resume]
        self.adjusted[later] = np.nan
        self.z[later] = np.nan
        self.expected[later] = np.nan
        return resume


def score_series(values: list[float], positions: np.ndarray, period: int | None, z_threshold: float,
                 min_relative: float = 0.01) -> _Scorer:
    """Judge every point of a series (see the module docstring); the scorer holds the outcome."""
    return _Scorer(values, positions, period, z_threshold, min_relative).run()


def _episodes(scored: _Scorer) -> list[tuple[int, int, int, str, float]]:
    """(start, end, peak, kind, score) per episode, in time order."""
    z, threshold = scored.z, scored.z_threshold
    n = len(z)
    spans: list[list[int]] = [[a, b] for a, b in scored.departures]
    shift_at = {i for i, _, _ in scored.shifts}
    in_departure = np.zeros(n, dtype=bool)
    for a, b in scored.departures:
        in_departure[a:b + 1] = True
    for i in np.flatnonzero(scored.excluded & ~in_departure):
        if i in shift_at:
            continue
        # Widen a spike to its neighbours still half the threshold out in the same direction.
        a = b = int(i)
        sign = np.sign(z[i])
        while a > 0 and not np.isnan(z[a - 1]) and sign * z[a - 1] > threshold / 2 and a - 1 not in shift_at:
            a -= 1
        while b < n - 1 and not np.isnan(z[b + 1]) and sign * z[b + 1] > threshold / 2 and b + 1 not in shift_at:
            b += 1
        spans.append([a, b])
    spans.sort()
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1] + EPISODE_GAP + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    found = []
    for a, b in merged:
        part = np.abs(np.nan_to_num(z[a:b + 1]))
        peak = a + int(np.argmax(part))
        found.append((a, b, peak, "spike", float(part.max())))
    for began, size, _ in scored.shifts:
        found.append((began, began, began, "shift", size))
    return sorted(found)


def pages(kind: str, points: int, score: float, z_threshold: float) -> bool:
    """Whether an episode has the evidence to page someone: a level shift of at least
    SHIFT_ALERT_SD standard deviations; a departure of one point, beyond ONE_POINT_ALERT x the z
    threshold; a longer departure, as found."""
    if kind == "shift":
        return score >= SHIFT_ALERT_SD
    return points > 1 or score >= ONE_POINT_ALERT * z_threshold


def detect(series: Series, z_threshold: float, period: int | None = None) -> Result:
    """Judge a series read by read_series_csv. `period`: None detects it, 0 or 1 means none."""
    values = np.asarray(series.values, dtype=float)
    positions, step = grid_positions(series.times)
    if period is None:
        found, strength = detect_period(values, positions, step)
        source = "detected" if found else "none"
    else:
        found, strength = (period if period >= 2 else None), None
        source = "given" if found else "none"
        span = int(positions[-1]) + 1
        if found and span < (K_MIN + 1) * found:
            raise SeriesError(f"--period {found} needs at least {(K_MIN + 1) * found} steps ({K_MIN} earlier cycles "
                              f"before the first judged one); the series spans {span}")
    scored = score_series(series.values, positions, found, z_threshold)
    episodes = _episodes(scored)
    shift_sizes = {i: size for i, size, _ in scored.shifts}
    shift_levels = {i: level for i, _, level in scored.shifts}
    per_point: dict[int, tuple[str, int]] = {}
    out_episodes = []
    for number, (a, b, peak, kind, score) in enumerate(episodes):
        for i in range(a, b + 1):
            per_point[i] = (kind, number)
        sign = np.sign(shift_sizes[a]) if kind == "shift" else np.sign(scored.z[peak])
        out_episodes.append(Episode(
            start=series.texts[a], end=series.texts[b], peak=series.texts[peak], kind=kind,
            direction="up" if sign > 0 else "down", score=round(abs(score), 3), points=b - a + 1,
            value=series.values[peak],
            expected=_rounded(shift_levels[a] if kind == "shift" else scored.expected[peak]),
            alert=bool(pages(kind, b - a + 1, float(abs(score)), z_threshold))))
    out_episodes = hold_off(out_episodes, [series.times[a] for a, *_ in episodes])
    points = []
    for i, (text, value) in enumerate(zip(series.texts, series.values)):
        kind, number = per_point.get(i, (None, None))
        score = abs(shift_sizes[i]) if kind == "shift" else scored.z[i]
        points.append(Point(text, value, None if np.isnan(score) else round(abs(float(score)), 3), kind is not None,
                            kind, _rounded(scored.expected[i]), number))
    judged = np.flatnonzero(~np.isnan(scored.z))
    summary = {
        "rows": series.rows, "points": len(series.values), "missing": series.missing, "reordered": series.reordered,
        "combined": series.combined, "step_seconds": step,
        "gaps": int(positions[-1] + 1 - len(positions)) if step else None,
        "period": found, "period_source": source,
        "period_strength": None if strength is None else round(strength, 3),
        "judged": int(len(judged)), "judged_from": series.texts[judged[0]] if len(judged) else None,
        "episodes": len(out_episodes),
    }
    return Result(points, out_episodes, summary)


def _rounded(value) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 6)


def detect_csv(path: Path, time_col: str, value_col: str, z_threshold: float, period: int | None = None,
               timestamps: str = "mean") -> Result:
    """Read a CSV series and judge it (see the module docstring)."""
    return detect(read_series_csv(path, time_col, value_col, timestamps), z_threshold, period)

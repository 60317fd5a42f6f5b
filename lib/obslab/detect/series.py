"""`obslab detect-series`: the generic detectors on any single metric series from a CSV file.

The file is read into points (one per instant); each point is judged against a baseline built
from the points before it; anomalous points are grouped into episodes.

- Time stamps. By default rows are sorted by instant and rows sharing an instant are combined
  (mean; or sum, first, last): a daylight-saving repeat or a late row is a thing a user can mean,
  and the summary says how many rows were moved or combined. `strict` refuses both, naming the
  row. Times with different UTC offsets compare as instants; a file that mixes times with and
  without an offset is refused (it has no single meaning).
- Sampling. When rows come at a regular step (within 15 %, so calendar months count), a missing
  step is a gap: a point's phase in a cycle is its step number, not its row number.
- Seasonality. `--period N` steps, or detected (detect_period): autocorrelation peaks of the
  differenced series, at several time scales, with a significance bound; refined to the step.
  With a period, a point's seasonal part is the median, over the same phase in its last K_MAX
  cycles (K_MIN at least, anomalous points left out), of how far that point was above the mean
  of the cycle centred on it. A noise-free rhythm is then removed exactly.
- Baseline (_fit). The seasonally adjusted points of the current level (at most a window:
  LOOKBACK points or a cycle) give a robust line, the lag-1 pull of its deviations (AR(1), for
  series whose noise wanders; kept only when significant) and robust scales.
- Rules. `spike`: a point whose one-step surprise is more than the z threshold robust standard
  deviations. Sustained moves: a two-sided CUSUM (Page) of the deviations from the line, in
  long-run standard deviations, clipped to +-CLIP; on alarm the move is judged with a window of
  hindsight (_Scorer.settle): a `shift` if the level is still out over the window and at its
  end (reported once, where it began; the new level becomes the baseline), else a departure
  that came back (a `spike` episode) when its points add up to more than the z threshold in
  standard errors, else noise.
- Episodes. Anomalous points at most EPISODE_GAP points apart form one episode, widened to the
  neighbours still half the threshold out; it has start, end, peak and score (peak |z|).

Input errors name the column or the row (1 = the first data row).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import NormalDist, median

import numpy as np

from obslab.errors import ObslabError

# Points of a level before the first judgement, and after a shift: a robust scale from 12 made
# one series in 30 raise a false alarm in its first points (measured on white noise).
MIN_HISTORY = 24
# The level window without a period (with one: at least a cycle). The scale of a shorter one
# wobbles enough to double the false alarms in white noise (measured at 60).
LOOKBACK = 120
# CUSUM allowance and limit in robust standard deviations: K = 0.75 targets moves of 1.5 sd and
# more; with H = 6, independent normal points with a known level raise an alarm about once in
# 25,000 points (simulated; once in 1,400 at the textbook K = 0.5, H = 6 used before). The
# hindsight of settle() then drops most alarms that are noise.
CLIP, CUSUM_K, CUSUM_H = 3.0, 0.75, 6.0
# A seasonal part from fewer than 3 earlier cycles is not robust: one odd cycle would echo.
K_MIN, K_MAX = 3, 5
PERIOD_ALPHA = 0.001  # chance of finding a period in a rhythmless series (all lags together)
PHI_MAX = 0.95  # the pull of the last point is capped: a series is never taken for a pure random walk
WEEK_GAIN = 0.1  # a weekly period must cut the same-phase error of a daily one by 10 %
EPISODE_GAP = 2  # anomalous points at most this many points apart are one episode
SMALL_COUNT = 50.0  # counts with a smaller expected total are checked as Poisson counts
REGULAR_JITTER = 0.15  # a step within 15 % of the median step is regular
TIMESTAMP_POLICIES = ("mean", "sum", "first", "last", "strict")


class SeriesError(ObslabError):
    """A metric series file cannot be used; names the column or row and why."""


@dataclass(frozen=True)
class Series:
    """The points of a file, one per instant, ascending, and what reading them changed."""

    texts: list[str]  # timestamp as written (the first row of an instant)
    times: list[datetime]
    values: list[float]
    rows: int  # data rows read
    reordered: int  # rows that came after a later instant
    combined: int  # rows folded into another row of the same instant


@dataclass(frozen=True)
class Point:
    timestamp: str
    value: float
    score: float | None  # |z|; None where the point was not judged (history still building)
    anomalous: bool
    rule: str | None = None  # spike | shift
    expected: float | None = None
    episode: int | None = None  # index into Result.episodes


@dataclass(frozen=True)
class Episode:
    start: str
    end: str
    peak: str
    kind: str  # spike: a departure that came back | shift: a level change that stayed
    direction: str  # up | down
    score: float  # peak |z|; for a shift, the size of the move in robust standard deviations
    points: int
    value: float  # at the peak
    expected: float | None  # the baseline at the peak (for a shift: the old level where it began)


@dataclass(frozen=True)
class Result:
    points: list[Point]
    episodes: list[Episode]
    summary: dict = field(default_factory=dict)

    def as_dict(self, all_points: bool = False) -> dict:
        """The `obslab detect-series --json` form; `all_points` adds every point with its expected value."""
        out = {
            "series": self.summary,
            "episodes": [vars(e) for e in self.episodes],
            # Per anomalous point, as before episodes existed; `episode` indexes "episodes".
            "anomalies": [{"timestamp": p.timestamp, "score": p.score, "rule": p.rule, "episode": p.episode}
                          for p in self.points if p.anomalous],
        }
        if all_points:
            out["points"] = [{"timestamp": p.timestamp, "value": p.value, "expected": p.expected, "score": p.score}
                             for p in self.points]
        return out

    def header(self) -> str:
        """What was read: rows, points, repairs, the rhythm, where judging began."""
        info = self.summary
        repaired = (f"; {info['reordered']} rows sorted into place, {info['combined']} combined into others"
                    if info["reordered"] or info["combined"] else "")
        rhythm = f"period {info['period']} steps ({info['period_source']})" if info["period"] else "no seasonality"
        return (f"{info['rows']} rows, {info['points']} points{repaired}; {rhythm}; judged from "
                f"{info['judged_from'] or '(never: too few points)'}")

    def episode_lines(self) -> list[str]:
        """One line per anomalous episode."""
        return [f"{e.kind:<5}  {e.direction:<4}  {e.start if e.start == e.end else f'{e.start} .. {e.end}'}  "
                f"peak {e.peak}  value={e.value:g}  expected={e.expected if e.expected is None else f'{e.expected:g}'}"
                f"  score={e.score:.1f}" for e in self.episodes]

    def footer(self, z: float) -> str:
        """How many episodes of each kind among the judged points."""
        kinds = [e.kind for e in self.episodes]
        return (f"{len(kinds)} episodes ({kinds.count('spike')} spike, {kinds.count('shift')} shift) in "
                f"{self.summary['judged']} judged points (z threshold {z:g})")


# -- reading ----------------------------------------------------------------------------------

def read_series_csv(path: Path, time_col: str, value_col: str, timestamps: str = "mean") -> Series:
    """The file's points, validated; `timestamps` says what to do with unsorted or repeated times."""
    if timestamps not in TIMESTAMP_POLICIES:
        raise SeriesError(f"timestamp policy {timestamps!r} is not one of {', '.join(TIMESTAMP_POLICIES)}")
    try:
        with Path(path).open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise SeriesError(f"{path}: the file is empty; expected a header row with {time_col!r} and {value_col!r}")
            for col in (time_col, value_col):
                if col not in reader.fieldnames:
                    raise SeriesError(f"{path}: no column {col!r}; the columns are {reader.fieldnames}")
            rows = list(reader)
    except OSError as err:
        raise SeriesError(f"{path}: cannot read it: {err.strerror}") from None
    except UnicodeDecodeError:
        raise SeriesError(f"{path}: is not UTF-8 text; save it as UTF-8 CSV") from None
    if not rows:
        raise SeriesError(f"{path}: has a header but no data rows")
    parsed: list[tuple[str, datetime, float]] = []
    aware_row = naive_row = None
    for number, row in enumerate(rows, 1):
        text = (row[time_col] or "").strip()
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise SeriesError(f"{path}: row {number}: {time_col}={text!r} is not an ISO-8601 time") from None
        raw = (row[value_col] or "").strip()
        try:
            value = float(raw)
        except ValueError:
            raise SeriesError(f"{path}: row {number}: {value_col}={raw!r} is not a number") from None
        if not np.isfinite(value):
            raise SeriesError(f"{path}: row {number}: {value_col}={raw!r} is not a finite number")
        if when.utcoffset() is None:
            naive_row = naive_row or number
        else:
            aware_row = aware_row or number
        if aware_row and naive_row:
            other, has = (aware_row, "has no") if number == naive_row else (naive_row, "has a")
            raise SeriesError(f"{path}: row {number}: {time_col}={text!r} {has} UTC offset, unlike row {other}; "
                              "give every time an offset (e.g. +00:00) or none")
        if timestamps == "strict" and parsed:
            previous = parsed[-1][1]
            if when == previous:
                raise SeriesError(f"{path}: row {number}: duplicate timestamp {text!r} (strict; the default "
                                  "combines rows of the same instant by their mean)")
            if when < previous:
                raise SeriesError(f"{path}: row {number}: {text!r} is earlier than the row before; sort by "
                                  f"{time_col} (strict; the default sorts)")
        parsed.append((text, when, value))
    return _combine(parsed, timestamps)


def _combine(parsed: list[tuple[str, datetime, float]], how: str) -> Series:
    """Sort by instant (stable: rows of one instant keep file order) and fold repeated instants."""
    reordered, latest = 0, None
    for _, when, _ in parsed:
        if latest is not None and when < latest:
            reordered += 1
        latest = when if latest is None or when > latest else latest
    texts, times, groups = [], [], []
    for text, when, value in sorted(parsed, key=lambda r: r[1]):
        if times and when == times[-1]:
            groups[-1].append(value)
        else:
            texts.append(text)
            times.append(when)
            groups.append([value])
    fold = {"mean": lambda g: sum(g) / len(g), "sum": sum, "first": lambda g: g[0], "last": lambda g: g[-1],
            "strict": lambda g: g[0]}[how]
    return Series(texts, times, [float(fold(g)) for g in groups], len(parsed), reordered, len(parsed) - len(times))


# -- sampling and period ----------------------------------------------------------------------

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
        a, b, _ = np.polyfit(lags - top, local[lags], 2)
        found = top + int(round(-b / (2 * a))) if a < 0 and abs(b / (2 * a)) <= width else top
    return found, float(local[found])


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
    if n < 16:
        return None, 0.0  # four cycles of four steps at the least
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
    rest = filled - np.convolve(filled, _cycle_weights(period), mode="same")
    half = period // 2 + 1
    return _winsorized(rest[half:len(rest) - half]) if len(rest) > 3 * period else None


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
    means = np.convolve(filled, _cycle_weights(period), mode="same")
    coverage = np.convolve(present, np.ones(2 * half + 1) / (2 * half + 1), mode="same")
    out = means[positions]
    inside = (positions >= half) & (positions < len(filled) - half) & (coverage[positions] >= 0.5)
    return np.where(inside, out, np.nan)


# -- judging ----------------------------------------------------------------------------------

def _median(a: np.ndarray) -> float:
    """np.median without its overhead (this runs several times per point)."""
    half = len(a) // 2
    if len(a) % 2:
        return float(np.partition(a, half)[half])
    part = np.partition(a, (half - 1, half))
    return float(part[half - 1] + part[half]) / 2


def _scale(residuals: np.ndarray, floor: float) -> float:
    """1.4826 x MAD; when over half the residuals are equal (a mostly flat or mostly zero
    series, where MAD is 0) the root mean square deviation from their median; never below
    `floor`."""
    centre = _median(residuals)
    dev = np.abs(residuals - centre)
    mad = _median(dev)
    return max(1.4826 * mad if mad > 0 else float(np.sqrt(np.mean(dev ** 2))), floor, 1e-9)


def _robust_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Median of the slopes between each point and the one half the window later (a trend that
    outliers do not bend, in linear time), shrunk towards zero by twice its standard error: a
    trend within the noise is no trend, and extrapolating one would bias every later z."""
    half = len(x) // 2
    slopes = (y[half:2 * half] - y[:half]) / (x[half:2 * half] - x[:half])
    slope = float(_median(slopes))
    error = 1.2533 * 1.4826 * float(_median(np.abs(slopes - slope))) / np.sqrt(half)
    return float(np.sign(slope) * max(0.0, abs(slope) - 2 * error))


@dataclass(frozen=True)
class _Baseline:
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


def _fit(positions: np.ndarray, adjusted: np.ndarray, raw: np.ndarray, min_relative: float,
         slope_before: float) -> _Baseline:
    """Fit the level model to the clean points of the current level (positions ascending)."""
    floor = min_relative * float(_median(np.abs(raw)))
    # A slope from fewer than two history's worth of points is mostly noise: keep the one before.
    slope = _robust_slope(positions.astype(float), adjusted) if len(adjusted) >= 2 * MIN_HISTORY else slope_before
    intercept = float(_median(adjusted - slope * positions))
    deviations = adjusted - (intercept + slope * positions)
    spread = _scale(deviations, floor)
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
        scale = _scale(after - phi * before, floor)
    return _Baseline(slope, intercept, phi, int(positions[-1]), float(deviations[-1]), scale, spread)


def _poisson_z(observed: float, mean: float) -> float:
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

    def baseline(self) -> _Baseline:
        recent = np.array(self.history[-self.window:])
        base = _fit(self.positions[recent], self.adjusted[recent], self.x[recent], self.min_relative, self.slope)
        self.slope = base.slope
        self.recent_mean = float(np.mean(self.x[recent]))
        return base

    def judge(self, i: int, base: _Baseline) -> float:
        """z of point i: its one-step surprise against the baseline."""
        position = int(self.positions[i])
        predicted = base.predict(position)
        self.expected[i] = self.x[i] - self.adjusted[i] + predicted
        self.z[i] = (self.adjusted[i] - predicted) / base.surprise_scale(position)
        return self.z[i]

    def deviation(self, i: int, base: _Baseline) -> tuple[float, float]:
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
        return _poisson_z(float(self.x[points].sum()), expected) > threshold

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

    def began(self, run_start: int, confirmed: int, sign: int, base: _Baseline) -> int:
        """Where a move the CUSUM confirmed began: of the points since the CUSUM last left zero
        (the run may start early, on noise that leaned the same way), the start that makes the
        points from it on most unlike the old level (largest (sum of deviations)^2 / count)."""
        run = [j for j in range(run_start, confirmed + 1) if not np.isnan(self.adjusted[j])]
        out = np.array([sign * (self.adjusted[j] - base.level(int(self.positions[j]))) for j in run])
        tails = np.cumsum(out[::-1])[::-1]  # sum from each start to the end
        evidence = np.where(tails > 0, tails ** 2 / (len(out) - np.arange(len(out))), 0.0)
        return run[int(np.argmax(evidence))]

    def settle(self, began: int, confirmed: int, sign: int, base: _Baseline) -> int:
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
            expected=_rounded(shift_levels[a] if kind == "shift" else scored.expected[peak])))
    points = []
    for i, (text, value) in enumerate(zip(series.texts, series.values)):
        kind, number = per_point.get(i, (None, None))
        score = abs(shift_sizes[i]) if kind == "shift" else scored.z[i]
        points.append(Point(text, value, None if np.isnan(score) else round(abs(float(score)), 3), kind is not None,
                            kind, _rounded(scored.expected[i]), number))
    judged = np.flatnonzero(~np.isnan(scored.z))
    summary = {
        "rows": series.rows, "points": len(series.values), "reordered": series.reordered,
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

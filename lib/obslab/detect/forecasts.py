"""The forecasts: what the next window of a quantity should hold, from the last clean final windows.

`Trend` runs five forecasts side by side and uses the one whose recent one-step-ahead errors are
smallest: the median (a flat series), a line (a drift), a parabola (the turn of a slow rhythm), a
line through the last few points (a fast change), and a rhythm (a level and one sine wave fitted
to hours of points, see `fit_rhythm`). A forecast is plain data (`Polynomial`, `Wave`), so a
trend can be written down and read back exactly (`snapshot`, `from_snapshot`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, replace
from statistics import median

import numpy as np
from numpy.polynomial import polynomial

from obslab.detect.config import FLOOR, RIDGE, DetectorConfig
from obslab.detect.noise import Dispersion

MODELS = ("flat", "line", "parabola", "recent", "rhythm")


@dataclass(frozen=True)
class Polynomial:
    """c0 + c1 x + c2 x^2 ... at x steps past `origin`, held at `reach` steps beyond it."""

    coefficients: tuple[float, ...]
    origin: float
    reach: float

    def __call__(self, step: float) -> float:
        return float(polynomial.polyval(min(max(step - self.origin, 0.0), self.reach), self.coefficients))


@dataclass(frozen=True)
class Wave:
    """level + a sin(omega x) + b cos(omega x) at x steps past `origin`, held at `reach` steps beyond it."""

    level: float
    a: float
    b: float
    omega: float
    origin: float = 0.0
    reach: float = math.inf

    def __call__(self, step: float) -> float:
        x = min(max(step - self.origin, 0.0), self.reach)
        return float(self.level + self.a * math.sin(self.omega * x) + self.b * math.cos(self.omega * x))


def forecast_data(forecast: Polynomial | Wave) -> dict:
    """A forecast as plain data."""
    return {"type": type(forecast).__name__} | asdict(forecast)


def forecast_from(data: dict) -> Polynomial | Wave:
    """The forecast `forecast_data` wrote."""
    fields = {k: v for k, v in data.items() if k != "type"}
    if data["type"] == "Polynomial":
        return Polynomial(tuple(fields["coefficients"]), fields["origin"], fields["reach"])
    return Wave(**fields)


def least_squares(points: list[tuple[float, float]], degree: int) -> tuple[float, ...]:
    """Coefficients (c0, c1[, c2]) of the polynomial of `degree` closest to the points."""
    t = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    if len(np.unique(t)) <= degree:  # all points at too few steps: the mean, flat
        return (float(y.mean()),) + (0.0,) * degree
    return tuple(float(c) for c in polynomial.polyfit(t, y, degree))


class Trend:
    """Five forecasts of one quantity, each scored by its own recent one-step-ahead errors; the
    best scored is the forecast in use (`at`). How much more each misses from h = 2..horizon steps
    back than from one step back is kept too (`farther`): what forecasting across a gap adds.
    A polynomial reaches at most `polynomial_reach` steps past the newest point, the rhythm
    `horizon`; beyond, they hold, so a long gap (an incident) is not bridged by a curve.
    `flat_only`: the median alone (for latency, whose slow degradation is a fault to find)."""

    def __init__(self, cfg: DetectorConfig, flat_only: bool = False):
        self.cfg, self.flat_only = cfg, flat_only
        scored = cfg.scored_errors
        self.points: deque[tuple[float, float]] = deque(maxlen=cfg.trend_windows)  # (step, value)
        self.long: deque[tuple[float, float]] = deque(maxlen=cfg.rhythm_span)  # what the rhythm is fitted to
        self.errors = {name: deque(maxlen=scored) for name in MODELS}  # squared one-step errors
        # per point, the squared error of a forecast made h steps before it less that of the one made a step before
        self.ahead = {h: {name: deque(maxlen=scored) for name in MODELS} for h in range(2, cfg.horizon + 1)}
        self.earlier: deque[tuple[float, dict]] = deque(maxlen=cfg.horizon)  # (newest step, forecasts) as fitted then
        self.forecasts: dict[str, Polynomial | Wave] = {}
        self.period: float | None = None  # the rhythm's, as last found
        self.added = 0  # points added so far
        self.last = 0.0  # the newest point's step
        self._chosen: str | None = None  # the forecast in use (see `_choose`)
        self.rhythm_errors: list[tuple[float, float]] = []  # (value, forecast): the rhythm's, as it is now
        self._spread: tuple[int, Dispersion] | None = None  # (points added then, the spread): see `spread`

    def __len__(self) -> int:
        return len(self.points)

    def add(self, step: float, value: float) -> None:
        """Score the forecasts on a new point, then fit them again with it."""
        for name, forecast in self.forecasts.items():
            if name != "rhythm":  # the rhythm's errors are measured anew by `_score_rhythm`
                self.errors[name].append((value - forecast(step)) ** 2)
        if round(step - self.last) == 1:
            for newest, forecasts in self.earlier:
                h = round(step - newest)
                if h in self.ahead:
                    for name, forecast in forecasts.items():
                        if name in self.forecasts and name != "rhythm":
                            one_step = (value - self.forecasts[name](step)) ** 2
                            self.ahead[h][name].append((value - forecast(step)) ** 2 - one_step)
        self.points.append((step, value))
        if not self.flat_only:
            self.long.append((step, value))
        self.added += 1
        self.last = step
        self._fit()
        self._choose()
        self.earlier.append((step, self.forecasts))

    def spread(self, error_of, size: int) -> Dispersion:
        """The spread of the points about their level, as a `Dispersion` of `size`: each point's
        error `error_of(i, value, expected)` against the median of the others (the error the flat
        forecast would have made, had it known them). Kept until the points change."""
        if self._spread is None or self._spread[0] != self.added:
            values = [y for _, y in self.points]
            spread = Dispersion(size)
            for i, y in enumerate(values):
                spread.add(error_of(i, y, median(values[:i] + values[i + 1:])))
            self._spread = (self.added, spread)
        return self._spread[1]

    def restart(self) -> None:
        """Forget the recent level and how the forecasts fared (after a flash crowd it is unknown),
        except the rhythm's: a rhythm went on beneath the crowd, and it is what knows the level now."""
        self.points.clear()
        self._spread = None
        for errors in [self.errors, *self.ahead.values()]:
            for name, kept in errors.items():
                if name != "rhythm":
                    kept.clear()
        self.earlier.clear()
        self.forecasts = {name: f for name, f in self.forecasts.items() if name == "rhythm"}
        self._choose()

    def farther(self, step: float) -> float | None:
        """What forecasting `step` from the newest point adds to the mean square error of a
        one-step forecast, for the forecast in use: its recent squared errors from that far back
        less its one-step ones, point by point (paired, so the points' own noise cancels). None
        if not known yet."""
        h, best = round(step - self.last), self._chosen
        if h <= 1:
            return 0.0
        extra = self.ahead.get(h, {}).get(best) if best else None
        if not extra or len(extra) < self.cfg.min_scored:
            return None
        return max(sum(extra) / len(extra), 0.0)

    def at(self, step: float, lowest_after_gap: bool = False) -> float:
        """The forecast for `step`. `lowest_after_gap`: past a gap, the lower of the forecast in use
        and the median (the newest points may have been a surge's first, which a forecast from the
        last few follows); the rhythm, fitted to hours of points, stands alone."""
        best = self._chosen
        if best is None:
            return self.forecasts["flat"](step)
        value = self.forecasts[best](step)
        if lowest_after_gap and step - self.last > 1 and best != "rhythm":
            value = min(value, self.forecasts["flat"](step))
        return value

    def best(self, step: float) -> float | None:
        """The forecast in use for `step` (None before any is scored)."""
        best = self._chosen
        return None if best is None else max(self.forecasts[best](step), FLOOR)

    def stale(self, step: float, most: int) -> float:
        """Steps beyond the next since the newest point (at most `most`): the level may have moved
        meanwhile (a random walk), so the detectors widen the noise by that many level wobbles."""
        return min(max(step - self.last - 1, 0.0), most)

    def chosen(self) -> str | None:
        """The name of the forecast in use (None before any is scored)."""
        return self._chosen

    def _choose(self) -> None:
        # chosen when the scores change (a point added, a restart), not on every question asked
        scored = {name: sum(e) / len(e) for name, e in self.errors.items()
                  if len(e) >= self.cfg.min_scored and name in self.forecasts}
        self._chosen = min(scored, key=scored.get) if scored else None

    def _fit(self) -> None:
        cfg, last = self.cfg, self.last
        points = [(t - last, y) for t, y in self.points]  # the newest point at 0
        forecasts: dict[str, Polynomial | Wave] = {}
        reach = cfg.polynomial_reach
        if points:
            forecasts["flat"] = Polynomial((median(y for _, y in points),), last, reach)
        if not self.flat_only:
            if len(points) >= cfg.line_min_points:
                forecasts["line"] = Polynomial(least_squares(points, 1), last, reach)
                forecasts["recent"] = Polynomial(least_squares(points[-cfg.recent_points:], 1), last, reach)
            if len(points) >= cfg.parabola_min_points:
                forecasts["parabola"] = Polynomial(least_squares(points, 2), last, reach)
            # the whole grid of periods now and then, in between only around the period found
            self.period = None if self.added % cfg.rhythm_search_every == 0 else self.period
            fitted = fit_rhythm(self.long, cfg, self.period)
            if fitted is not None:  # periodic, so it may reach further without running away
                wave, self.period = fitted
                forecasts["rhythm"] = replace(wave, origin=last, reach=cfg.horizon)
                self._score_rhythm()
        self.forecasts = forecasts

    def _score_rhythm(self) -> None:
        # The rhythm as it is now: how its current period would have forecast the recent points,
        # one and h steps ahead, each from the points before it.
        cfg = self.cfg
        backtest = backtest_rhythm(self.long, self.period, cfg.rhythm_errors_kept, cfg)
        values = np.array([y for _, y in self.long][-cfg.rhythm_errors_kept:])
        one = backtest[1][-len(values):]
        known = ~np.isnan(one)
        self.rhythm_errors = [(float(v), float(f)) for v, f in zip(values[known], one[known])]
        scored = cfg.scored_errors
        self.errors["rhythm"] = deque(((values[known] - one[known]) ** 2)[-scored:], maxlen=scored)
        for h in range(2, cfg.horizon + 1):
            farther = backtest[h][-len(values):]
            both = known & ~np.isnan(farther)
            extra = (values[both] - farther[both]) ** 2 - (values[both] - one[both]) ** 2
            self.ahead[h]["rhythm"] = deque(extra[-scored:], maxlen=scored)

    def snapshot(self) -> dict:
        """The trend as plain data (see `from_snapshot`)."""
        def floats(errors):
            return {name: [float(e) for e in kept] for name, kept in errors.items()}

        return {"flat_only": self.flat_only, "points": [list(p) for p in self.points],
                "long": [list(p) for p in self.long], "errors": floats(self.errors),
                "ahead": {str(h): floats(errors) for h, errors in self.ahead.items()},
                "earlier": [[step, {n: forecast_data(f) for n, f in fs.items()}] for step, fs in self.earlier],
                "forecasts": {n: forecast_data(f) for n, f in self.forecasts.items()},
                "period": self.period, "added": self.added, "last": self.last,
                "rhythm_errors": [list(e) for e in self.rhythm_errors]}

    @classmethod
    def from_snapshot(cls, cfg: DetectorConfig, data: dict) -> Trend:
        """The trend `snapshot` wrote, as it was."""
        trend = cls(cfg, data["flat_only"])
        trend.points.extend(tuple(p) for p in data["points"])
        trend.long.extend(tuple(p) for p in data["long"])
        for name, kept in data["errors"].items():
            trend.errors[name].extend(kept)
        for h, errors in data["ahead"].items():
            for name, kept in errors.items():
                trend.ahead[int(h)][name].extend(kept)
        trend.earlier.extend((step, {n: forecast_from(f) for n, f in fs.items()}) for step, fs in data["earlier"])
        trend.forecasts = {n: forecast_from(f) for n, f in data["forecasts"].items()}
        trend.period, trend.added, trend.last = data["period"], data["added"], data["last"]
        trend.rhythm_errors = [tuple(e) for e in data["rhythm_errors"]]
        trend._choose()
        return trend


def fit_rhythm(points, cfg: DetectorConfig, near: float | None = None) -> tuple[Wave, float] | None:
    """A level and one sine wave by least squares over the points, its period the one (from
    `rhythm_shortest` steps to the span the points cover) with the smallest squared residuals: a
    coarse grid, then a fine one around its best. (the forecast x steps past the newest point,
    the period), or None when the points are too few or cover less than the shortest period.
    `near`: a period found before; only the fine grid around it is searched."""
    if len(points) < cfg.rhythm_min_points:
        return None
    t = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    t -= t[-1]
    span = 1.0 - t[0]
    shortest = cfg.rhythm_shortest
    if span < shortest:
        return None
    if near is None:
        grid = int(math.log(span / shortest) / math.log(cfg.rhythm_coarse)) + 1
        coarse = shortest * cfg.rhythm_coarse ** np.arange(grid)
        near = coarse[np.argmin(_residuals(t, y, coarse)[0])]
    fine = near * (1 + cfg.rhythm_fine * np.arange(-cfg.rhythm_fine_steps, cfg.rhythm_fine_steps + 1))
    fine = fine[(fine >= shortest) & (fine <= span)]
    if not len(fine):
        return None
    residuals, coefficients = _residuals(t, y, fine)
    i = int(np.argmin(residuals))
    level, a, b = coefficients[i]
    return Wave(level, a, b, 2 * math.pi / fine[i]), float(fine[i])


def backtest_rhythm(points, period: float, targets: int, cfg: DetectorConfig) -> dict[int, np.ndarray]:
    """How a rhythm of this period would have forecast the last `targets` points from h =
    1..`horizon` points before each: per h, the forecasts (NaN where fewer than
    `rhythm_min_points` came before), fitted on all the points up to then, by running sums."""
    t = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    t -= t[-1]
    omega = 2 * math.pi / period
    rows = np.stack([np.ones_like(t), np.sin(omega * t), np.cos(omega * t)], axis=1)
    sums = np.concatenate([np.zeros((1, 3, 3)), np.cumsum(rows[:, :, None] * rows[:, None, :], axis=0)])
    moments = np.concatenate([np.zeros((1, 3)), np.cumsum(rows * y[:, None], axis=0)])
    n = len(t)
    target = np.arange(max(n - targets, 0), n)
    out = {}
    for h in range(1, cfg.horizon + 1):
        upto = target - h + 1  # points before index upto are known h points before the target
        ok = upto >= cfg.rhythm_min_points
        forecast = np.full(len(target), np.nan)
        if ok.any():
            k = upto[ok]
            coefficients = np.linalg.solve(sums[k] + RIDGE * np.eye(3), moments[k][..., None])[..., 0]
            at = np.minimum(t[target[ok]], t[k - 1] + cfg.horizon)  # the live forecast holds beyond
            terms = np.stack([np.ones_like(at), np.sin(omega * at), np.cos(omega * at)], axis=1)
            forecast[ok] = (coefficients * terms).sum(axis=1)
        out[h] = forecast
    return out


def _residuals(t: np.ndarray, y: np.ndarray, periods: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of squared residuals and coefficients (level, sine, cosine) per period."""
    phase = 2 * math.pi * t[None, :] / periods[:, None]
    design = np.stack([np.ones_like(phase), np.sin(phase), np.cos(phase)], axis=2)
    normal = np.einsum("pni,pnj->pij", design, design) + RIDGE * np.eye(3)
    coefficients = np.linalg.solve(normal, np.einsum("pni,n->pi", design, y)[..., None])[..., 0]
    fitted = np.einsum("pni,pi->pn", design, coefficients)
    return ((y[None, :] - fitted) ** 2).sum(axis=1), coefficients

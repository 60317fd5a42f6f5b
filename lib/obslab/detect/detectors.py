"""Rule-based detectors: pure functions from a time-ordered series of windows to anomalies.

Every detector compares a window with what the series' own recent clean history expected, and
judges the difference against the noise a window of that size has (obslab.detect.noise): a
window's numbers are counts and averages over its requests, so an open window that holds 30
requests is judged as 30 requests, not as a minute of traffic.

    error_surge     errors as a binomial count: the error rate surely above k x the usual odds,
                    and beyond what chance allows for the window's requests (exact tail)
    latency_spike   average and p99 above m x the SLA (or the service's own usual p99), and the
                    average beyond the noise of an average of that many requests
    baseline_shift  latency: the average above its usual median by more than SHIFT_Z standard
                    deviations of its noise; traffic: a final window's request count below the
                    best of competing forecasts, as a (quasi-)Poisson count
    burn_rate       SLO error-budget burn over a short and a long span (SRE workbook)

The noise of each quantity has a floor from first principles (binomial errors, Poisson arrivals,
the per-request spread of latency over sqrt(n)) and is widened by the over-dispersion that the
series' own one-step-ahead prediction errors show, so traffic that varies more than Poisson, or
a rhythm the forecast follows imperfectly, widens the bounds instead of paging.

The walk over a series is sequential (what a window teaches depends on whether it was flagged),
so each detector is a small object that sees one window at a time; `detect_series` keeps what
they learned from a series' final windows between runs (see `_walk_remembered`).

Every anomaly carries its evidence (value, baseline, threshold, request count, window range) and
a severity from one documented rule: how far the value is past its threshold,

    value / threshold < 1.5  -> medium,   < 3 -> high,   otherwise critical

(for a downward rule, the ratio is threshold / value). Baselines are built only from final,
non-anomalous windows, so a long incident cannot teach the detector that it is normal.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from statistics import median
from typing import Protocol, runtime_checkable

import numpy as np

from obslab.detect.noise import Dispersion, binomial_sf, dispersion_of, poisson_cdf, tail_probability, wilson_upper
from obslab.settings import Settings

KINDS = {"error_surge": "errors", "burn_rate": "errors", "latency_spike": "latency",
         "baseline_shift:avg_latency_ms": "latency", "baseline_shift:request_count": "traffic"}

_P99_Z = 2.326  # standard deviations from the median to the 99th percentile of a normal distribution
_MEDIAN_Z = 3.0  # how far (in its own noise) a window's median must be above usual for a latency anomaly
_ERROR_WOBBLE = 0.3  # an error rate's assumed wobble between windows before its history says more
_PRIOR_WINDOWS = 4  # ... worth this many windows of history
_RUN = 4  # a traffic drop is judged over up to this many consecutive low windows
_SUSPECT = tail_probability(3.0)  # a count above the forecast this unlikely (and 1.5 x) is a surge
_DOUBT = tail_probability(3.0)  # a count below the forecast this unlikely is learned only once a later one clears it


@dataclass(frozen=True)
class Window:
    """One metric window of one series (a service, or a service's endpoint)."""

    service: str
    endpoint: str | None
    window_start: datetime
    window_end: datetime
    request_count: int
    error_count: int
    avg_latency_ms: float
    p99_latency_ms: float
    is_final: bool
    p50_latency_ms: float | None = None  # the per-request spread (p99 - p50) sizes latency noise

    @property
    def error_rate(self) -> float:
        return self.error_count / self.request_count if self.request_count else 0.0


@dataclass(frozen=True)
class Anomaly:
    """One anomalous window found by one detector, with its evidence."""

    detector: str
    service: str
    endpoint: str | None
    metric: str
    value: float
    baseline: float | None
    threshold: float
    window_start: datetime
    window_end: datetime
    request_count: int
    severity: str
    used_partial_window: bool

    @property
    def kind(self) -> str:
        """errors | latency | traffic: anomalies of one service and kind form one incident."""
        return KINDS.get(self.detector, KINDS.get(f"{self.detector}:{self.metric}", "other"))

    @property
    def anomaly_id(self) -> str:
        return "|".join([self.detector, self.metric, self.service, self.endpoint or "*",
                         self.window_start.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")])

    def row(self) -> dict:
        out = asdict(self)
        out["anomaly_id"] = self.anomaly_id
        return out


def _setting(name: str):
    """A setting's default: the thresholds a user may change are defined once, in obslab.settings."""
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds of every detector (from settings: see obslab.settings, DETECT_* and SLO_*).

    The thresholds a setting holds default to that setting's default (`config_from` in
    obslab.detect.run maps the settings in use); the rest are constants of the methods, not
    tunables. `latency_sla_ms` and `slo_availability` hold only the services that have one: the
    detection run fills them from the service catalogue, with the settings on top. A service
    without an SLA is held to its own usual p99; one without an SLO to `default_slo_availability`.
    """

    NEVER = 2**62  # as min_partial_requests: only final windows are judged

    # --- from settings (same meaning, see obslab.settings)
    error_surge_factor: float = _setting("error_surge_factor")  # on the odds of an error: about k x the rate
    error_confidence_z: float = _setting("error_confidence_z")
    latency_spike_factor: float = _setting("latency_spike_factor")
    shift_z: float = _setting("shift_z")
    trend_windows: int = _setting("detect_trend_windows")
    default_slo_availability: float = _setting("slo_default_availability")  # of a service `slo_availability` lacks
    burn_threshold: float = _setting("burn_threshold")
    # an open window is judged once it holds this many requests (the setting's 0: never)
    min_partial_requests: int = _setting("partial_window_min_requests") or NEVER
    latency_sla_ms: dict = field(default_factory=dict)
    slo_availability: dict = field(default_factory=dict)

    # --- constants of the methods
    error_margin_z: float = 2.0  # the usual rate is taken at its upper bound, a window's at its lower
    error_rate_floor: float = 0.005
    shift_min_relative: float = 0.03  # level wobble (relative) that no window is expected to beat
    surge_ratio: float = 1.5  # traffic this far above the trend is a surge: kept out of the baseline
    lookback_windows: int = 30
    dispersion_windows: int = 120
    min_history: int = 5
    min_calibration: int = 5  # prediction errors a series needs before its noise is trusted
    min_latency_requests: int = 10  # an average of fewer requests is not judged (heavy tails)
    burn_short_windows: int = 5
    burn_long_windows: int = 60


def severity(ratio: float) -> str:
    """The documented rule: how far past the threshold (ratio >= 1)."""
    return "medium" if ratio < 1.5 else "high" if ratio < 3 else "critical"


def wilson_lower(errors: int, n: int, z: float) -> float:
    """Lower bound of the Wilson score interval for a proportion: small samples get wide bounds."""
    if n == 0:
        return 0.0
    p = errors / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def _anomaly(detector, w: Window, metric, value, baseline, threshold, ratio) -> Anomaly:
    return Anomaly(detector, w.service, w.endpoint, metric, float(value),
                   None if baseline is None else float(baseline), float(threshold), w.window_start,
                   w.window_end, w.request_count, severity(max(ratio, 1.0)), not w.is_final)


def _usable(w: Window, cfg: DetectorConfig) -> bool:
    # An open window is judged as it fills, by the noise of the requests it holds so far; the
    # minimum only keeps the first few requests of a window from being judged at all.
    return w.request_count > 0 and (w.is_final or w.request_count >= cfg.min_partial_requests)


def _step(w: Window) -> float:
    """The window's position in window lengths: series with gaps keep their spacing in time."""
    length = (w.window_end - w.window_start).total_seconds() or 1.0
    return w.window_start.timestamp() / length


# ---------------------------------------------------------------------------- errors

def error_surge(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """Errors well above the usual rate, judged as a count of the window's requests.

    The usual rate is the pooled rate (errors / requests) of the last clean final windows, at
    least `error_rate_floor`: the service's own, with no built-in rate. The threshold is
    `error_surge_factor` x the usual odds of an error (about k x the usual rate while rates are
    small; below 100 % for a service that fails often). A window fires when both hold:

    - it is surely above the threshold: the lower end of its own rate's interval (Wilson bound
      at `error_margin_z`) is. A burst at about k x the usual rate (a deploy) is not a surge, however
      many requests it holds;
    - it is not chance: that many errors among its requests would be rarer than the one-sided
      tail of `error_confidence_z` at the usual rate taken as high as the history allows (Wilson
      upper bound at `error_margin_z`), by the exact binomial tail.

    Both on counts divided by the over-dispersion of the series (see `_ErrorBaseline`). So 3
    errors in 10 requests are not a surge on a service that usually fails 2 %, while 300 in 1,000
    are; and a short history that happens to hold few errors cannot set the bar low. A window
    above the threshold but not sure is judged again together with the next one or two (a surge
    on a quiet service adds up over windows).
    """
    return _walk(_ErrorSurge(cfg), series)


class _ErrorSurge:
    """error_surge walking one series (see `error_surge`)."""

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.alpha = tail_probability(cfg.error_confidence_z)
        self.usual = _ErrorBaseline(cfg)
        self.elevated: list[Window] = []  # the latest final windows above the threshold but not sure
        self.finals = 0  # final windows learned

    def cold(self) -> bool:
        """No final window learned yet: complete open windows may stand in (see `see`)."""
        return not self.finals

    def see(self, w: Window, complete: bool = False) -> list[Anomaly]:
        usual, out = self.usual, []
        above = usual.ready() and w.request_count > 0 and w.error_rate > usual.threshold
        if above and _usable(w, self.cfg):
            step = _step(w)
            # The window alone, then with the one or two windows just before it that were above the
            # threshold too without being sure: a surge on a quiet service adds up over windows, and
            # is then a surge in each of them that is surely above the threshold on its own.
            before = [b for b in self.elevated if step - 3 <= _step(b) < step]
            for k in range(len(before) + 1):
                run = before[len(before) - k:] + [w]
                if usual.surge(sum(r.error_count for r in run), sum(r.request_count for r in run), self.alpha):
                    out += [_anomaly("error_surge", r, "error_rate", r.error_rate, usual.rate, usual.threshold,
                                     r.error_rate / usual.threshold)
                            for r in run if r is w or usual.above(r.error_count, r.request_count)]
                    break
        if w.is_final:
            # A final window above the threshold but not sure is a suspect: it joins the usual rate
            # only once a later window clears it (or two later suspects push it out), never when a
            # surge follows. Learned at once, the first minute of a surge that straddles two
            # windows raised the usual rate enough to hide the second.
            if out:
                self.elevated = []
            elif above:
                self.elevated.append(w)
                if len(self.elevated) > 2:
                    self._learn(self.elevated.pop(0))
            else:
                for r in self.elevated + [w]:
                    self._learn(r)
                self.elevated = []
        elif w.request_count and not out and complete and self.cold():
            # Cold start: before any window is final (a lab's first minutes), an open window that a
            # later one follows is complete but for late events; such windows stand in as the
            # history (all of them: the first is often a sliver of a minute, too few requests).
            usual.learn(w)
        return out

    def _learn(self, w: Window) -> None:
        if w.request_count:
            self.usual.learn(w)
            self.finals += 1


class _ErrorBaseline:
    """The usual error rate of a series' last clean final windows, and the threshold built on it.

    Its noise: errors are binomial, widened by the over-dispersion phi >= 1 that the windows'
    Pearson residuals against the pooled rate show (the rate wobbling between windows), taken at
    the upper end of its interval (see obslab.detect.noise.Dispersion), and blended with a prior
    worth a few windows: a rate that wobbles by 30 % (which matters only where a window holds many
    errors, so a busy service's first minutes are not judged as if its errors were binomial). A
    span shorter than a window wobbles more than a window (fewer seconds average out), so for an
    open window that holds 1/f of the usual requests the estimated excess phi - 1 counts f times.

    The first `min_calibration` windows are learned on trust: nothing before them can say whether
    they were a surge (a lab that starts during an incident). Once as many windows have followed,
    each of them is judged against those later ones, and a surge among them leaves the baseline.
    Kept, a surge in a series' first minutes set the usual rate and phi so high (phi 30 for two
    minutes at 15-30 % errors among windows at 1 %) that the next surge looked like chance.
    """

    def __init__(self, cfg: DetectorConfig, trusting: bool = True):
        self.cfg = cfg
        self.history: deque[tuple[int, int]] = deque(maxlen=cfg.lookback_windows)  # (requests, errors)
        self.longer: deque[tuple[int, int]] = deque(maxlen=cfg.dispersion_windows)  # the same, for phi
        self.rate = self.limit = self.threshold = 0.0
        self.phi = self.excess = 0.0  # phi's upper bound, and its estimate's excess over binomial
        self.typical = 1.0  # requests of a usual window
        self.on_trust = cfg.min_calibration if trusting else 0  # the first windows, not judged yet

    def ready(self) -> bool:
        return bool(self.history)

    def surge(self, errors: int, requests: int, alpha: float) -> bool:
        """Surely above the threshold rate (lower bound at `error_margin_z`), and beyond chance at
        the usual rate (exact binomial tail below alpha), on counts divided by phi."""
        phi = self._phi(requests)
        return self.above(errors, requests) and binomial_sf(errors / phi, requests / phi, self.limit) < alpha

    def above(self, errors: int, requests: int) -> bool:
        """Surely above the threshold rate: the lower end of the rate's interval (at `error_margin_z`) is."""
        phi = self._phi(requests)
        return wilson_lower(errors / phi, requests / phi, self.cfg.error_margin_z) > self.threshold

    def _phi(self, requests: int) -> float:
        return self.phi + self.excess * (max(1.0, self.typical / requests) - 1)

    def learn(self, w: Window) -> None:
        self.history.append((w.request_count, w.error_count))
        self.longer.append((w.request_count, w.error_count))
        if self.on_trust and len(self.longer) == 2 * self.on_trust:
            self._judge_the_first()
        self._update()

    def _judge_the_first(self) -> None:
        """Drop the windows learned on trust that the windows after them show were a surge."""
        first, later = list(self.longer)[:self.on_trust], list(self.longer)[self.on_trust:]
        judge = _ErrorBaseline(self.cfg, trusting=False)
        judge.history.extend(later)
        judge.longer.extend(later)
        judge._update()
        alpha = tail_probability(self.cfg.error_confidence_z)
        kept = [(n, e) for n, e in first if not judge.surge(e, n, alpha)] + later
        self.on_trust = 0
        self.history = deque(kept, maxlen=self.history.maxlen)
        self.longer = deque(kept, maxlen=self.longer.maxlen)

    def _update(self) -> None:
        requests = sum(n for n, _ in self.history)
        errors = sum(e for _, e in self.history)
        self.rate = errors / requests
        self.typical = median(n for n, _ in self.history)
        estimate, upper = 1.0, 1.0
        pooled = sum(e for _, e in self.longer) / sum(n for n, _ in self.longer)
        if 0 < pooled < 1:
            spread = math.sqrt(pooled * (1 - pooled))
            squares = sorted(((e - n * pooled) / (spread * math.sqrt(n))) ** 2 for n, e in self.longer)
            estimate, upper = dispersion_of(squares)
        # Until the history tells, an error rate is assumed to wobble by _ERROR_WOBBLE between
        # windows: phi = 1 + wobble^2 x the errors of a usual window, worth _PRIOR_WINDOWS windows.
        # It only matters where errors are many (a busy service's first minutes).
        prior = 1 + _ERROR_WOBBLE ** 2 * max(self.rate, self.cfg.error_rate_floor) * self.typical
        m = len(self.longer)
        self.phi = (m * upper + _PRIOR_WINDOWS * prior) / (m + _PRIOR_WINDOWS)
        self.excess = (m * (estimate - 1) + _PRIOR_WINDOWS * (prior - 1)) / (m + _PRIOR_WINDOWS)
        phi = self.phi
        self.limit = max(wilson_upper(errors / phi, requests / phi, self.cfg.error_margin_z), self.cfg.error_rate_floor)
        usual = max(self.rate, self.cfg.error_rate_floor)
        odds = self.cfg.error_surge_factor * usual / (1 - usual) if usual < 1 else math.inf
        self.threshold = 1.0 if math.isinf(odds) else odds / (1 + odds)


# ---------------------------------------------------------------------------- trend and noise

class _Trend:
    """What the next window of a quantity should hold, from the last clean final windows.

    Five forecasts compete. Four are fitted by least squares to the last `size` points: their
    median (a flat series), a line (a drift), a parabola (the turn of a slow rhythm, which a line
    overshoots) and a line through the last 4 (a fast change); the fifth, `_Rhythm`, fits a cycle
    to the last few hours of points. Each is scored by its own one-step-ahead errors on the last
    20 points (the rhythm by those of its current shape, see `_score_rhythm`), and the one with
    the smallest mean square forecasts: a series picks the model its
    history supports, and its errors, not a model's hopes, are what the detectors calibrate
    their noise on. How much more each forecast misses from h = 2..HORIZON steps back than from
    one step back is kept too, point by point (`farther`): that is what forecasting across a gap
    adds to the error. A polynomial reaches at most 3 steps past the newest point (the open windows), the
    rhythm HORIZON; beyond, they hold, so a long gap (an incident) is not bridged by
    extrapolating a curve. `flat_only`: the median alone (for latency, whose slow degradation is
    a fault to find, not a rhythm to follow).
    """

    SCORED = 20  # one-step errors each forecast is judged on
    KEPT = 30  # the rhythm's one-step errors kept for its noise (see `_score_rhythm`; lookback_windows)
    RECENT = 4  # points of the short line
    HORIZON = 8  # steps ahead whose errors are kept too (how much less sure a forecast is further out)
    MODELS = ("flat", "line", "parabola", "recent", "rhythm")

    def __init__(self, size: int, flat_only: bool = False):
        self.size, self.flat_only = size, flat_only
        self.points: deque[tuple[float, float]] = deque(maxlen=size)
        self.long: deque[tuple[float, float]] = deque(maxlen=_Rhythm.SPAN)  # what the rhythm is fitted to
        self.errors = {name: deque(maxlen=self.SCORED) for name in self.MODELS}
        # per point, the squared error of a forecast made 2..HORIZON steps before it less that of
        # the one made a step before it: what forecasting from further back adds to the error
        self.ahead = {h: {name: deque(maxlen=self.SCORED) for name in self.MODELS} for h in range(2, self.HORIZON + 1)}
        self.earlier: deque[tuple[float, dict]] = deque(maxlen=self.HORIZON)  # (newest step, forecasts) as fitted then
        self.forecasts: dict[str, Callable[[float], float]] = {}
        self.period: float | None = None  # the rhythm's, as last found
        self.added = 0  # points added so far
        self.last = 0.0
        self._chosen: str | None = None  # the forecast in use (see `_choose`)
        self.rhythm_errors: list[tuple[float, float]] = []  # (value, forecast): the rhythm's, as it is now

    def __len__(self) -> int:
        return len(self.points)

    def add(self, step: float, value: float) -> None:
        # (the rhythm's errors are not kept as they come: `_score_rhythm` measures them anew)
        for name, forecast in self.forecasts.items():
            if name != "rhythm":
                self.errors[name].append((value - forecast(step)) ** 2)
        if round(step - self.last) == 1:
            for newest, forecasts in self.earlier:
                h = round(step - newest)
                if h in self.ahead:
                    for name, forecast in forecasts.items():
                        if name in self.forecasts and name != "rhythm":
                            self.ahead[h][name].append((value - forecast(step)) ** 2 - (value - self.forecasts[name](step)) ** 2)
        self.points.append((step, value))
        if not self.flat_only:
            self.long.append((step, value))
        self.added += 1
        self.last = step
        self._fit()
        self._choose()
        self.earlier.append((step, self.forecasts))

    def restart(self) -> None:
        """Forget the recent level and how the forecasts fared (after a flash crowd it is unknown),
        except the rhythm's: a rhythm went on beneath the crowd, and it is what knows the level now."""
        self.points.clear()
        for errors in [self.errors, *self.ahead.values()]:
            for name, kept in errors.items():
                if name != "rhythm":
                    kept.clear()
        self.earlier.clear()
        self.forecasts = {name: f for name, f in self.forecasts.items() if name == "rhythm"}
        self._choose()

    def farther(self, step: float) -> float | None:
        """What forecasting `step` from as far back as the newest point is adds to the mean square
        error of a one-step forecast, for the forecast in use: over the recent points, its squared
        error from that far back less its one-step one, point by point (paired, so the points'
        own noise cancels; a forecast that lags a moving level shows its lag). None if not known yet."""
        h, best = round(step - self.last), self._chosen
        if h <= 1:
            return 0.0
        extra = self.ahead.get(h, {}).get(best) if best else None
        if not extra or len(extra) < 5:
            return None
        return max(sum(extra) / len(extra), 0.0)

    def at(self, step: float, lowest_after_gap: bool = False) -> float:
        """The forecast for `step`. `lowest_after_gap`: past a gap (windows held out since the
        newest point) the newest points may have been the first of a surge, which a forecast from
        the last few points follows; so take the lower of such a forecast and the plain median: a
        drop must be one whichever of them is right. The rhythm, fitted to hours of points, is not
        moved by one: it stands alone (the median, at a trough or a peak, is a level the rhythm has
        long left, and taking it hid drops on the way down from a peak)."""
        best = self._chosen
        if best is None:
            return self.forecasts["flat"](step)
        value = self.forecasts[best](step)
        if lowest_after_gap and step - self.last > 1 and best != "rhythm":
            value = min(value, self.forecasts["flat"](step))
        return value

    def best(self, step: float) -> float | None:
        """The forecast of the best scored model (None before any is scored)."""
        best = self._chosen
        return None if best is None else max(self.forecasts[best](step), 1e-9)

    def stale(self, step: float, most: int) -> float:
        """Steps beyond the next since the newest point (at most `most`): the level may have moved
        meanwhile (a random walk), so the detectors widen the noise by that many level wobbles."""
        return min(max(step - self.last - 1, 0.0), most)

    def chosen(self) -> str | None:
        """The name of the forecast in use (None before any is scored)."""
        return self._chosen

    def _choose(self) -> None:
        # The scores change only when a point is added or the forecasts start again: choose then,
        # not on every question the detectors ask.
        scored = {name: sum(e) / len(e) for name, e in self.errors.items() if len(e) >= 5 and name in self.forecasts}
        self._chosen = min(scored, key=scored.get) if scored else None

    def _fit(self) -> None:
        last = self.last
        points = [(t - last, y) for t, y in self.points]  # the newest point at 0
        forecasts: dict[str, Callable[[float], float]] = {}

        def polynomial(fit: tuple[float, ...]) -> Callable[[float], float]:
            return lambda step: _evaluate(fit, min(max(step - last, 0.0), 3.0))

        if points:
            forecasts["flat"] = polynomial((median(y for _, y in points),))
        if not self.flat_only:
            if len(points) >= 4:
                forecasts["line"] = polynomial(_least_squares(points, 1))
                forecasts["recent"] = polynomial(_least_squares(points[-self.RECENT:], 1))
            if len(points) >= 6:
                forecasts["parabola"] = polynomial(_least_squares(points, 2))
            # the whole grid of periods now and then, in between only around the period found
            self.period = None if self.added % _Rhythm.SEARCH_EVERY == 0 else self.period
            fitted = _Rhythm.fit(self.long, self.period)
            if fitted is not None:  # periodic, so it may reach further without running away
                rhythm, self.period = fitted
                forecasts["rhythm"] = lambda step: rhythm(min(max(step - last, 0.0), self.HORIZON))
                self._score_rhythm()
        self.forecasts = forecasts

    def _score_rhythm(self) -> None:
        # The rhythm's errors are those of the rhythm as it is now: how its current period would
        # have forecast the recent points, one and h steps ahead, each from the points before it.
        # What it missed by while it still had the period wrong (on a cycle or less) says nothing
        # of it now; kept, those errors held a good rhythm out of use, and its noise 2-3 x too
        # high, for a cycle more (seasonal payments: chosen from minute 28, not 41; phi 12, not
        # 30). The period itself is chosen on all the points, these included: a small optimism.
        backtest = _Rhythm.backtest(self.long, self.period, self.KEPT, self.HORIZON)
        values = np.array([y for _, y in self.long][-self.KEPT:])
        one = backtest[1][-len(values):]
        known = ~np.isnan(one)
        self.rhythm_errors = [(float(v), float(f)) for v, f in zip(values[known], one[known])]
        self.errors["rhythm"] = deque(((values[known] - one[known]) ** 2)[-self.SCORED:], maxlen=self.SCORED)
        for h in range(2, self.HORIZON + 1):
            farther = backtest[h][-len(values):]
            both = known & ~np.isnan(farther)
            extra = (values[both] - farther[both]) ** 2 - (values[both] - one[both]) ** 2
            self.ahead[h]["rhythm"] = deque(extra[-self.SCORED:], maxlen=self.SCORED)


def _least_squares(points: list[tuple[float, float]], degree: int) -> tuple[float, ...]:
    """Coefficients (c0, c1[, c2]) of the polynomial of `degree` (1 or 2) closest to the points."""
    n = len(points)
    moments = [sum(t ** k for t, _ in points) for k in range(2 * degree + 1)]
    targets = [sum(y * t ** k for t, y in points) for k in range(degree + 1)]
    matrix = [[moments[i + j] for j in range(degree + 1)] for i in range(degree + 1)]
    try:
        return tuple(_solve(matrix, targets))
    except ZeroDivisionError:  # all points at one step
        return (sum(y for _, y in points) / n,) + (0.0,) * degree


def _solve(matrix: list[list[float]], targets: list[float]) -> list[float]:
    # Gaussian elimination with partial pivoting: 2x2 or 3x3 normal equations.
    size = len(targets)
    rows = [row[:] + [b] for row, b in zip(matrix, targets)]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(rows[r][col]))
        if abs(rows[pivot][col]) < 1e-12:
            raise ZeroDivisionError
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(col + 1, size):
            factor = rows[r][col] / rows[col][col]
            rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col])]
    out = [0.0] * size
    for r in range(size - 1, -1, -1):
        out[r] = (rows[r][size] - sum(rows[r][c] * out[c] for c in range(r + 1, size))) / rows[r][r]
    return out


def _evaluate(fit: tuple[float, ...], ahead: float) -> float:
    return sum(c * ahead ** k for k, c in enumerate(fit))


class _Rhythm:
    """A rhythm that repeats within the history: a level and one sine wave, by least squares
    over the last SPAN points, its period the one (from SHORTEST steps to the span the
    points cover) that leaves the smallest squared residuals: a coarse grid, then a fine one
    around its best. Where the polynomials fit a few points near the newest (and so pass their
    noise on to the forecast), this uses whole cycles: its forecast steadies as it sees a second
    and third cycle (on one cycle it still moves much with each new point). A rhythm slower than the history covers
    (a day of 1-minute windows) is left to the polynomials, which follow it well enough; the
    competition in `_Trend` decides which forecast a series gets.
    """

    SPAN = 240  # points fitted (4 hours of 1-minute windows)
    MIN_POINTS = 16
    SHORTEST = 8  # steps: a faster period would fit the noise
    COARSE, FINE = 1.05, 0.005  # the grids' steps: a ratio, then a fraction of the best period
    SEARCH_EVERY = 10  # points: how often the whole grid is searched again

    @classmethod
    def fit(cls, points, near: float | None = None) -> tuple[Callable[[float], float], float] | None:
        """(the forecast `ahead` steps past the newest point, the period), or None when the points
        are too few or cover less than the shortest period. `near`: a period found before; only
        the fine grid around it is searched (a new point moves the best period little)."""
        if len(points) < cls.MIN_POINTS:
            return None
        t = np.array([p[0] for p in points], dtype=float)
        y = np.array([p[1] for p in points], dtype=float)
        t -= t[-1]
        span = 1.0 - t[0]
        if span < cls.SHORTEST:
            return None
        if near is None:
            coarse = cls.SHORTEST * cls.COARSE ** np.arange(int(math.log(span / cls.SHORTEST) / math.log(cls.COARSE)) + 1)
            near = coarse[np.argmin(cls._residuals(t, y, coarse)[0])]
        fine = near * (1 + cls.FINE * np.arange(-10, 11))
        fine = fine[(fine >= cls.SHORTEST) & (fine <= span)]
        if not len(fine):
            return None
        residuals, coefficients = cls._residuals(t, y, fine)
        i = int(np.argmin(residuals))
        omega, (level, a, b) = 2 * math.pi / fine[i], coefficients[i]
        return (lambda ahead: float(level + a * math.sin(omega * ahead) + b * math.cos(omega * ahead))), float(fine[i])

    @classmethod
    def backtest(cls, points, period: float, targets: int, horizon: int) -> dict[int, np.ndarray]:
        """How this rhythm (its period fixed) would have forecast the last `targets` points from
        h = 1..`horizon` points before each: per h, the forecasts (NaN where fewer than MIN_POINTS
        came before), fitted on all the points up to then, by running sums."""
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
        for h in range(1, horizon + 1):
            upto = target - h + 1  # points before index upto are known h points before the target
            ok = upto >= cls.MIN_POINTS
            forecast = np.full(len(target), np.nan)
            if ok.any():
                k = upto[ok]
                coefficients = np.linalg.solve(sums[k] + 1e-9 * np.eye(3), moments[k][..., None])[..., 0]
                at = np.minimum(t[target[ok]], t[k - 1] + _Trend.HORIZON)  # the live forecast holds beyond
                terms = np.stack([np.ones_like(at), np.sin(omega * at), np.cos(omega * at)], axis=1)
                forecast[ok] = (coefficients * terms).sum(axis=1)
            out[h] = forecast
        return out

    @staticmethod
    def _residuals(t: np.ndarray, y: np.ndarray, periods: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sum of squared residuals and coefficients (level, sine, cosine) per period."""
        phase = 2 * math.pi * t[None, :] / periods[:, None]
        design = np.stack([np.ones_like(phase), np.sin(phase), np.cos(phase)], axis=2)
        normal = np.einsum("pni,pnj->pij", design, design) + 1e-9 * np.eye(3)
        coefficients = np.linalg.solve(normal, np.einsum("pni,n->pi", design, y)[..., None])[..., 0]
        fitted = np.einsum("pni,pi->pn", design, coefficients)
        return ((y[None, :] - fitted) ** 2).sum(axis=1), coefficients


# ---------------------------------------------------------------------------- latency

class _LatencyModel:
    """What a series' average latency usually is, and how much it may stray by chance.

    Expected value: the median of the last clean final windows. It follows a slow drift with
    a lag of half that many windows, but no ramp: a latency degradation is a fault to find. Noise
    of an average of n requests, s windows after the newest clean one:

        sd(n)^2 = phi * (sigma^2 / n + (rho * expected)^2 * (max(1, typical / n) + s - 1))

    sigma is the per-request spread, (p99 - p50) / 2.326 of the clean windows (the normal
    relation; larger than the standard deviation for right-skewed latency, so it errs on the
    quiet side); rho is `shift_min_relative`, the level wobble no window is expected to beat,
    wider for an open window that holds fewer than the `typical` requests of a window (a few
    seconds wobble more than a minute: a deploy's few slow seconds are not a shift); phi >= 1 is
    the over-dispersion the clean windows' own one-step-ahead errors show; and a prediction made
    s windows on from the newest clean one adds s - 1 wobbles (the level may have moved since).
    The average of a few requests is skewed when latency is: the threshold's z is raised by the
    Cornish-Fisher term for the skew that the windows' p99 / p50 implies (as if latency were
    lognormal), and the window's median request must be slower than usual too (`median_slower`).
    """

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.trend = _Trend(cfg.trend_windows, flat_only=True)
        self.p99: deque[float] = deque(maxlen=cfg.lookback_windows)
        self.p50: deque[float] = deque(maxlen=cfg.trend_windows)
        self.shape: deque[tuple[float, float, int]] = deque(maxlen=cfg.trend_windows)  # (spread, log p99/p50, n)
        self.dispersion = Dispersion(cfg.dispersion_windows)
        self.sigma = self.skew = self.log_spread = 0.0
        self.typical = 1.0

    def ready(self) -> bool:
        return len(self.trend) >= self.cfg.min_history and len(self.dispersion) >= self.cfg.min_calibration

    def judges(self, w: Window) -> bool:
        """Whether this window's average can be judged: a calibrated model and enough requests."""
        return self.ready() and w.request_count >= self.cfg.min_latency_requests and _usable(w, self.cfg)

    def threshold(self, w: Window, z: float) -> tuple[float, float]:
        """(expected average, the average above which this window is beyond chance at z)."""
        expected = self._expected(w)
        sd = math.sqrt(self.dispersion.phi * self._base_variance(expected, w.request_count, _step(w)))
        skew = self.skew / math.sqrt(w.request_count)
        return expected, expected + (z + skew * (z * z - 1) / 6) * sd

    def median_slower(self, w: Window) -> bool:
        """Whether the window's median request is slower than usual beyond the noise of a median of
        its requests (at 3 sigma, lognormal: a median of n has a log-sd of 1.2533 s / sqrt(n)). A
        few very slow requests raise an average; a slowdown raises the median too."""
        if w.p50_latency_ms is None or not self.p50:
            return True
        usual = median(self.p50)
        return w.p50_latency_ms > usual * math.exp(_MEDIAN_Z * 1.2533 * self.log_spread / math.sqrt(w.request_count))

    def learn(self, w: Window) -> None:
        """Take a clean final window into the history (its own prediction error calibrates phi)."""
        if len(self.trend) >= self.cfg.min_history:
            expected = self._expected(w)
            variance = self._base_variance(expected, w.request_count, _step(w))
            self.dispersion.add((w.avg_latency_ms - expected) / math.sqrt(variance))
        middle = w.p50_latency_ms if w.p50_latency_ms is not None else w.avg_latency_ms
        spread = max((w.p99_latency_ms - middle) / _P99_Z, 1e-6)
        log_ratio = max(math.log(max(w.p99_latency_ms, 1e-9) / max(middle, 1e-9)) / _P99_Z, 0.0)
        self.trend.add(_step(w), w.avg_latency_ms)
        self.p99.append(w.p99_latency_ms)
        if w.p50_latency_ms is not None:
            self.p50.append(w.p50_latency_ms)
        self.shape.append((spread, log_ratio, w.request_count))
        self.sigma = median(x for x, _, _ in self.shape)
        self.typical = median(n for _, _, n in self.shape)
        self.log_spread = median(r for _, r, _ in self.shape)
        s2 = self.log_spread ** 2
        self.skew = (math.exp(s2) + 2) * math.sqrt(math.expm1(s2))  # a lognormal's skewness

    def _expected(self, w: Window) -> float:
        return max(self.trend.at(_step(w)), 1e-9)

    def usual_p99(self) -> float | None:
        return median(self.p99) if len(self.p99) >= self.cfg.min_history else None

    def _base_variance(self, expected: float, n: int, step: float) -> float:
        wobble = max(1.0, self.typical / n) + self.trend.stale(step, self.cfg.lookback_windows)
        return self.sigma * self.sigma / n + wobble * (self.cfg.shift_min_relative * expected) ** 2


def latency_spike(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """Average and p99 latency both above m x the service's SLA, beyond the noise of the average.

    A service without an SLA is held to what it normally delivers: the median p99 of its last
    clean final windows (once there are `min_history` of them). Services come from the data, so a
    new one is watched from its first few windows on instead of never. Once the series has a
    history, the average must also be beyond what chance allows an average of the window's
    requests (see `_LatencyModel`): one slow request among five is not a spike.
    """
    return _walk(_LatencySpike(cfg), series)


class _LatencySpike:
    """latency_spike walking one series (see `latency_spike`)."""

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.model = _LatencyModel(cfg)

    def cold(self) -> bool:
        """Never: it learns from final windows only."""
        return False

    def see(self, w: Window, complete: bool = False) -> list[Anomaly]:
        cfg, model, out = self.cfg, self.model, []
        sla = cfg.latency_sla_ms.get(w.service)
        if sla is None:
            sla = model.usual_p99()
        if sla is not None and _usable(w, cfg) and w.request_count >= cfg.min_latency_requests:
            threshold = cfg.latency_spike_factor * sla
            if (w.avg_latency_ms > threshold and w.p99_latency_ms > threshold
                    and (not model.ready() or w.avg_latency_ms > model.threshold(w, cfg.shift_z)[1])
                    and model.median_slower(w)):
                out.append(_anomaly("latency_spike", w, "avg_latency_ms", w.avg_latency_ms, sla, threshold,
                                    w.avg_latency_ms / threshold))
        if w.is_final and w.request_count > 0 and not out:
            model.learn(w)
        return out


# ---------------------------------------------------------------------------- latency and traffic shifts

def baseline_shift(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """Latency creeping up, or traffic falling, against what the series' own history expects.

    Latency: the average above its usual median by more than `shift_z` standard deviations of
    the noise of an average of the window's requests (see `_LatencyModel`); open windows are
    judged too, with the wobble of their shorter span. Slow for `lookback_windows` windows in a
    row, the new level becomes the normal.

    Traffic: a final window's request count below the forecast (see `_Trend`), judged as a count:
    the chance of that few requests when mu are expected is below the one-sided tail of
    `shift_z`, Poisson arrivals widened by the over-dispersion phi the history's own prediction
    errors show (quasi-Poisson: counts divided by phi). Up to four consecutive low windows are
    also judged together, so a quiet service that goes silent is found even where one window of
    it cannot tell, and each of them is then part of the drop. Counts far above the usual level (a
    flash crowd: at least `surge_ratio` x the recent median, or the rhythm's forecast where that
    is higher, and beyond chance) are not anomalies, but they stay out
    of the baseline, and the forecast starts again after them, so the return to normal is not
    taken for a drop; a count well below it (beyond the 3-sigma tail) stays out too while it is
    not yet a sure drop. Open windows are never judged on traffic: they are short of requests by
    nature.
    """
    return _walk(_BaselineShift(cfg), series)


class _BaselineShift:
    """baseline_shift walking one series (see `baseline_shift`)."""

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.alpha = tail_probability(cfg.shift_z)
        self.latency = _LatencyModel(cfg)
        self.traffic = _TrafficModel(cfg)
        self.slow: list[Window] = []  # the latest consecutive final windows flagged as slow

    def cold(self) -> bool:
        """Never: it learns from final windows only."""
        return False

    def see(self, w: Window, complete: bool = False) -> list[Anomaly]:
        cfg, out = self.cfg, []
        if self.latency.judges(w):
            expected, threshold = self.latency.threshold(w, cfg.shift_z)
            if w.avg_latency_ms > threshold and self.latency.median_slower(w):
                out.append(_anomaly("baseline_shift", w, "avg_latency_ms", w.avg_latency_ms, expected, threshold,
                                    w.avg_latency_ms / threshold))
        if not w.is_final:
            return out
        # A window without requests (a silent service) has a count but no latency.
        if out:
            self.slow.append(w)
            if len(self.slow) >= cfg.lookback_windows:  # slow for that long: the new normal
                for slow in self.slow:
                    self.latency.learn(slow)
                self.slow = []
        elif w.request_count > 0:
            self.slow = []
            self.latency.learn(w)
        for low, expected, threshold in self.traffic.judge(w, self.alpha):
            out.append(_anomaly("baseline_shift", low, "request_count", low.request_count, expected, threshold,
                                threshold / max(low.request_count, 1)))
        return out


class _TrafficModel:
    """Request counts of final windows: forecast by `_Trend`, noise quasi-Poisson.

    var(count) = phi * (mu + (rho * mu)^2) + drift: Poisson arrivals, the level wobble rho, the
    over-dispersion phi >= 1 that the standardized one-step-ahead errors of the clean windows
    show (those of the forecast in use, see `dispersion`), and, for a window g > 1 steps after
    the newest clean one (after a flash crowd or a drop held out of the baseline), how far the
    forecast may be off after g steps: what the forecast in use has moved by between g steps
    ahead and one (`_Trend.farther`), or, before that is known or beyond HORIZON, what the
    history's own differences g steps apart show beyond their noise (a daily rhythm moves the
    level by its slope x g); at least g - 1 wobbles. The drift is a variance in counts already,
    so phi does not widen it. Drops are judged once `min_calibration` errors are known. Several
    windows judged together add their own noise, plus what their shared level error adds (their
    wobbles and drift move together).
    """

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.trend = _Trend(cfg.trend_windows)
        self.learned: deque[tuple[float, float]] = deque(maxlen=2 * cfg.lookback_windows)  # (step, count)
        self._new_noise()
        self.low_run: list[list] = []  # [window, mu, level sd, drift, raised]: the latest windows well below
        self.held: list[tuple[float, float, bool]] = []  # (step, count, a sure drop) of the latest windows kept out of the baseline
        self.held_kind: str | None = None  # what they are: "low" or "surge"
        self.before: float | None = None  # the forecast before the forecast last started again

    def judge(self, w: Window, alpha: float) -> list[tuple[Window, float, float]]:
        """The drops this window shows, as (window, expected, threshold): itself, and the low
        windows just before it when together they are a drop. Learns a normal window."""
        y, step = w.request_count, _step(w)
        if len(self.trend) < self.cfg.min_history:
            if y == 0 and self.before and poisson_cdf(0, self.before / self.dispersion.phi) < alpha:
                return [(w, self.before, 0.0)]  # silent while the forecast starts again
            self._learn(step, y)
            return []
        mu = max(self.trend.at(step, lowest_after_gap=True), 1e-9)
        self.before = mu
        drift = self._drift(step, mu)
        wobble = math.sqrt((self.cfg.shift_min_relative * mu) ** 2 + drift)  # how far off the level may be
        base = mu + (self.cfg.shift_min_relative * mu) ** 2
        # variance / mean, for judging (phi's upper bound) and for deciding what to learn (its
        # estimate): counts divided by it are Poisson-like again. The drift is measured in counts
        # already, so phi does not widen it again.
        scale = (self.dispersion.phi * base + drift) / mu
        likely = (self.dispersion.estimate * base + drift) / mu
        # A surge is surge_ratio x the usual level: the plain median (a fast forecast that has
        # followed the first minute of a flash crowd must not carry the rest into the baseline,
        # and one fitted through a dip, falling, made the return to normal look like a crowd),
        # or the rhythm's forecast where it is higher: one window does not move it, and from
        # the median of a trough the climb to the next peak looked like a crowd. Each false
        # "crowd" started the forecasts and their noise again: minutes judged on nothing.
        floor = self.trend.forecasts["flat"](step)
        if "rhythm" in self.trend.forecasts:
            floor = max(floor, self.trend.forecasts["rhythm"](step))
        if y > self.cfg.surge_ratio * floor and 1 - poisson_cdf(y / likely - 1, mu / likely) < _SUSPECT:
            self._hold("surge", step, y)  # a surge is no incident, and no baseline either
            return []
        if self.held_kind == "surge" and y > 0:
            # Just after a flash crowd the level it left is unknown (a rhythm went on beneath it):
            # the forecast starts again from the windows after it, and so does its noise (how
            # far a forecast from a few points misses is not how far one from a long history
            # did; the rhythm's, which goes on, is measured anew in `_learn`). Silence is judged still.
            self.trend.restart()
            self._new_noise()
            self.held, self.held_kind, self.low_run = [], None, []
            self._learn(step, y)
            return []
        # Windows a standard deviation or more below the forecast, in a row: a drop that one window
        # of a quiet series cannot show adds up over the next few, and is then a drop in all of
        # them (an incident spans the drop, not only the window that made it sure).
        low = y < mu - math.sqrt(likely * mu)
        self.low_run = (self.low_run + [[w, mu, wobble, drift, False]])[-_RUN:] if low else []
        if y == 0 and len(self.dispersion) < self.cfg.min_calibration and poisson_cdf(0, mu / scale) < alpha:
            # Silence needs no calibrated noise: a service that has sent mu requests a window so
            # far and now sends none is down, even in its first minutes.
            self._hold("low", step, y, sure=True)
            self.low_run[-1][4] = True
            return [(w, mu, 0.0)]
        if len(self.dispersion) >= self.cfg.min_calibration and low:
            for k in range(1, len(self.low_run) + 1):  # the window alone, then with the ones before it
                run = self.low_run[-k:]
                got, wanted = sum(r[0].request_count for r in run), sum(r[1] for r in run)
                # each window's own noise, plus what their shared level error adds: 2 x each pair
                rho = self.cfg.shift_min_relative
                own = sum(self.dispersion.phi * (r[1] + (rho * r[1]) ** 2) + r[3] for r in run)
                shared = sum(r[2] for r in run) ** 2 - sum(r[2] ** 2 for r in run)
                together = (own + shared) / wanted
                if poisson_cdf(got / together, wanted / together) < alpha:
                    self._hold("low", step, y, sure=True)
                    threshold = _lowest_count_beyond_chance(mu, scale, alpha)
                    drops = [(r[0], r[1], threshold) for r in run if not r[4]]
                    for r in run:
                        r[4] = True
                    return drops
        if low and poisson_cdf(y / likely, mu / likely) < _DOUBT:
            # Not sure yet: neither an incident nor the baseline. Learned, the first window of a
            # drop would teach a fast forecast to expect the next, and the drop would hide itself.
            self._hold("low", step, y, sure=False)
            return []
        if self.held_kind == "low" and not low and not any(sure for _, _, sure in self.held):
            # A normal window after windows that were only unlikely: they were noise, and the
            # baseline needs its low tail (left out, it would rise, and the noise would shrink).
            # A window low itself (if not unlikely) clears nothing: the held ones stay out, and
            # it is learned (the level may be falling); it cleared the first window of a drop
            # into the baseline when the second was a little less low.
            for held_step, held_y, _ in self.held:
                self._calibrate(held_step, held_y)
                self._learn(held_step, held_y)
        self.held, self.held_kind = [], None
        self._calibrate(step, y)
        self._learn(step, y)
        return []

    @property
    def dispersion(self) -> Dispersion:
        """The over-dispersion the judgements use: that of the forecast in use, from its own last
        `lookback_windows` errors once it has `_Trend.SCORED`; before, that of the errors the
        forecasts in use made as they were made. The errors the forecasts in use made long ago, when the
        history was short and a rhythm not yet seen, would overstate the noise of a forecast
        that has since learned the rhythm; a forecast's own few errors, which are what it was
        chosen for, would understate it."""
        own = self.dispersions.get(self.trend.chosen() or "")
        return own if own is not None and len(own) >= _Trend.SCORED else self.in_use

    def _new_noise(self) -> None:
        """No errors known yet: of the forecasts in use as they were made (`in_use`), nor of each
        forecast (`dispersions`; the rhythm's is measured anew at every `_learn`)."""
        self.in_use = Dispersion(self.cfg.dispersion_windows)
        self.dispersions = {name: Dispersion(self.cfg.lookback_windows) for name in _Trend.MODELS}

    def _calibrate(self, step: float, y: float) -> None:
        """A clean window's standardized error against the forecasts calibrates the noise."""
        best = self.trend.best(step)
        if best is None:  # the forecasts are not scored yet
            return
        for name, forecast in self.trend.forecasts.items():
            if name != "rhythm":  # its noise is that of the rhythm as it is now (see `_learn`)
                self.dispersions[name].add(self._standardized(y, forecast(step)))
        self.in_use.add(self._standardized(y, best))

    def _standardized(self, y: float, expected: float) -> float:
        """A count's error against a forecast, in standard deviations of Poisson arrivals plus the level wobble."""
        expected, rho = max(expected, 1e-9), self.cfg.shift_min_relative
        return (y - expected) / math.sqrt(expected + (rho * expected) ** 2)

    def _learn(self, step: float, y: float) -> None:
        self.trend.add(step, y)
        self.learned.append((step, y))
        if "rhythm" in self.trend.forecasts:  # the rhythm's noise: its errors as it is now
            noise = Dispersion(self.cfg.lookback_windows)
            for value, forecast in self.trend.rhythm_errors[-self.cfg.lookback_windows:]:
                noise.add(self._standardized(value, forecast))
            self.dispersions["rhythm"] = noise

    def _drift(self, step: float, mu: float) -> float:
        """Variance of how far off the forecast may be `step - newest` windows after the newest clean
        one, beyond a one-step forecast's error (0 right after it). The rhythm forecast follows the
        level's movement, so what its own forecasts from that far back missed by says it. Any other
        forecast may be off by as much as the level moves in that many windows, which the
        history's differences that far apart show (a forecast fitted at a peak of a rhythm, where
        it did well, holds while the level falls), or by what it missed, if more."""
        gap = min(round(step - self.trend.last), self.cfg.lookback_windows)
        if gap <= 1:
            return 0.0
        floor = (gap - 1) * (self.cfg.shift_min_relative * mu) ** 2  # a random walk of wobbles
        farther = self.trend.farther(step)
        if farther is not None and self.trend.chosen() == "rhythm":
            return max(floor, farther)
        at = dict(self.learned)
        differences = [(y - at[t - gap]) ** 2 for t, y in self.learned if t - gap in at]
        moved = 0.0
        if len(differences) >= 5:
            noise = 2 * self.dispersion.estimate * (mu + (self.cfg.shift_min_relative * mu) ** 2)
            moved = sum(differences) / len(differences) - noise
        return max(floor, moved, farther or 0.0)

    def _hold(self, kind: str, step: float, y: float, sure: bool = False) -> None:
        """Keep a low or surge window out of the baseline (`sure`: it is part of a drop found).
        When traffic stays at such a level for `lookback_windows` windows it is the new normal;
        silence never is."""
        if kind != self.held_kind or y == 0:
            self.held, self.held_kind = [], kind
        if y == 0:
            return
        self.held.append((step, y, sure))
        if len(self.held) >= self.cfg.lookback_windows:
            for held_step, held_y, _ in self.held:
                self._learn(held_step, held_y)
            self.held, self.held_kind = [], None


def _lowest_count_beyond_chance(mu: float, scale: float, alpha: float) -> float:
    """The largest count one window could hold and still be a drop at this alpha (for display)."""
    if poisson_cdf(0.0, mu / scale) >= alpha:
        return 0.0
    lo, hi = 0.0, mu
    for _ in range(40):
        mid = (lo + hi) / 2
        if poisson_cdf(mid / scale, mu / scale) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------------------- SLO burn

def burn_rate(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """SLO error-budget burn above the threshold over both a short and a long span (SRE workbook)."""
    if not series:
        return []
    slo = cfg.slo_availability.get(series[0].service, cfg.default_slo_availability)
    budget = 1.0 - slo
    requests, errors = [0], [0]  # running totals, so each span's rate is a difference
    for w in series:
        requests.append(requests[-1] + w.request_count)
        errors.append(errors[-1] + w.error_count)

    def rate(first: int, last: int) -> float:  # windows first..last inclusive
        n = requests[last + 1] - requests[first]
        return (errors[last + 1] - errors[first]) / n if n else 0.0

    out = []
    for i, w in enumerate(series):
        if i + 1 < cfg.burn_short_windows or not _usable(w, cfg):
            continue  # a span shorter than the short window says nothing about a budget
        burn_short = rate(max(0, i - cfg.burn_short_windows + 1), i) / budget
        burn_long = rate(max(0, i - cfg.burn_long_windows + 1), i) / budget
        if burn_short > cfg.burn_threshold and burn_long > cfg.burn_threshold:
            out.append(_anomaly("burn_rate", w, "error_budget_burn", burn_short, burn_long, cfg.burn_threshold,
                                min(burn_short, burn_long) / cfg.burn_threshold))
    return out


DETECTORS = {"error_surge": error_surge, "latency_spike": latency_spike, "baseline_shift": baseline_shift,
             "burn_rate": burn_rate}


@runtime_checkable
class _Walker(Protocol):
    """A detector walking one series window by window, keeping what it learned from final windows."""

    def cold(self) -> bool: ...  # it learns from open windows now (they stand in for history): walk a copy
    def see(self, w: Window, complete: bool = False) -> list[Anomaly]: ...


_WALKERS: dict[str, Callable[[DetectorConfig], _Walker]] = {
    "error_surge": _ErrorSurge, "latency_spike": _LatencySpike, "baseline_shift": _BaselineShift}


def detect_series(series: list[Window], cfg: DetectorConfig, detectors=None) -> list[Anomaly]:
    """Run the detectors over one time-ordered series."""
    series = sorted(series, key=lambda w: w.window_start)
    names = list(detectors or DETECTORS)
    found = _walk_remembered(series, cfg, [n for n in names if n in _WALKERS])
    if "burn_rate" in names and series and series[0].endpoint is None:
        found += burn_rate(series, cfg)  # the SLO is a service's promise, not an endpoint's
    return sorted(found, key=lambda a: (a.window_start, a.detector, a.metric))


def _walk(walker, series: list[Window]) -> list[Anomaly]:
    series = sorted(series, key=lambda w: w.window_start)
    return [a for i, w in enumerate(series) for a in walker.see(w, complete=i + 1 < len(series))]


@dataclass
class _Walked:
    finals: tuple[int, int]  # (how many, hash) of the leading final windows walked, in order
    walkers: list  # their state after the last of them
    found: list  # what they found in them


# A detection run walks every series of the lookback again, though only its open windows and the
# windows that became final are new: what the walkers learned from the final windows is kept per
# series, and reused when the next run's series starts with the same final windows (a final window
# never changes). The result is the same as walking from scratch; only the time differs.
_MEMORY: OrderedDict[tuple, _Walked] = OrderedDict()
_MEMORY_SIZE = 512  # series remembered (services and endpoints), least recently used dropped first


def _walk_remembered(series: list[Window], cfg: DetectorConfig, names: list[str]) -> list[Anomaly]:
    if not series or not names:
        return []
    final_count = next((i for i, w in enumerate(series) if not w.is_final), len(series))
    key = (repr(cfg), series[0].service, series[0].endpoint, tuple(names))
    walked = _MEMORY.pop(key, None)
    if walked is None or walked.finals[0] > final_count or walked.finals[1] != hash(tuple(series[:walked.finals[0]])):
        walked = _Walked((0, hash(())), [_WALKERS[n](cfg) for n in names], [])
    for w in series[walked.finals[0]:final_count]:
        for walker in walked.walkers:
            walked.found.extend(walker.see(w))
    walked.finals = (final_count, hash(tuple(series[:final_count])))
    _MEMORY[key] = walked
    while len(_MEMORY) > _MEMORY_SIZE:
        _MEMORY.popitem(last=False)
    tail = series[final_count:]
    # Open windows teach nothing, except at a cold start; a final window after an open one would
    # too. Either way the open windows walk a copy, so what is remembered is the final windows'.
    cold = any(walker.cold() for walker in walked.walkers)
    walkers = copy.deepcopy(walked.walkers) if cold or any(w.is_final for w in tail) else walked.walkers
    return walked.found + [a for i, w in enumerate(tail) for walker in walkers
                           for a in walker.see(w, complete=i + 1 < len(tail))]

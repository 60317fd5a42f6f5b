"""Traffic: the request-count half of baseline_shift, a final window's count below what the series expects.

A count is judged as a count: the chance of that few requests when mu are expected, Poisson
arrivals widened by the over-dispersion phi that the history's own prediction errors show
(quasi-Poisson: counts divided by phi), below the one-sided tail of `shift_z`. Up to `drop_run`
consecutive low windows are also judged together. A flash crowd is no anomaly, but it stays out
of the baseline and the forecast starts again after it; a count well below the forecast stays
out too while it is not yet a sure drop. An open window whose time has passed (a later window
exists) is judged too, as a final one would be, with the low windows just before it, but never
learned from: a late event may still raise its count, and only final windows teach the baseline.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from obslab.detect.config import BISECTIONS, FLOOR, DetectorConfig
from obslab.detect.forecasts import MODELS, Trend
from obslab.detect.noise import Dispersion, poisson_cdf, tail_probability
from obslab.detect.window import Anomaly, Window, anomaly, step_of


@dataclass
class Expected:
    """What a window's count is judged against: the forecast and its noise, as variance / mean."""

    mu: float  # the forecast count
    drift: float  # variance of how far off the forecast may be after a gap (in counts already)
    wobble: float  # standard deviation of the level's error (wobble and drift)
    scale: float  # variance / mean for judging (phi's upper bound)
    likely: float  # variance / mean for deciding what to learn (phi's estimate)


@dataclass
class Low:
    """A final window well below its forecast, one of the latest in a row."""

    window: Window
    mu: float
    wobble: float
    drift: float
    raised: bool = False  # already part of a drop found

    def data(self) -> list:
        return [self.window.data(), self.mu, self.wobble, self.drift, self.raised]


class TrafficModel:
    """Request counts of final windows: forecast by `Trend`, noise quasi-Poisson.

    var(count) = phi * (mu + (rho * mu)^2) + drift: Poisson arrivals, the level wobble rho
    (`shift_min_relative`), the over-dispersion phi >= 1 of the clean windows' standardized
    one-step errors (of the forecast in use, see `dispersion`), and, for a window g > 1 steps
    after the newest clean one, how far the forecast may be off after g steps (`_drift`).
    Several windows judged together add their own noise, plus what their shared level error adds.
    """

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.surge_alpha = tail_probability(cfg.surge_z)
        self.doubt_alpha = tail_probability(cfg.doubt_z)
        self.trend = Trend(cfg)
        # (step, count) of the windows learned: two warm-ups, for the level's differences g steps apart
        self.learned: deque[tuple[float, float]] = deque(maxlen=2 * cfg.lookback_windows)
        self._new_noise()
        self.low_run: list[Low] = []  # the latest windows well below the forecast, in a row
        self.held: list[tuple[float, float, bool]] = []  # (step, count, a sure drop) kept out of the baseline
        self.held_kind: str | None = None  # what they are: "low" or "surge"
        self.before: float | None = None  # the forecast before the forecast last started again
        self.last_final: int | None = None  # the step of the newest final window judged
        self.open_lows: dict[int, Low] = {}  # step -> a complete open window well below its forecast

    def judge(self, w: Window, alpha: float) -> list[tuple[Window, float, float]]:
        """The drops this final window shows, as (window, expected, threshold): itself, and the low
        windows just before it when together they are a drop. Learns a normal window."""
        y, step = w.request_count, step_of(w)
        self.last_final = round(step)
        self.open_lows = {s: r for s, r in self.open_lows.items() if s > self.last_final}
        if len(self.trend) < self.cfg.min_history:
            if y == 0 and self.before and poisson_cdf(0, self.before / self.dispersion.phi) < alpha:
                return [(w, self.before, 0.0)]  # silent while the forecast starts again
            self._learn(step, y)
            return []
        e = self._expected(step)
        self.before = e.mu
        if self._surge(step, y, e):
            self._hold("surge", step, y)  # a surge is no incident, and no baseline either
            return []
        if self.held_kind == "surge" and y > 0:
            self._after_surge(step, y)
            return []
        low = y < e.mu - math.sqrt(e.likely * e.mu)  # a standard deviation or more below
        self.low_run = (self.low_run + [Low(w, e.mu, e.wobble, e.drift)])[-self.cfg.drop_run:] if low else []
        drops = self.judge_drop(w, low, e, alpha)
        if drops is not None:
            return drops
        if low and poisson_cdf(y / e.likely, e.mu / e.likely) < self.doubt_alpha:
            self._hold("low", step, y, sure=False)  # not sure yet: neither an incident nor the baseline
            return []
        self._settle(step, y, low)
        return []

    def judge_drop(self, w: Window, low: bool, e: Expected, alpha: float) -> list[tuple[Window, float, float]] | None:
        """The traffic drop judgement: the drops window `w` completes, as (window, expected,
        threshold), or None when it completes none. Silence needs no calibrated noise; otherwise
        the low run is judged from its newest window back (the window alone, then with the ones
        before it), each run as one count against the sum of its forecasts."""
        y, step = w.request_count, step_of(w)
        calibrated = len(self.dispersion) >= self.cfg.min_calibration
        if y == 0 and not calibrated and poisson_cdf(0, e.mu / e.scale) < alpha:
            # a service that has sent mu requests a window so far and now sends none is down
            self._hold("low", step, y, sure=True)
            self.low_run[-1].raised = True
            return [(w, e.mu, 0.0)]
        run = self._sure_run(self.low_run, alpha) if calibrated and low else None
        if run is None:
            return None
        self._hold("low", step, y, sure=True)
        threshold = lowest_count_beyond_chance(e.mu, e.scale, alpha)
        drops = [(r.window, r.mu, threshold) for r in run if not r.raised]
        for r in run:
            r.raised = True
        return drops

    def judge_open(self, w: Window, alpha: float) -> list[tuple[Window, float, float]]:
        """The drops a complete open window shows, as `judge` would find them were it final: the
        window alone, then with the low windows just before it (open ones seen in this walk, then
        the final low run). Nothing is learned, held or marked raised."""
        y, step = w.request_count, round(step_of(w))
        self.open_lows = {s: r for s, r in self.open_lows.items() if s < step}  # the walk moves forward
        if len(self.trend) < self.cfg.min_history or self.held_kind == "surge":
            return []  # no forecast yet, or the level a flash crowd left is unknown: final windows decide
        e = self._expected(step_of(w))
        if y >= e.mu - math.sqrt(e.likely * e.mu):
            return []
        self.open_lows[step] = Low(w, e.mu, e.wobble, e.drift)
        run = self._open_run(step)
        if y == 0 and len(self.dispersion) < self.cfg.min_calibration:
            return [(w, e.mu, 0.0)] if poisson_cdf(0, e.mu / e.scale) < alpha else []
        sure = self._sure_run(run, alpha) if len(self.dispersion) >= self.cfg.min_calibration else None
        if sure is None:
            return []
        threshold = lowest_count_beyond_chance(e.mu, e.scale, alpha)
        return [(r.window, r.mu, threshold) for r in sure if not r.raised]

    def _sure_run(self, run: list[Low], alpha: float) -> list[Low] | None:
        """The shortest tail of a low run (its newest window alone, then with the ones before it)
        that, as one count against the sum of its forecasts, is a drop beyond chance; else None."""
        for k in range(1, len(run) + 1):
            got, wanted = sum(r.window.request_count for r in run[-k:]), sum(r.mu for r in run[-k:])
            together = self._run_variance(run[-k:]) / wanted
            if poisson_cdf(got / together, wanted / together) < alpha:
                return run[-k:]
        return None

    def _open_run(self, step: int) -> list[Low]:
        """The low windows in a row that end at open window `step`: open ones, then the final low run
        when they reach back to the newest final window, at most `drop_run` of them."""
        run, at = [], step
        while at in self.open_lows:
            run.insert(0, self.open_lows[at])
            at -= 1
        if self.last_final is not None and at == self.last_final and self.low_run \
                and round(step_of(self.low_run[-1].window)) == at:
            run = self.low_run + run
        return run[-self.cfg.drop_run:]

    def _run_variance(self, run: list[Low]) -> float:
        """Variance of a run's total count: each window's own noise, plus 2 x each pair's shared level error."""
        rho = self.cfg.shift_min_relative
        own = sum(self.dispersion.phi * (r.mu + (rho * r.mu) ** 2) + r.drift for r in run)
        shared = sum(r.wobble for r in run) ** 2 - sum(r.wobble ** 2 for r in run)
        return own + shared

    def _expected(self, step: float) -> Expected:
        rho = self.cfg.shift_min_relative
        mu = max(self.trend.at(step, lowest_after_gap=True), FLOOR)
        drift = self._drift(step, mu)
        if "line" in self.trend.forecasts and self._warming_up():
            # In the warm-up a handful of windows cannot tell a level from a slope: the level may be
            # off by as much as the line through them differs from it here.
            drift += (self.trend.forecasts["line"](step) - mu) ** 2
        wobble = math.sqrt((rho * mu) ** 2 + drift)
        base = mu + (rho * mu) ** 2
        # counts divided by variance / mean are Poisson-like again; the drift is in counts already
        scale = (self.dispersion.phi * base + drift) / mu
        likely = (self.dispersion.estimate * base + drift) / mu
        return Expected(mu, drift, wobble, scale, likely)

    def _surge(self, step: float, y: float, e: Expected) -> bool:
        """A flash crowd: `surge_ratio` x the usual level (the median, or the rhythm's forecast
        where that is higher; not a fast forecast that followed the crowd), and beyond chance."""
        floor = self.trend.forecasts["flat"](step)
        if "rhythm" in self.trend.forecasts:
            floor = max(floor, self.trend.forecasts["rhythm"](step))
        return (y > self.cfg.surge_ratio * floor
                and 1 - poisson_cdf(y / e.likely - 1, e.mu / e.likely) < self.surge_alpha)

    def _after_surge(self, step: float, y: float) -> None:
        """After a flash crowd the level it left is unknown: the forecast and its noise start again
        from the windows after it (the rhythm goes on)."""
        self.trend.restart()
        self._new_noise()
        self.held, self.held_kind, self.low_run = [], None, []
        self._learn(step, y)

    def _settle(self, step: float, y: float, low: bool) -> None:
        """Learn a window that is no drop. A normal one after windows held only as unlikely clears
        them into the baseline (it needs its low tail); a low one clears nothing."""
        if self.held_kind == "low" and not low and not any(sure for _, _, sure in self.held):
            for held_step, held_y, _ in self.held:
                self._calibrate(held_step, held_y)
                self._learn(held_step, held_y)
        self.held, self.held_kind = [], None
        self._calibrate(step, y)
        self._learn(step, y)

    @property
    def dispersion(self) -> Dispersion:
        """The over-dispersion the judgements use: that of the forecast in use, from its own last
        `lookback_windows` errors once it has `scored_errors`; before, that of the errors the
        forecasts in use made as they were made."""
        if self._warming_up():
            return self.trend.spread(lambda _, y, expected: self._standardized(y, expected), self.cfg.dispersion_windows)
        return self._own_noise()

    def _own_noise(self) -> Dispersion:
        own = self.dispersions.get(self.trend.chosen() or "")
        return own if own is not None and len(own) >= self.cfg.scored_errors else self.in_use

    def _warming_up(self) -> bool:
        """Whether the noise is the spread of the history (`Trend.spread`): the series has a history,
        and its forecasts have not made errors enough yet to calibrate its own."""
        return len(self.trend) >= self.cfg.min_history and len(self._own_noise()) < self.cfg.min_calibration

    def _calibrated(self) -> bool:
        """Whether the noise comes from the forecasts' own errors. Before, a level of a handful of
        windows is too little known to hold low windows back from it for long: `drop_run` of them
        in a row that are no sure drop are the level moving (a rhythm's slope), and are learned."""
        return len(self._own_noise()) >= self.cfg.min_calibration

    def _new_noise(self) -> None:
        """No errors known yet: of the forecasts in use as they were made (`in_use`), nor of each
        forecast (`dispersions`; the rhythm's is measured anew at every `_learn`)."""
        self.in_use = Dispersion(self.cfg.dispersion_windows)
        self.dispersions = {name: Dispersion(self.cfg.lookback_windows) for name in MODELS}

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
        expected, rho = max(expected, FLOOR), self.cfg.shift_min_relative
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
        one, beyond a one-step forecast's error (0 right after it): for the rhythm, what its own
        forecasts from that far back missed by; for the others, as much as the level moved in that
        many windows in the history (or what they missed, if more); at least a random walk of wobbles."""
        gap = min(round(step - self.trend.last), self.cfg.lookback_windows)
        if gap <= 1:
            return 0.0
        rho = self.cfg.shift_min_relative
        floor = (gap - 1) * (rho * mu) ** 2
        farther = self.trend.farther(step)
        if farther is not None and self.trend.chosen() == "rhythm":
            return max(floor, farther)
        at = dict(self.learned)
        differences = [(y - at[t - gap]) ** 2 for t, y in self.learned if t - gap in at]
        moved = 0.0
        if len(differences) >= self.cfg.min_differences:
            noise = 2 * self.dispersion.estimate * (mu + (rho * mu) ** 2)  # of a difference of two counts
            moved = sum(differences) / len(differences) - noise
        return max(floor, moved, farther or 0.0)

    def _hold(self, kind: str, step: float, y: float, sure: bool = False) -> None:
        """Keep a low or surge window out of the baseline (`sure`: it is part of a drop found).
        Traffic at such a level for `lookback_windows` windows is the new normal (before the noise is
        calibrated, `drop_run` low windows with no sure drop among them: see `_calibrated`);
        silence never is."""
        if kind != self.held_kind or y == 0:
            self.held, self.held_kind = [], kind
        if y == 0:
            return
        self.held.append((step, y, sure))
        doubts = not any(was_sure for _, _, was_sure in self.held)
        if len(self.held) >= (self.cfg.lookback_windows if self._calibrated() or not doubts else self.cfg.drop_run):
            for held_step, held_y, _ in self.held:
                self._learn(held_step, held_y)
            self.held, self.held_kind = [], None

    def snapshot(self) -> dict:
        """The model as plain data (see `from_snapshot`)."""
        return {"trend": self.trend.snapshot(), "learned": [list(x) for x in self.learned],
                "in_use": self.in_use.snapshot(),
                "dispersions": {n: d.snapshot() for n, d in self.dispersions.items()},
                "low_run": [r.data() for r in self.low_run], "held": [list(x) for x in self.held],
                "held_kind": self.held_kind, "before": self.before, "last_final": self.last_final,
                "open_lows": [[s, r.data()] for s, r in self.open_lows.items()]}

    @classmethod
    def from_snapshot(cls, cfg: DetectorConfig, data: dict) -> TrafficModel:
        """The model `snapshot` wrote, as it was."""
        model = cls(cfg)
        model.trend = Trend.from_snapshot(cfg, data["trend"])
        model.learned.extend(tuple(x) for x in data["learned"])
        model.in_use = Dispersion.from_snapshot(data["in_use"])
        model.dispersions = {n: Dispersion.from_snapshot(d) for n, d in data["dispersions"].items()}
        model.low_run = [Low(Window.from_data(w), *rest) for w, *rest in data["low_run"]]
        model.held = [tuple(x) for x in data["held"]]
        model.held_kind, model.before = data["held_kind"], data["before"]
        model.last_final = data["last_final"]
        model.open_lows = {s: Low(Window.from_data(w), *rest) for s, (w, *rest) in data["open_lows"]}
        return model


def lowest_count_beyond_chance(mu: float, scale: float, alpha: float) -> float:
    """The largest count one window could hold and still be a drop at this alpha (for display)."""
    if poisson_cdf(0.0, mu / scale) >= alpha:
        return 0.0
    lo, hi = 0.0, mu
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        if poisson_cdf(mid / scale, mu / scale) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


class TrafficDrop:
    """The traffic half of baseline_shift walking one series (see the module's docstring)."""

    name = "baseline_shift"

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.alpha = tail_probability(cfg.shift_z)
        self.model = TrafficModel(cfg)

    def learns_from_open(self) -> bool:
        """Never: it learns from final windows only (the open low windows it keeps are no lesson)."""
        return False

    def see(self, w: Window, complete: bool = False) -> list[Anomaly]:
        """The drops a final window, or an open one whose time has passed (`complete`), completes."""
        if w.is_final:
            drops = self.model.judge(w, self.alpha)
        else:
            drops = self.model.judge_open(w, self.alpha) if complete else []
        return [anomaly(self.name, low, "request_count", low.request_count, expected, threshold,
                        threshold / max(low.request_count, 1))
                for low, expected, threshold in drops]

    def snapshot(self) -> dict:
        """What it learned, as plain data (see `from_snapshot`)."""
        return {"model": self.model.snapshot()}

    @classmethod
    def from_snapshot(cls, cfg: DetectorConfig, data: dict) -> TrafficDrop:
        """The walker `snapshot` wrote, as it was."""
        walker = cls(cfg)
        walker.model = TrafficModel.from_snapshot(cfg, data["model"])
        return walker

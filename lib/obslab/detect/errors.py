"""error_surge: errors well above a series' usual rate, judged as a count of the window's requests."""

from __future__ import annotations

import math
from collections import deque
from statistics import median

from obslab.detect.config import DetectorConfig
from obslab.detect.noise import binomial_sf, dispersion_of, tail_probability, wilson_upper
from obslab.detect.walk import walk
from obslab.detect.window import Anomaly, Window, anomaly, step_of, usable


def wilson_lower(errors: int, n: int, z: float) -> float:
    """Lower bound of the Wilson score interval for a proportion: small samples get wide bounds."""
    if n == 0:
        return 0.0
    p = errors / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def error_surge(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """Errors well above the usual rate, judged as a count of the window's requests.

    The usual rate is the pooled rate of the last clean final windows (at least
    `error_rate_floor`); the threshold is `error_surge_factor` x the usual odds of an error. A
    window fires when it is surely above the threshold (the lower end of its rate's Wilson
    interval at `error_margin_z` is) and beyond chance (that many errors at the usual rate, taken
    at its upper bound, rarer than the tail of `error_confidence_z`, exact binomial), both on
    counts divided by the series' over-dispersion (see `ErrorBaseline`). A window above the
    threshold but not sure is judged again together with the next one or two.
    """
    return walk(ErrorSurge(cfg), series)


class ErrorSurge:
    """error_surge walking one series, one window at a time (see `error_surge`)."""

    name = "error_surge"

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.alpha = tail_probability(cfg.error_confidence_z)
        self.usual = ErrorBaseline(cfg)
        self.elevated: list[Window] = []  # the latest final windows above the threshold but not sure
        self.finals = 0  # final windows learned

    def learns_from_open(self) -> bool:
        """While no final window is learned: complete open windows stand in as history (see `see`)."""
        return not self.finals

    def see(self, w: Window, complete: bool = False) -> list[Anomaly]:
        """The anomalies window `w` shows (it, and suspects before it that add up with it); then
        learn from it. `complete`: an open window that a later one follows."""
        usual = self.usual
        above = usual.ready() and w.request_count > 0 and w.error_rate > usual.threshold
        out = self._judge(w) if above and usable(w, self.cfg) else []
        if w.is_final:
            # a suspect joins the usual rate only once a later window clears it, never when a surge follows
            if out:
                self.elevated = []
            elif above:
                self.elevated.append(w)
                if len(self.elevated) > self.cfg.suspects_kept:
                    self._learn(self.elevated.pop(0))
            else:
                for r in self.elevated + [w]:
                    self._learn(r)
                self.elevated = []
        elif w.request_count and not out and complete and self.learns_from_open():
            # cold start (no final window yet): complete open windows stand in as the history
            usual.learn(w)
        return out

    def _judge(self, w: Window) -> list[Anomaly]:
        # The window alone, then with the suspects just before it: a surge on a quiet service
        # adds up over windows, and is then a surge in each window surely above the threshold.
        usual, step = self.usual, step_of(w)
        before = [b for b in self.elevated if step - self.cfg.suspect_reach <= step_of(b) < step]
        for k in range(len(before) + 1):
            run = before[len(before) - k:] + [w]
            if usual.surge(sum(r.error_count for r in run), sum(r.request_count for r in run), self.alpha):
                return [anomaly(self.name, r, "error_rate", r.error_rate, usual.rate, usual.threshold,
                                r.error_rate / usual.threshold)
                        for r in run if r is w or usual.above(r.error_count, r.request_count)]
        return []

    def _learn(self, w: Window) -> None:
        if w.request_count:
            self.usual.learn(w)
            self.finals += 1

    def snapshot(self) -> dict:
        """What it learned, as plain data (see `from_snapshot`)."""
        return {"usual": self.usual.snapshot(), "elevated": [w.data() for w in self.elevated], "finals": self.finals}

    @classmethod
    def from_snapshot(cls, cfg: DetectorConfig, data: dict) -> ErrorSurge:
        """The walker `snapshot` wrote, as it was."""
        walker = cls(cfg)
        walker.usual = ErrorBaseline.from_snapshot(cfg, data["usual"])
        walker.elevated = [Window.from_data(w) for w in data["elevated"]]
        walker.finals = data["finals"]
        return walker


class ErrorBaseline:
    """The usual error rate of a series' last clean final windows, and the threshold built on it.

    Errors are binomial, widened by the over-dispersion phi >= 1 that the windows' Pearson
    residuals against the pooled rate show (taken at the upper end of its interval, see
    obslab.detect.noise.Dispersion), blended with a prior worth `error_prior_windows` windows: a
    rate that wobbles by `error_wobble`. For an open window that holds 1/f of the usual requests
    the estimated excess phi - 1 counts f times (a shorter span wobbles more).

    The first `min_calibration` windows are learned on trust; once as many have followed, each is
    judged against those later ones, and a surge among them leaves the baseline.
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
        """Surely above the threshold rate, and beyond chance at the usual rate (exact binomial
        tail below alpha), on counts divided by phi."""
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
        judge = ErrorBaseline(self.cfg, trusting=False)
        judge.history.extend(later)
        judge.longer.extend(later)
        judge._update()
        alpha = tail_probability(self.cfg.error_confidence_z)
        kept = [(n, e) for n, e in first if not judge.surge(e, n, alpha)] + later
        self.on_trust = 0
        self.history = deque(kept, maxlen=self.history.maxlen)
        self.longer = deque(kept, maxlen=self.longer.maxlen)

    def _update(self) -> None:
        cfg = self.cfg
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
        # prior: phi = 1 + wobble^2 x the errors of a usual window, worth error_prior_windows windows
        prior = 1 + cfg.error_wobble ** 2 * max(self.rate, cfg.error_rate_floor) * self.typical
        m, weight = len(self.longer), cfg.error_prior_windows
        self.phi = (m * upper + weight * prior) / (m + weight)
        self.excess = (m * (estimate - 1) + weight * (prior - 1)) / (m + weight)
        phi = self.phi
        self.limit = max(wilson_upper(errors / phi, requests / phi, cfg.error_margin_z), cfg.error_rate_floor)
        usual = max(self.rate, cfg.error_rate_floor)
        odds = cfg.error_surge_factor * usual / (1 - usual) if usual < 1 else math.inf
        self.threshold = 1.0 if math.isinf(odds) else odds / (1 + odds)

    _STATE = ("rate", "limit", "threshold", "phi", "excess", "typical", "on_trust")

    def snapshot(self) -> dict:
        """The baseline as plain data (see `from_snapshot`)."""
        return {"history": [list(x) for x in self.history], "longer": [list(x) for x in self.longer]} | {
            name: getattr(self, name) for name in self._STATE}

    @classmethod
    def from_snapshot(cls, cfg: DetectorConfig, data: dict) -> ErrorBaseline:
        """The baseline `snapshot` wrote, as it was."""
        baseline = cls(cfg)
        baseline.history.extend(tuple(x) for x in data["history"])
        baseline.longer.extend(tuple(x) for x in data["longer"])
        for name in cls._STATE:
            setattr(baseline, name, data[name])
        return baseline

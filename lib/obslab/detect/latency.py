"""Latency: latency_spike (above m x the SLA) and the latency half of baseline_shift (above its usual level).

Both judge a window's average against the noise of an average of its requests (`LatencyModel`),
so one slow request among five is not a spike, and a deploy's few slow seconds are not a shift.
"""

from __future__ import annotations

import math
from collections import deque
from statistics import median

from obslab.detect.config import FLOOR, MEDIAN_SD, P99_Z, SPREAD_FLOOR, DetectorConfig
from obslab.detect.forecasts import Trend
from obslab.detect.noise import Dispersion
from obslab.detect.walk import walk
from obslab.detect.window import Anomaly, Window, anomaly, step_of, usable


class LatencyModel:
    """What a series' average latency usually is, and how much it may stray by chance.

    Expected value: the median of the last clean final windows (it follows a slow drift with a
    lag, but no ramp: a latency degradation is a fault to find). Noise of an average of n
    requests, s windows after the newest clean one:

        sd(n)^2 = phi * (sigma^2 / n + (rho * expected)^2 * (max(1, typical / n) + s - 1))

    sigma: the per-request spread, (p99 - p50) / 2.326 of the clean windows (errs on the quiet
    side for right-skewed latency); rho: `shift_min_relative`, the level wobble, wider for an
    open window that holds fewer than the `typical` requests of a window; phi >= 1: the
    over-dispersion of the clean windows' own one-step errors (see `noise`); s - 1 wobbles for a level that
    may have moved since. The threshold's z is raised by the Cornish-Fisher term for the skew
    that p99 / p50 implies (as if latency were lognormal), and the window's median request must
    be slower than usual too (`median_slower`).
    """

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.trend = Trend(cfg, flat_only=True)
        self.p99: deque[float] = deque(maxlen=cfg.lookback_windows)
        self.p50: deque[float] = deque(maxlen=cfg.trend_windows)
        self.shape: deque[tuple[float, float, int]] = deque(maxlen=cfg.trend_windows)  # (spread, log p99/p50, n)
        self.dispersion = Dispersion(cfg.dispersion_windows)
        self.sigma = self.skew = self.log_spread = 0.0
        self.typical = 1.0

    def ready(self) -> bool:
        """Whether a window can be judged against the history (its noise from the spread, at first: see `noise`)."""
        return len(self.trend) >= self.cfg.min_history

    def calibrated(self) -> bool:
        """Whether the noise comes from the clean windows' own one-step errors."""
        return self.ready() and len(self.dispersion) >= self.cfg.min_calibration

    def noise(self) -> Dispersion:
        """The over-dispersion judgements use: of the clean windows' own one-step errors once there
        are `min_calibration` of them; before, the spread of the history about its level, each
        window against the median of the others (bounded above like any dispersion)."""
        if len(self.dispersion) >= self.cfg.min_calibration:
            return self.dispersion
        counts = [n for _, _, n in self.shape]  # aligned with the trend's points (both the last trend_windows)

        def error_of(i: int, y: float, expected: float) -> float:
            expected = max(expected, FLOOR)
            return (y - expected) / math.sqrt(self._base_variance(expected, counts[i], self.trend.last))
        return self.trend.spread(error_of, self.cfg.dispersion_windows)

    def judges(self, w: Window) -> bool:
        """Whether this window's average can be judged: a calibrated model and enough requests."""
        return self.ready() and w.request_count >= self.cfg.min_latency_requests and usable(w, self.cfg)

    def threshold(self, w: Window, z: float) -> tuple[float, float]:
        """(expected average, the average above which this window is beyond chance at z)."""
        expected = self._expected(w)
        sd = math.sqrt(self.noise().phi * self._base_variance(expected, w.request_count, step_of(w)))
        skew = self.skew / math.sqrt(w.request_count)
        return expected, expected + (z + skew * (z * z - 1) / 6) * sd

    def median_slower(self, w: Window) -> bool:
        """Whether the window's median request is slower than usual beyond the noise of a median of
        its requests (at `median_z`, lognormal). A few very slow requests raise an average; a
        slowdown raises the median too."""
        if w.p50_latency_ms is None or not self.p50:
            return True
        usual = median(self.p50)
        return w.p50_latency_ms > usual * math.exp(
            self.cfg.median_z * MEDIAN_SD * self.log_spread / math.sqrt(w.request_count))

    def learn(self, w: Window) -> None:
        """Take a clean final window into the history (its own prediction error calibrates phi)."""
        if len(self.trend) >= self.cfg.min_history:
            expected = self._expected(w)
            variance = self._base_variance(expected, w.request_count, step_of(w))
            self.dispersion.add((w.avg_latency_ms - expected) / math.sqrt(variance))
        middle = w.p50_latency_ms if w.p50_latency_ms is not None else w.avg_latency_ms
        spread = max((w.p99_latency_ms - middle) / P99_Z, SPREAD_FLOOR)
        log_ratio = max(math.log(max(w.p99_latency_ms, FLOOR) / max(middle, FLOOR)) / P99_Z, 0.0)
        self.trend.add(step_of(w), w.avg_latency_ms)
        self.p99.append(w.p99_latency_ms)
        if w.p50_latency_ms is not None:
            self.p50.append(w.p50_latency_ms)
        self.shape.append((spread, log_ratio, w.request_count))
        self.sigma = median(x for x, _, _ in self.shape)
        self.typical = median(n for _, _, n in self.shape)
        self.log_spread = median(r for _, r, _ in self.shape)
        s2 = self.log_spread ** 2
        self.skew = (math.exp(s2) + 2) * math.sqrt(math.expm1(s2))  # a lognormal's skewness

    def usual_p99(self) -> float | None:
        return median(self.p99) if len(self.p99) >= self.cfg.min_history else None

    def _expected(self, w: Window) -> float:
        return max(self.trend.at(step_of(w)), FLOOR)

    def _base_variance(self, expected: float, n: int, step: float) -> float:
        wobble = max(1.0, self.typical / n) + self.trend.stale(step, self.cfg.lookback_windows)
        return self.sigma * self.sigma / n + wobble * (self.cfg.shift_min_relative * expected) ** 2

    _STATE = ("sigma", "skew", "log_spread", "typical")

    def snapshot(self) -> dict:
        """The model as plain data (see `from_snapshot`)."""
        return {"trend": self.trend.snapshot(), "p99": list(self.p99), "p50": list(self.p50),
                "shape": [list(s) for s in self.shape], "dispersion": self.dispersion.snapshot()} | {
            name: getattr(self, name) for name in self._STATE}

    @classmethod
    def from_snapshot(cls, cfg: DetectorConfig, data: dict) -> LatencyModel:
        """The model `snapshot` wrote, as it was."""
        model = cls(cfg)
        model.trend = Trend.from_snapshot(cfg, data["trend"])
        model.p99.extend(data["p99"])
        model.p50.extend(data["p50"])
        model.shape.extend(tuple(s) for s in data["shape"])
        model.dispersion = Dispersion.from_snapshot(data["dispersion"])
        for name in cls._STATE:
            setattr(model, name, data[name])
        return model


def latency_spike(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """Average and p99 latency both above m x the service's SLA, beyond the noise of the average.

    A service without an SLA is held to what it normally delivers: the median p99 of its last
    clean final windows (once there are `min_history` of them). Once the series' noise is
    calibrated, the average must also be beyond what chance allows an average of the window's
    requests (not on the warm-up's stand-in: a history that held an earlier fault would hide the next).
    """
    return walk(LatencySpike(cfg), series)


class LatencySpike:
    """latency_spike walking one series, one window at a time (see `latency_spike`)."""

    name = "latency_spike"

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.model = LatencyModel(cfg)

    def learns_from_open(self) -> bool:
        """Never: it learns from final windows only."""
        return False

    def see(self, w: Window, complete: bool = False) -> list[Anomaly]:
        """The anomaly window `w` shows, if any; then learn from it if it is final and clean."""
        cfg, model, out = self.cfg, self.model, []
        sla = cfg.latency_sla_ms.get(w.service)
        if sla is None:
            sla = model.usual_p99()
        if sla is not None and usable(w, cfg) and w.request_count >= cfg.min_latency_requests:
            threshold = cfg.latency_spike_factor * sla
            if (w.avg_latency_ms > threshold and w.p99_latency_ms > threshold
                    and (not model.calibrated() or w.avg_latency_ms > model.threshold(w, cfg.shift_z)[1])
                    and model.median_slower(w)):
                out.append(anomaly(self.name, w, "avg_latency_ms", w.avg_latency_ms, sla, threshold,
                                   w.avg_latency_ms / threshold))
        if w.is_final and w.request_count > 0 and not out:
            model.learn(w)
        return out

    def snapshot(self) -> dict:
        """What it learned, as plain data (see `from_snapshot`)."""
        return {"model": self.model.snapshot()}

    @classmethod
    def from_snapshot(cls, cfg: DetectorConfig, data: dict) -> LatencySpike:
        """The walker `snapshot` wrote, as it was."""
        walker = cls(cfg)
        walker.model = LatencyModel.from_snapshot(cfg, data["model"])
        return walker


class LatencyShift:
    """The latency half of baseline_shift: the average above its usual median by more than `shift_z`
    standard deviations of the noise of an average of the window's requests (see `LatencyModel`);
    open windows too, with the wobble of their shorter span. Slow for `lookback_windows` final
    windows in a row, the new level becomes the normal."""

    name = "baseline_shift"

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.model = LatencyModel(cfg)
        self.slow: list[Window] = []  # the latest consecutive final windows flagged as slow

    def learns_from_open(self) -> bool:
        """Never: it learns from final windows only."""
        return False

    def see(self, w: Window, complete: bool = False) -> list[Anomaly]:
        """The anomaly window `w` shows, if any; then learn from it if it is final."""
        cfg, model, out = self.cfg, self.model, []
        if model.judges(w):
            expected, threshold = model.threshold(w, cfg.shift_z)
            if w.avg_latency_ms > threshold and model.median_slower(w):
                out.append(anomaly(self.name, w, "avg_latency_ms", w.avg_latency_ms, expected, threshold,
                                   w.avg_latency_ms / threshold))
        if not w.is_final:
            return out
        if out:
            self.slow.append(w)
            if len(self.slow) >= cfg.lookback_windows:  # slow for that long: the new normal
                for slow in self.slow:
                    model.learn(slow)
                self.slow = []
        elif w.request_count > 0:  # a silent window has a count but no latency
            self.slow = []
            model.learn(w)
        return out

    def snapshot(self) -> dict:
        """What it learned, as plain data (see `from_snapshot`)."""
        return {"model": self.model.snapshot(), "slow": [w.data() for w in self.slow]}

    @classmethod
    def from_snapshot(cls, cfg: DetectorConfig, data: dict) -> LatencyShift:
        """The walker `snapshot` wrote, as it was."""
        walker = cls(cfg)
        walker.model = LatencyModel.from_snapshot(cfg, data["model"])
        walker.slow = [Window.from_data(w) for w in data["slow"]]
        return walker

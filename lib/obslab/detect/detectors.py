"""Rule-based detectors: pure functions from a time-ordered series of windows to anomalies.

Every anomaly carries its evidence (value, baseline, threshold, request count, window range) and
a severity from one documented rule: how far the value is past its threshold,

    value / threshold < 1.5  -> medium,   < 3 -> high,   otherwise critical

(for a downward rule, the ratio is threshold / value). Baselines are built only from final,
non-anomalous windows, so a long incident cannot teach the detector that it is normal.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from statistics import median

KINDS = {"error_surge": "errors", "burn_rate": "errors", "latency_spike": "latency",
         "baseline_shift:avg_latency_ms": "latency", "baseline_shift:request_count": "traffic"}


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


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds of every detector (from settings: see obslab.settings, DETECT_* and SLO_*)."""

    error_surge_factor: float = 3.0
    error_confidence_z: float = 3.0
    error_rate_prior: float = 0.02
    error_prior_requests: float = 500.0
    error_rate_floor: float = 0.005
    latency_sla_ms: dict = field(default_factory=lambda: {"checkout": 300.0, "payments": 400.0, "search": 150.0})
    latency_spike_factor: float = 2.0
    shift_z: float = 6.0
    shift_min_relative: float = 0.03
    lookback_windows: int = 30
    min_history: int = 5
    slo_availability: dict = field(default_factory=lambda: {"checkout": 0.99, "payments": 0.99, "search": 0.99})
    default_slo_availability: float = 0.99  # the SLO of a service `slo_availability` does not name
    burn_threshold: float = 14.4
    burn_short_windows: int = 5
    burn_long_windows: int = 60
    min_partial_requests: int = 30  # an open window is judged once it holds this many requests

    NEVER = 2**62  # as min_partial_requests: only final windows are judged


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
                   w.window_end, w.request_count, severity(ratio), not w.is_final)


def _usable(w: Window, cfg: DetectorConfig) -> bool:
    # An open window may be judged early, but only once it holds enough requests to say anything.
    return w.request_count > 0 and (w.is_final or w.request_count >= cfg.min_partial_requests)


def error_surge(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """Error rate above k x baseline, judged by the Wilson lower bound so small windows stay quiet.

    The baseline is the pooled rate (errors / requests) of the last clean final windows, not the
    median of their rates: on a sparse series (an endpoint with a few requests a window) most
    windows have no error at all, and a median of 0 would make any error look like a surge. It is
    shrunk towards the prior rate by `error_prior_requests` pseudo-requests, so a short history
    that happens to hold almost no error (1 in 400 where 2 % is usual) cannot set the bar at a
    fraction of normal; with more history the series' own rate takes over.
    """
    out, history = [], []
    for w in series:
        recent = history[-cfg.lookback_windows:]
        requests = sum(n for n, _ in recent)
        errors = sum(e for _, e in recent)
        prior = cfg.error_prior_requests
        base = (errors + cfg.error_rate_prior * prior) / (requests + prior) if requests + prior else cfg.error_rate_prior
        base = max(base, cfg.error_rate_floor)
        threshold = cfg.error_surge_factor * base
        lower = wilson_lower(w.error_count, w.request_count, cfg.error_confidence_z)
        if _usable(w, cfg) and lower > threshold:
            out.append(_anomaly("error_surge", w, "error_rate", w.error_rate, base, threshold, w.error_rate / threshold))
        elif w.is_final:
            history.append((w.request_count, w.error_count))
    return out


def latency_spike(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """Average and p99 latency both above m x the service's SLA.

    A service without a configured SLA is held to what it normally delivers: the median p99 of its
    last clean final windows (once there are `min_history` of them). Services come from the data,
    so a new one is watched from its first few windows on instead of never.
    """
    configured = cfg.latency_sla_ms.get(series[0].service) if series else None
    out, normal_p99 = [], []
    for w in series:
        sla = configured
        if sla is None and len(normal_p99) >= cfg.min_history:
            sla = median(normal_p99[-cfg.lookback_windows:])
        fired = False
        if sla is not None and _usable(w, cfg):
            threshold = cfg.latency_spike_factor * sla
            if w.avg_latency_ms > threshold and w.p99_latency_ms > threshold:
                out.append(_anomaly("latency_spike", w, "avg_latency_ms", w.avg_latency_ms, sla, threshold,
                                    w.avg_latency_ms / threshold))
                fired = True
        if configured is None and w.is_final and w.request_count > 0 and not fired:
            normal_p99.append(w.p99_latency_ms)
    return out


def robust_z(value: float, history: list[float], min_relative: float) -> tuple[float, float, float]:
    """(z, median, scale): deviation in robust standard deviations (1.4826 x MAD, at least
    `min_relative` x median, so a very steady series does not fire on a tiny change)."""
    centre = median(history)
    mad = median(abs(x - centre) for x in history)
    scale = max(1.4826 * mad, min_relative * abs(centre), 1e-9)
    return (value - centre) / scale, centre, scale


def baseline_shift(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """Latency creeping up, or traffic falling, against the series' own robust baseline."""
    out: list[Anomaly] = []
    latency_history: list[float] = []
    count_history: list[float] = []
    for w in series:
        flagged = False
        if len(latency_history) >= cfg.min_history and _usable(w, cfg):
            z, centre, scale = robust_z(w.avg_latency_ms, latency_history[-cfg.lookback_windows:], cfg.shift_min_relative)
            if z > cfg.shift_z:
                threshold = centre + cfg.shift_z * scale
                out.append(_anomaly("baseline_shift", w, "avg_latency_ms", w.avg_latency_ms, centre, threshold,
                                    w.avg_latency_ms / threshold))
                flagged = True
        # Traffic is judged on final windows only: an open window is short of requests by nature.
        if len(count_history) >= cfg.min_history and w.is_final:
            z, centre, scale = robust_z(w.request_count, count_history[-cfg.lookback_windows:], cfg.shift_min_relative)
            if z < -cfg.shift_z:
                threshold = centre - cfg.shift_z * scale
                out.append(_anomaly("baseline_shift", w, "request_count", w.request_count, centre, threshold,
                                    threshold / max(w.request_count, 1)))
                flagged = True
        if w.is_final and not flagged:
            # A window without requests (a silent service) has a count but no latency.
            if w.request_count > 0:
                latency_history.append(w.avg_latency_ms)
            count_history.append(w.request_count)
    return out


def burn_rate(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """SLO error-budget burn above the threshold over both a short and a long window (SRE workbook)."""
    if not series:
        return []
    slo = cfg.slo_availability.get(series[0].service, cfg.default_slo_availability)
    budget = 1.0 - slo
    out = []
    for i, w in enumerate(series):
        if not _usable(w, cfg):
            continue
        short = series[max(0, i - cfg.burn_short_windows + 1): i + 1]
        long = series[max(0, i - cfg.burn_long_windows + 1): i + 1]
        burn_short = _rate(short) / budget
        burn_long = _rate(long) / budget
        if burn_short > cfg.burn_threshold and burn_long > cfg.burn_threshold:
            out.append(_anomaly("burn_rate", w, "error_budget_burn", burn_short, burn_long, cfg.burn_threshold,
                                min(burn_short, burn_long) / cfg.burn_threshold))
    return out


def _rate(windows: list[Window]) -> float:
    n = sum(w.request_count for w in windows)
    return sum(w.error_count for w in windows) / n if n else 0.0


DETECTORS = {"error_surge": error_surge, "latency_spike": latency_spike, "baseline_shift": baseline_shift,
             "burn_rate": burn_rate}


def detect_series(series: list[Window], cfg: DetectorConfig, detectors=None) -> list[Anomaly]:
    """Run the detectors over one time-ordered series."""
    series = sorted(series, key=lambda w: w.window_start)
    names = detectors or list(DETECTORS)
    found: list[Anomaly] = []
    for name in names:
        if name == "burn_rate" and series and series[0].endpoint is not None:
            continue  # the SLO is a service's promise, not an endpoint's
        found.extend(DETECTORS[name](series, cfg))
    return sorted(found, key=lambda a: (a.window_start, a.detector, a.metric))

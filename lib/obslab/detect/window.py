"""What the detectors read and write: a metric `Window` of one series, and an `Anomaly` with its evidence.

Every anomaly carries its evidence (value, baseline, threshold, request count, window range) and
a severity from one documented rule: how far the value is past its threshold,

    value / threshold < 1.5  -> medium,   < 3 -> high,   otherwise critical

(for a downward rule, the ratio is threshold / value).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from obslab.detect.config import SEVERITY_CRITICAL, SEVERITY_HIGH, DetectorConfig

# detector (or detector:metric) -> kind: anomalies of one service and kind form one incident
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
    p50_latency_ms: float | None = None  # the per-request spread (p99 - p50) sizes latency noise

    @property
    def error_rate(self) -> float:
        return self.error_count / self.request_count if self.request_count else 0.0

    def data(self) -> dict:
        """The window as plain JSON-able data (times as ISO strings), for a detector's snapshot."""
        return asdict(self) | {"window_start": self.window_start.isoformat(), "window_end": self.window_end.isoformat()}

    @classmethod
    def from_data(cls, data: dict) -> Window:
        """The window `data()` wrote."""
        return cls(**data | {"window_start": datetime.fromisoformat(data["window_start"]),
                             "window_end": datetime.fromisoformat(data["window_end"])})


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


def severity(ratio: float) -> str:
    """The documented rule: how far past the threshold (ratio >= 1)."""
    return "medium" if ratio < SEVERITY_HIGH else "high" if ratio < SEVERITY_CRITICAL else "critical"


def anomaly(detector: str, w: Window, metric: str, value, baseline, threshold, ratio) -> Anomaly:
    """An anomaly of window `w` with its evidence; `ratio`: how far past the threshold (sets the severity)."""
    return Anomaly(detector, w.service, w.endpoint, metric, float(value),
                   None if baseline is None else float(baseline), float(threshold), w.window_start,
                   w.window_end, w.request_count, severity(max(ratio, 1.0)), not w.is_final)


def usable(w: Window, cfg: DetectorConfig) -> bool:
    """Whether a window is judged at all: an open one once it holds `min_partial_requests` (it is
    judged by the noise of the requests it holds so far)."""
    return w.request_count > 0 and (w.is_final or w.request_count >= cfg.min_partial_requests)


def step_of(w: Window) -> float:
    """The window's position in window lengths: series with gaps keep their spacing in time."""
    length = (w.window_end - w.window_start).total_seconds() or 1.0
    return w.window_start.timestamp() / length

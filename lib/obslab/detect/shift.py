"""baseline_shift: latency creeping up, or traffic falling, against what the series' own history expects.

One detector name, two independent halves: the latency half (obslab.detect.latency.LatencyShift:
the average above its usual median beyond the noise of an average of the window's requests) and
the traffic half (obslab.detect.traffic.TrafficDrop: a final window's request count below the
best of competing forecasts, as a quasi-Poisson count). Each keeps its own history.
"""

from __future__ import annotations

from obslab.detect.config import DetectorConfig
from obslab.detect.latency import LatencyShift
from obslab.detect.traffic import TrafficDrop
from obslab.detect.walk import walk
from obslab.detect.window import Anomaly, Window


def baseline_shift(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """Latency creeping up, or traffic falling, against what the series' own history expects."""
    return walk(BaselineShift(cfg), series)


class BaselineShift:
    """baseline_shift walking one series: its latency half, then its traffic half, on each window."""

    name = "baseline_shift"

    def __init__(self, cfg: DetectorConfig):
        self.latency = LatencyShift(cfg)
        self.traffic = TrafficDrop(cfg)

    def learns_from_open(self) -> bool:
        return self.latency.learns_from_open() or self.traffic.learns_from_open()

    def see(self, w: Window, complete: bool = False) -> list[Anomaly]:
        """The anomalies window `w` shows: a slow average, then the drops it completes."""
        return self.latency.see(w, complete) + self.traffic.see(w, complete)

    def snapshot(self) -> dict:
        """What both halves learned, as plain data (see `from_snapshot`)."""
        return {"latency": self.latency.snapshot(), "traffic": self.traffic.snapshot()}

    @classmethod
    def from_snapshot(cls, cfg: DetectorConfig, data: dict) -> BaselineShift:
        """The walker `snapshot` wrote, as it was."""
        walker = cls(cfg)
        walker.latency = LatencyShift.from_snapshot(cfg, data["latency"])
        walker.traffic = TrafficDrop.from_snapshot(cfg, data["traffic"])
        return walker

"""burn_rate: SLO error-budget burn above the threshold over both a short and a long span (SRE workbook)."""

from __future__ import annotations

from collections import deque

from obslab.detect.config import DetectorConfig
from obslab.detect.walk import walk
from obslab.detect.window import Anomaly, Window, anomaly, usable


def burn_rate(series: list[Window], cfg: DetectorConfig) -> list[Anomaly]:
    """SLO error-budget burn above the threshold over both a short and a long span (SRE workbook)."""
    return walk(BurnRate(cfg), series)


class BurnRate:
    """burn_rate walking one series: the error rate of the last `burn_short_windows` and of the
    last `burn_long_windows` windows (open ones too), each as a multiple of the error budget."""

    name = "burn_rate"

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        # (requests, errors) of the latest windows: the long span
        self.recent: deque[tuple[int, int]] = deque(maxlen=max(cfg.burn_short_windows, cfg.burn_long_windows))
        self.seen = 0  # windows seen

    def learns_from_open(self) -> bool:
        """Always: an open window counts in the spans of the windows after it."""
        return True

    def see(self, w: Window, complete: bool = False) -> list[Anomaly]:
        """The anomaly window `w` shows, if its spans burn the budget too fast."""
        cfg = self.cfg
        self.recent.append((w.request_count, w.error_count))
        self.seen += 1
        if self.seen < cfg.burn_short_windows or not usable(w, cfg):
            return []  # a span shorter than the short window says nothing about a budget
        budget = 1.0 - cfg.slo_availability.get(w.service, cfg.default_slo_availability)
        burn_short = self._rate(cfg.burn_short_windows) / budget
        burn_long = self._rate(cfg.burn_long_windows) / budget
        if burn_short > cfg.burn_threshold and burn_long > cfg.burn_threshold:
            return [anomaly(self.name, w, "error_budget_burn", burn_short, burn_long, cfg.burn_threshold,
                            min(burn_short, burn_long) / cfg.burn_threshold)]
        return []

    def _rate(self, windows: int) -> float:
        span = list(self.recent)[-windows:]
        requests = sum(n for n, _ in span)
        return sum(e for _, e in span) / requests if requests else 0.0

    def snapshot(self) -> dict:
        """What it counted, as plain data (see `from_snapshot`)."""
        return {"recent": [list(x) for x in self.recent], "seen": self.seen}

    @classmethod
    def from_snapshot(cls, cfg: DetectorConfig, data: dict) -> BurnRate:
        """The walker `snapshot` wrote, as it was."""
        walker = cls(cfg)
        walker.recent.extend(tuple(x) for x in data["recent"])
        walker.seen = data["seen"]
        return walker

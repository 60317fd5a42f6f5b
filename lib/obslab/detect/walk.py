"""The detector interface, walking a series with it, and what a detection run remembers between runs.

A detector walks one series (a service, or a service's endpoint) one window at a time, oldest
first: `see(window)` judges the window, then learns from it if it is final and clean (what a
window teaches depends on whether it was flagged, so the walk is sequential). Its state is plain
data that it writes down (`snapshot()`) and reads back exactly (`from_snapshot(cfg, data)`), so
a restart or a test rebuilds a detector as it was.

A detection run walks every series of its lookback again, though only the open windows and the
windows that became final are new. A `SeriesMemory`, owned by the caller (one per detection loop),
keeps what the detectors learned from each series' leading final windows, and the next run starts
from there when its series begins with the same final windows (a final window never changes).
The result is the same as walking from scratch; only the time differs.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from obslab.detect.config import DetectorConfig
from obslab.detect.window import Anomaly, Window


@runtime_checkable
class Detector(Protocol):
    """A detector walking one series window by window, keeping what it learned."""

    name: str  # the detector's name in its anomalies

    def see(self, window: Window, complete: bool = False) -> list[Anomaly]:
        """Judge `window`, then learn from it. `complete`: an open window that a later one follows."""
        ...

    def learns_from_open(self) -> bool:
        """Whether seeing an open window now would change what it learned (then a caller that
        keeps the detector walks open windows on a copy)."""
        ...

    def snapshot(self) -> dict:
        """What it learned, as plain JSON-able data."""
        ...

    @classmethod
    def from_snapshot(cls, cfg: DetectorConfig, data: dict) -> Detector:
        """The detector `snapshot` wrote, exactly as it was."""
        ...


def walk(detector: Detector, series: list[Window]) -> list[Anomaly]:
    """Walk one series from scratch with one detector: the anomalies it finds, in the order found."""
    series = sorted(series, key=lambda w: w.window_start)
    return [a for i, w in enumerate(series) for a in detector.see(w, complete=i + 1 < len(series))]


@dataclass
class _Walked:
    finals: tuple[int, int]  # (how many, hash) of the leading final windows walked, in order
    detectors: list[Detector]  # their state after the last of them
    found: list[Anomaly]  # what they found in them


class SeriesMemory:
    """Per series, what the detectors learned from its leading final windows (see the module's docstring)."""

    def __init__(self, size: int = 512):
        self.size = size  # series remembered (services and endpoints); least recently used dropped first
        self._walked: OrderedDict[tuple, _Walked] = OrderedDict()

    def __len__(self) -> int:
        return len(self._walked)

    def walk(self, series: list[Window], cfg: DetectorConfig, detectors: dict[str, type],
             elapsed: datetime | None = None) -> list[Anomaly]:
        """The anomalies the detectors (name -> class) find in one time-ordered series. An open
        window is complete when a later one follows it, or when it ends by `elapsed` (the newest
        window of any series has begun: its time has passed, even for a series gone silent)."""
        if not series or not detectors:
            return []
        final_count = next((i for i, w in enumerate(series) if not w.is_final), len(series))
        walked = self._resume(series, cfg, detectors, final_count)
        for w in series[walked.finals[0]:final_count]:
            for detector in walked.detectors:
                walked.found.extend(detector.see(w))
        walked.finals = (final_count, hash(tuple(series[:final_count])))
        tail = series[final_count:]
        # the open windows (and any final one after them) are walked on a copy by a detector they
        # would teach: what is remembered is what the leading final windows taught
        walkers = [copy.deepcopy(d) if d.learns_from_open() or any(w.is_final for w in tail) else d
                   for d in walked.detectors]
        complete = [i + 1 < len(tail) or (elapsed is not None and w.window_end <= elapsed)
                    for i, w in enumerate(tail)]
        return walked.found + [a for w, done in zip(tail, complete) for d in walkers for a in d.see(w, done)]

    def _resume(self, series: list[Window], cfg: DetectorConfig, detectors: dict[str, type],
                final_count: int) -> _Walked:
        """What was learned from this series' first final windows, if it still begins with them; else a fresh start."""
        key = (repr(cfg), series[0].service, series[0].endpoint, tuple(detectors))
        walked = self._walked.pop(key, None)
        if (walked is None or walked.finals[0] > final_count
                or walked.finals[1] != hash(tuple(series[:walked.finals[0]]))):
            walked = _Walked((0, hash(())), [cls(cfg) for cls in detectors.values()], [])
        self._walked[key] = walked
        while len(self._walked) > self.size:
            self._walked.popitem(last=False)
        return walked

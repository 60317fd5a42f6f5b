"""The streaming detectors: from a time-ordered series of windows to anomalies, each with its evidence.

Every detector compares a window with what the series' own recent clean history expected, and
judges the difference against the noise a window of that size has (obslab.detect.noise): an open
window that holds 30 requests is judged as 30 requests, not as a minute of traffic. One detector,
one module:

    error_surge     errors.py   errors as a binomial count, surely above k x the usual odds
    latency_spike   latency.py  average and p99 above m x the SLA (or the usual p99), beyond noise
    baseline_shift  shift.py    latency above its usual level (latency.py), or a final window's
                                request count below the forecast (traffic.py, forecasts.py)
    burn_rate       burn.py     SLO error-budget burn over a short and a long span (SRE workbook)

Their numbers are in config.py, the interface and the per-series memory in walk.py, and the
method's story in docs/detection.md. Baselines are built only from final, non-anomalous windows,
so a long incident cannot teach a detector that it is normal.
"""

from __future__ import annotations

from datetime import datetime

from obslab.detect.burn import BurnRate, burn_rate
from obslab.detect.config import DetectorConfig
from obslab.detect.errors import ErrorSurge, error_surge, wilson_lower
from obslab.detect.latency import LatencySpike, latency_spike
from obslab.detect.shift import BaselineShift, baseline_shift
from obslab.detect.walk import Detector, SeriesMemory
from obslab.detect.window import KINDS, Anomaly, Window, severity

__all__ = ["DETECTORS", "KINDS", "Anomaly", "Detector", "DetectorConfig", "SeriesMemory", "Window", "baseline_shift",
           "burn_rate", "detect_series", "error_surge", "latency_spike", "severity", "wilson_lower"]

DETECTORS: dict[str, type[Detector]] = {"error_surge": ErrorSurge, "latency_spike": LatencySpike,
                                        "baseline_shift": BaselineShift, "burn_rate": BurnRate}


def detect_series(series: list[Window], cfg: DetectorConfig, detectors=None,
                  memory: SeriesMemory | None = None, elapsed: datetime | None = None) -> list[Anomaly]:
    """Run the detectors (names; default all) over one series. `memory`: what earlier runs of the
    same detection loop learned (see obslab.detect.walk.SeriesMemory); without it, walk from scratch.
    `elapsed`: open windows ending by then are complete (their time has passed)."""
    series = sorted(series, key=lambda w: w.window_start)
    names = list(detectors or DETECTORS)
    if not series or series[0].endpoint is not None:
        names = [n for n in names if n != "burn_rate"]  # the SLO is a service's promise, not an endpoint's
    chosen = {n: DETECTORS[n] for n in names if n in DETECTORS}
    found = (memory if memory is not None else SeriesMemory()).walk(series, cfg, chosen, elapsed)
    return sorted(found, key=lambda a: (a.window_start, a.detector, a.metric))

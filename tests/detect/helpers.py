"""Shared helpers for the detect tests (not a test module): made-up metric windows and request traffic
for the streaming detectors (obslab.detect.detectors), and series, CSV files and the CLI for
detect-series (obslab.detect.series)."""

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
from typer.testing import CliRunner

from obslab.cli import app
from obslab.detect.config import DetectorConfig
from obslab.detect.detectors import SeriesMemory, detect_series
from obslab.detect.series_io import Series
from obslab.detect.window import Window

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
CFG = DetectorConfig()
CFG_SLA = DetectorConfig(latency_sla_ms={"payments": 400.0})  # what the catalogue or a setting would give


def windows(n=40, service="payments", count=200, error_rate=0.02, latency=200.0, seed=1, final=True, at=None):
    """A clean series with binomial errors and noisy latency; `at` = {minute: dict of overrides}."""
    rng = np.random.default_rng(seed)
    at = at or {}
    out = []
    for m in range(n):
        o = at.get(m, {})
        c = o.get("count", count)
        errors = o.get("errors", int(rng.binomial(c, o.get("error_rate", error_rate))))
        lat = o.get("latency", latency) * (1 + rng.normal(0, 0.2) / np.sqrt(max(c, 1)))
        out.append(Window(service, None, T0 + timedelta(minutes=m), T0 + timedelta(minutes=m + 1), c, errors,
                          lat, lat * 1.5, o.get("final", final)))
    return out


# ---------------------------------------------------------------------------------------------
# Traffic from first principles: every request drawn (Poisson arrivals, Bernoulli errors,
# latency per request), and the series judged as the detector sees it on every poll: the
# windows up to two back still open (the watermark), the newest one filling up.

@dataclass
class Traffic:
    """Requests of a series, window by window, in arrival order (time = window index + i / n)."""

    mean: float  # requests per window
    windows: int = 120
    seed: int = 0
    error_rate: float = 0.02
    latency: float = 200.0
    spread: float = 0.3  # per-request sd / mean (normal, floored at 10 ms), or lognormal sigma
    lognormal: bool = False
    amplitude: float = 0.0  # daily rhythm: the rate times 1 + amplitude x sin(2 pi k / period)
    period: float = 60.0
    rate: dict = field(default_factory=dict)  # window -> extra rate multiplier (flash crowd, drop)
    faults: list = field(default_factory=list)  # (start, end, what, size): what in errors | latency | drop
    service: str = "payments"
    endpoint: str | None = None

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        self._finals = {}
        self.requests = []  # per window: (times, latencies, errors)
        for k in range(self.windows):
            rate = self.mean * (1 + self.amplitude * np.sin(2 * np.pi * k / self.period)) * self.rate.get(k, 1.0)
            n = rng.poisson(rate)
            times = k + np.sort(rng.random(n))
            if self.lognormal:
                latency = self.latency * np.exp(rng.normal(-self.spread ** 2 / 2, self.spread, n))
            else:
                latency = np.maximum(rng.normal(self.latency, self.spread * self.latency, n), 10.0)
            p = np.full(n, self.error_rate)
            keep = np.ones(n, bool)
            for start, end, what, size in self.faults:
                inside = (times >= start) & (times < end)
                if what == "errors":
                    p = np.where(inside, size, p)
                elif what == "latency":
                    latency = np.where(inside, latency * size, latency)
                elif what == "drop":
                    keep &= ~(inside & (rng.random(n) < size))
            errors = rng.random(n) < p
            self.requests.append((times[keep], latency[keep], errors[keep]))

    def window(self, k: int, until: float | None = None, final: bool = True) -> Window | None:
        if final:
            if k not in self._finals:
                self._finals[k] = self._window(k, None, True)
            return self._finals[k]
        return self._window(k, until, False)

    def _window(self, k: int, until: float | None, final: bool) -> Window | None:
        times, latency, errors = self.requests[k]
        if until is not None:
            m = int(np.searchsorted(times, until))
            times, latency, errors = times[:m], latency[:m], errors[:m]
        start = T0 + timedelta(minutes=k)
        if len(times) == 0:
            return Window(self.service, self.endpoint, start, start + timedelta(minutes=1), 0, 0, 0.0, 0.0,
                          True) if final and self.endpoint is None else None
        p50, p99 = (float(np.quantile(latency, q, method="inverted_cdf")) for q in (0.5, 0.99))
        return Window(self.service, self.endpoint, start, start + timedelta(minutes=1), len(times),
                      int(errors.sum()), float(latency.mean()), p99, final, p50)

    def finals(self) -> list[Window]:
        return [w for k in range(self.windows) if (w := self.window(k)) is not None]

    def seen_at(self, now: float) -> list[Window]:
        """The series as a poll at time `now` (in windows) sees it: final once 2 windows have passed."""
        out = []
        for k in range(min(int(np.ceil(now)), self.windows)):
            final = k + 1 + 2 <= now
            w = self.window(k, None if final else now, final)
            if w is not None:
                out.append(w)
        return out

    def polled(self, start: float, step: float = 1 / 6):
        """(time, anomalies) of every poll from `start` to the end, 10 s apart by default; one
        detection loop, so one memory (test_walk checks it changes no result)."""
        now, memory = start, SeriesMemory()
        while now <= self.windows + 2:
            yield now, detect_series(self.seen_at(now), CFG_SLA, memory=memory)
            now += step


def anomalies_while_polled(traffic: Traffic, start: float = 30.0, step: float = 1 / 6) -> list:
    return [a for _, found in traffic.polled(start, step) for a in found]


def first_detection(traffic: Traffic, start: float, kind: str) -> tuple[float, object] | None:
    """(time in windows, anomaly) of the first poll that finds an anomaly of that kind."""
    for now, found in traffic.polled(start):
        hits = [a for a in found if a.kind == kind]
        if hits:
            return now, hits[0]
    return None


# Requests per minute in evaluation runs of the shipped `seasonal` traffic (30-minute rhythm, +-50 %,
# 15 % over-dispersion): two checkout endpoints, and search in 3 h of it without faults (the
# benchmark's clean run). A rise was taken for a flash crowd, the forecast started again at the
# peak, and the way down into the trough looked like a drop.
SEASONAL_SERIES = {
    "search, clean, seed 286758878": [
        230, 272, 281, 226, 333, 252, 375, 309, 339, 209, 249, 231, 257, 277, 156, 202, 191, 184, 86, 125, 148, 108,
        109, 123, 137, 119, 135, 116, 109, 154, 350, 237, 215, 277, 256, 368, 294, 261, 239, 248, 278, 271, 283, 174,
        275, 161, 138, 131, 146, 98, 85, 124, 111, 92, 120, 104, 127, 165, 172, 199, 207, 177, 221, 195, 328, 260],
    "cart, seed 594865952": [
        132, 211, 170, 149, 178, 181, 183, 173, 192, 164, 167, 134, 210, 129, 161, 102, 118, 118, 115, 119, 48, 53,
        36, 68, 91, 99, 95, 86, 95, 167, 152, 122, 169, 167, 170, 189, 192, 164, 160, 162, 157, 160, 173, 186, 195,
        126, 122, 111, 79, 86, 60, 52, 45, 65, 69, 76, 111, 98, 114, 119],
    "cart items, seed 1029906104": [
        117, 155, 194, 153, 148, 194, 136, 152, 233, 182, 182, 156, 142, 117, 138, 161, 110, 118, 86, 105, 68, 52, 76,
        71, 69, 74, 61, 107, 115, 133, 133, 132, 169, 182, 246, 196, 183, 181, 221, 190, 156, 218, 171, 194, 149, 141,
        98, 93, 81, 82, 71, 62, 69, 71, 78, 105, 80, 84, 142, 136],
}


# -- detect-series ----------------------------------------------------------------------------

runner = CliRunner()
Z = 5.0  # given explicitly: a change of SHIFT_Z's default must not move these tests
START = datetime(2026, 1, 5, tzinfo=timezone.utc)


def write(tmp_path, text, name="s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def write_series(tmp_path, times, values, name="s.csv"):
    return write(tmp_path, "time,value\n" + "".join(f"{t},{float(v)!r}\n" for t, v in zip(times, values)), name)


def regular(values, step=timedelta(hours=1)) -> Series:
    """A series at a regular step from START, as read_series_csv would return it."""
    times = [START + i * step for i in range(len(values))]
    return Series([t.isoformat() for t in times], times, [float(v) for v in values], len(times), 0, 0)


def cli(*args):
    out = runner.invoke(app, ["detect-series", *map(str, args)])
    return out.exit_code, out


def cli_json(path, *args):
    code, out = cli("--csv", path, "--time-col", "time", "--value-col", "value", "--z", Z, "--json", *args)
    assert code == 0, out.output
    return json.loads(out.stdout)


def daily_sine(n, period=24):
    return 100 + 20 * np.sin(2 * np.pi * np.arange(n) / period)


def ar1(rng, n, phi):
    out = np.zeros(n)
    shocks = rng.normal(size=n)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + shocks[t]
    return out

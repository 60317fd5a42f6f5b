"""The deterministic event stream: normal traffic plus the faults a scenario schedules.

`EventStream.tick(start, seconds)` returns the events whose time falls in [start, start + seconds),
as arrays (one row per event), plus the faults that started or ended in that span. The stream
holds only small state (sequence number, fractional-count carry, random generators, active
faults), so the same seed, scenario and start time give the same events byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from obslab.generator.profiles import BASELINE_LATENCY_MS, ERROR_CODES, LATENCY_FLOOR_MS, OK_CODES, SERVICES
from obslab.generator.scenario import FAULT_TYPES, FaultSpec, Scenario

_ENDPOINTS = [(s, e) for s, eps in SERVICES.items() for e in eps]  # global endpoint index -> (service, path)
_SERVICE_NAMES = list(SERVICES)


@dataclass(frozen=True)
class Fault:
    """A fault with absolute times: what ground truth stores."""

    fault_id: str
    type: str
    service: str
    endpoint: str | None
    start: datetime
    end: datetime  # planned end; a run that stops early closes it at the stop time
    magnitude: float

    def active_at(self, t: datetime) -> bool:
        return self.start <= t < self.end

    def progress(self, t: datetime) -> float:
        """0 at the start, 1 at the planned end."""
        return min(max((t - self.start) / (self.end - self.start), 0.0), 1.0)


@dataclass
class EventBatch:
    """Events of one tick as parallel arrays (a struct of arrays keeps generation vectorised)."""

    event_ids: list[str]
    times_ms: np.ndarray  # epoch milliseconds, int64
    endpoint_index: np.ndarray  # index into _ENDPOINTS
    latency_ms: np.ndarray
    status_code: np.ndarray
    started: list[Fault] = field(default_factory=list)
    ended: list[Fault] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.event_ids)

    def services(self) -> list[str]:
        return [_ENDPOINTS[i][0] for i in self.endpoint_index]

    def json_lines(self) -> list[str]:
        """Each event as one JSON object (the wire format of raw_events)."""
        stamps = _iso_millis(self.times_ms)
        eps = _ENDPOINTS
        return [
            f'{{"event_id":"{eid}","event_time":"{ts}","service":"{eps[i][0]}","endpoint":"{eps[i][1]}",'
            f'"latency_ms":{lat:.3f},"status_code":{code}}}'
            for eid, ts, i, lat, code in zip(
                self.event_ids, stamps, self.endpoint_index.tolist(), self.latency_ms.tolist(),
                self.status_code.tolist())
        ]

    def records(self) -> list[dict]:
        """Each event as a dict with a timezone-aware event_time (for DataFrames and tests)."""
        return [json.loads(line) | {"event_time": datetime.fromtimestamp(ms / 1000, timezone.utc)}
                for line, ms in zip(self.json_lines(), self.times_ms.tolist())]


def _iso_millis(times_ms: np.ndarray) -> list[str]:
    # ISO-8601 UTC with milliseconds and a Z, which Spark's and DuckDB's parsers both take.
    seconds_cache: dict[int, str] = {}
    out = []
    for ms in times_ms.tolist():
        sec, frac = divmod(ms, 1000)
        prefix = seconds_cache.get(sec)
        if prefix is None:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            seconds_cache[sec] = prefix
        out.append(f"{prefix}.{frac:03d}Z")
    return out


def run_tag(scenario: str, seed: int, start: datetime) -> str:
    """Short id of a run: the same seed, scenario and start give the same tag (and event ids)."""
    digest = hashlib.sha256(f"{scenario}|{seed}|{start.isoformat()}".encode()).hexdigest()
    return digest[:10]


class EventStream:
    """Events and fault transitions of one scenario run, tick by tick."""

    def __init__(self, scenario: Scenario, seed: int, start: datetime, events_per_second: float | None = None):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.scenario = scenario
        self.seed = seed
        self.start = start.astimezone(timezone.utc)
        self.rate = events_per_second if events_per_second is not None else scenario.traffic.events_per_second
        self.tag = run_tag(scenario.name, seed, self.start)
        self.run_id = f"{scenario.name}-{self.start:%Y%m%dT%H%M%SZ}-{seed}"
        self._rng = np.random.default_rng([seed, 0])
        self._fault_rng = np.random.default_rng([seed, 1])  # random faults do not shift the events
        self._seq = 0
        mix = scenario.traffic.service_mix
        total = sum(mix.get(s, 0.0) for s in _SERVICE_NAMES)
        self._share = {s: mix.get(s, 0.0) / total for s in _SERVICE_NAMES}
        self._carry = {s: 0.0 for s in _SERVICE_NAMES}
        self._pending = sorted(
            (self._fault(f"f{i:03d}", spec) for i, spec in enumerate(scenario.faults)), key=lambda f: f.start
        )
        self._active: list[Fault] = []
        self._random_count = 0
        self._last_random_end: datetime | None = None
        self._next_random_check = self.start

    # ------------------------------------------------------------------ faults

    def _fault(self, fault_id: str, spec: FaultSpec) -> Fault:
        start = self.start + timedelta(seconds=spec.start_seconds)
        return Fault(fault_id, spec.type, spec.service, spec.effective_endpoint, start,
                     start + timedelta(seconds=spec.duration_seconds), spec.effective_magnitude)

    def _maybe_random_fault(self, until: datetime) -> None:
        """Roll the per-second chance of a new random fault for every whole second before `until`."""
        rnd = self.scenario.random
        if rnd.anomaly_probability <= 0:
            return
        while self._next_random_check < until:
            t = self._next_random_check
            self._next_random_check += timedelta(seconds=1)
            busy = any(f.fault_id.startswith("r") and f.end > t for f in self._active + self._pending)
            quiet = self._last_random_end is None or (t - self._last_random_end).total_seconds() >= rnd.min_quiet_seconds
            if busy or not quiet or self._fault_rng.random() >= rnd.anomaly_probability:
                continue
            kind = rnd.types[int(self._fault_rng.integers(len(rnd.types)))]
            service = _SERVICE_NAMES[int(self._fault_rng.integers(len(_SERVICE_NAMES)))]
            endpoints = SERVICES[service]
            endpoint = endpoints[int(self._fault_rng.integers(len(endpoints)))] if kind == "endpoint_outage" else None
            duration = float(self._fault_rng.uniform(rnd.min_duration_seconds, rnd.max_duration_seconds))
            magnitude = _random_magnitude(kind, self._fault_rng)
            fault = Fault(f"r{self._random_count:03d}", kind, service, endpoint, t, t + timedelta(seconds=duration),
                          magnitude)
            self._random_count += 1
            self._last_random_end = fault.end
            self._pending.append(fault)
            self._pending.sort(key=lambda f: f.start)

    def _update_faults(self, t0: datetime, t1: datetime) -> tuple[list[Fault], list[Fault]]:
        self._maybe_random_fault(t1)
        started = [f for f in self._pending if f.start < t1]
        self._pending = [f for f in self._pending if f.start >= t1]
        self._active.extend(started)
        ended = [f for f in self._active if f.end <= t1]
        self._active = [f for f in self._active if f.end > t1]
        return started, ended

    def active_faults(self) -> list[Fault]:
        return list(self._active)

    # ------------------------------------------------------------------ events

    def tick(self, t0: datetime, seconds: float = 1.0) -> EventBatch:
        """Events with event_time in [t0, t0 + seconds); faults starting or ending in that span."""
        t1 = t0 + timedelta(seconds=seconds)
        started, ended = self._update_faults(t0, t1)
        # A fault that ends inside this tick still shapes the events before its end.
        shaping = self._active + ended
        base_ms = int(round(t0.timestamp() * 1000))
        span_ms = max(int(round(seconds * 1000)), 1)
        traffic = self.scenario.traffic
        parts = []
        for service in _SERVICE_NAMES:
            expected = self.rate * seconds * self._share[service] + self._carry[service]
            n = int(math.floor(expected + 1e-9))  # 3 x (10/3) must make 10, not 9
            self._carry[service] = expected - n
            if n == 0:
                continue
            rng = self._rng
            offsets = np.sort(rng.integers(0, span_ms, n))
            first = SERVICES_OFFSET[service]
            ep = first + rng.integers(0, len(SERVICES[service]), n)
            base = BASELINE_LATENCY_MS[service]
            latency = rng.normal(base, base * traffic.latency_sd_fraction, n)
            error_p = np.full(n, traffic.error_rate)
            outage_p = np.zeros(n)
            times = base_ms + offsets
            for f in shaping:
                if f.service != service:
                    continue
                in_fault = (times >= _ms(f.start)) & (times < _ms(f.end))
                if f.endpoint is not None:
                    in_fault &= ep == _ENDPOINT_INDEX[(service, f.endpoint)]
                if not in_fault.any():
                    continue
                if f.type == "latency_spike":
                    latency = np.where(in_fault, latency * f.magnitude, latency)
                elif f.type == "latency_degradation":
                    ramp = np.clip((times - _ms(f.start)) / max(_ms(f.end) - _ms(f.start), 1), 0, 1)
                    latency = np.where(in_fault, latency * (1 + (f.magnitude - 1) * ramp), latency)
                elif f.type == "error_surge":
                    error_p = np.where(in_fault, np.maximum(error_p, f.magnitude), error_p)
                elif f.type == "endpoint_outage":
                    outage_p = np.where(in_fault, np.maximum(outage_p, f.magnitude), outage_p)
            latency = np.maximum(latency, LATENCY_FLOOR_MS)
            keep = np.ones(n, dtype=bool)
            for f in shaping:
                if f.type == "traffic_drop" and f.service == service:
                    # Thinning: each request inside the fault is lost with probability `magnitude`.
                    in_fault = (times >= _ms(f.start)) & (times < _ms(f.end))
                    if f.endpoint is not None:
                        in_fault &= ep == _ENDPOINT_INDEX[(service, f.endpoint)]
                    keep &= ~(in_fault & (rng.random(n) < f.magnitude))
            draw = rng.random(n)
            outage = draw < outage_p
            error = ~outage & (rng.random(n) < error_p)
            codes = np.where(
                outage, 503,
                np.where(error, np.asarray(ERROR_CODES)[rng.integers(0, len(ERROR_CODES), n)],
                         np.asarray(OK_CODES)[rng.integers(0, len(OK_CODES), n)]))
            parts.append((times[keep], ep[keep], latency[keep], codes[keep]))
        if parts:
            times = np.concatenate([p[0] for p in parts])
            order = np.argsort(times, kind="stable")
            times = times[order]
            ep = np.concatenate([p[1] for p in parts])[order]
            latency = np.round(np.concatenate([p[2] for p in parts])[order], 3)
            codes = np.concatenate([p[3] for p in parts])[order]
        else:
            times = np.empty(0, np.int64)
            ep = np.empty(0, np.int64)
            latency = np.empty(0)
            codes = np.empty(0, np.int64)
        ids = [f"{self.tag}-{seq:010d}" for seq in range(self._seq, self._seq + len(times))]
        self._seq += len(times)
        return EventBatch(ids, times.astype(np.int64), ep, latency, codes, started, ended)


SERVICES_OFFSET = {s: next(i for i, (svc, _) in enumerate(_ENDPOINTS) if svc == s) for s in SERVICES}
_ENDPOINT_INDEX = {pair: i for i, pair in enumerate(_ENDPOINTS)}


def _ms(t: datetime) -> int:
    return int(round(t.timestamp() * 1000))


def _random_magnitude(kind: str, rng: np.random.Generator) -> float:
    ranges = {
        "latency_spike": (5.0, 10.0),
        "error_surge": (0.2, 0.4),
        "latency_degradation": (3.0, 6.0),
        "endpoint_outage": (1.0, 1.0),
        "traffic_drop": (0.4, 0.8),
    }
    low, high = ranges.get(kind, (FAULT_TYPES[kind][0],) * 2)
    return round(float(rng.uniform(low, high)), 3)

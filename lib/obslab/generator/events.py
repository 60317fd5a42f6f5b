"""The deterministic event stream: the scenario's services, their traffic, faults and benign events.

`EventStream.tick(start, seconds)` returns the events whose time falls in [start, start + seconds),
as arrays (one row per event), plus the faults and benign events that started or ended in that
span. The same seed, scenario, start time and tick lengths give the same events byte for byte.

Traffic model. Requests of each service arrive as a Poisson process whose rate varies with event
time: the scenario's rate x the service's share x the seasonal rhythm (phased on absolute time,
see `seasonal_factor`) x an optional over-dispersion multiplier x any flash crowd. A tick is cut
at whole seconds into pieces, the rate is evaluated at each piece's middle, and each piece gets a
Poisson count with that mean. Sums of independent Poisson counts are Poisson, so the number of
requests in any span has the same distribution whether it was made of 0.1 s live ticks or of one
60 s simulated tick. The over-dispersion multiplier (gamma, mean 1, coefficient of variation
`traffic.dispersion`) holds for blocks of `dispersion_seconds` of absolute time and is drawn from a
generator keyed by (seed, service, block), so it does not depend on tick boundaries either.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from obslab.generator.profiles import ERROR_CODES, LATENCY_FLOOR_MS, OK_CODES, ServiceProfile
from obslab.generator.scenario import (BLIP_LATENCY_FACTOR, FAULT_TYPES, PROPAGATING, BenignSpec, FaultSpec,
                                       Scenario, Seasonality)

PIECE_MS = 1000  # the rate is evaluated at least once per second of event time


@dataclass(frozen=True)
class Fault:
    """A fault, a benign event or a cascade's effect, with absolute times: what ground truth stores."""

    fault_id: str
    type: str
    service: str
    endpoint: str | None
    start: datetime
    end: datetime  # planned end; a run that stops early closes it at the stop time
    magnitude: float
    benign: bool = False
    root_cause: str | None = None  # service where it began (its own unless it is a cascade's effect)
    cause_fault_id: str | None = None  # a cascade's effect: the fault it came from
    share: float = 1.0  # a cascade's effect: fraction of the service's requests that reach the faulty callee
    per_request: float = 0.0  # a cascade's effect on such a request: error probability, or extra latency in ms

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
    endpoint_index: np.ndarray  # index into `endpoints`
    latency_ms: np.ndarray
    status_code: np.ndarray
    started: list[Fault] = field(default_factory=list)
    ended: list[Fault] = field(default_factory=list)
    endpoints: tuple[tuple[str, str], ...] = field(default=(), kw_only=True)  # index -> (service, path)

    def __len__(self) -> int:
        return len(self.event_ids)

    def services(self) -> list[str]:
        eps = self.endpoints
        return [eps[i][0] for i in self.endpoint_index.tolist()]

    def json_lines(self) -> list[str]:
        """Each event as one JSON object (the wire format of raw_events)."""
        # Service names and endpoints are validated by the scenario to need no JSON escaping.
        stamps = _iso_millis(self.times_ms)
        eps = self.endpoints
        return [
            f'{{"event_id":"{eid}","event_time":"{ts}","service":"{eps[i][0]}","endpoint":"{eps[i][1]}",'
            f'"latency_ms":{lat:.3f},"status_code":{code}}}'
            for eid, ts, i, lat, code in zip(
                self.event_ids, stamps, self.endpoint_index.tolist(), self.latency_ms.tolist(),
                self.status_code.tolist())
        ]


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


def seasonal_factor(seasonality: Seasonality | None, epoch_seconds: np.ndarray) -> np.ndarray | float:
    """Rate multiplier of the rhythm at these absolute times (mean 1 over whole cycles).

    Daily: 1 + amplitude x cos(2 pi (t - peak) / period), cycles counted from the Unix epoch.
    Weekly: 1 + weekly_amplitude x cos(2 pi (day - weekly_peak_day) / 7), where day counts periods
    since Monday 00:00 UTC (the epoch was a Thursday, so weeks start 4 periods after it).
    """
    if seasonality is None:
        return 1.0
    period = seasonality.period_seconds
    phase = np.mod(epoch_seconds - seasonality.peak_seconds, period) / period
    factor = 1.0 + seasonality.amplitude * np.cos(2 * np.pi * phase)
    if seasonality.weekly_amplitude:
        day = np.mod(epoch_seconds / period - 4.0, 7.0)
        weekly = np.cos(2 * np.pi * (day - seasonality.weekly_peak_day) / 7)
        factor = factor * (1.0 + seasonality.weekly_amplitude * weekly)
    return factor


class EventStream:
    """Events, faults and benign events of one scenario run, tick by tick."""

    def __init__(self, scenario: Scenario, seed: int, start: datetime, events_per_second: float | None = None):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.scenario = scenario
        self.seed = seed
        self.start = start.astimezone(timezone.utc)
        self.rate = events_per_second if events_per_second is not None else scenario.traffic.events_per_second
        self.tag = run_tag(scenario.name, seed, self.start)
        self.run_id = f"{scenario.name}-{self.start:%Y%m%dT%H%M%SZ}-{seed}"
        self.services: tuple[ServiceProfile, ...] = scenario.service_profiles()
        self._profile = {s.name: s for s in self.services}
        # Every (service, endpoint) pair gets an index; an event carries the index.
        self.endpoints: tuple[tuple[str, str], ...] = tuple((s.name, e) for s in self.services for e in s.endpoints)
        self._endpoint_index = {pair: i for i, pair in enumerate(self.endpoints)}
        self._first_endpoint = [self._endpoint_index[(s.name, s.endpoints[0])] for s in self.services]
        total = sum(s.share for s in self.services)
        self._weight = [s.share / total for s in self.services]
        self._callers: dict[str, list[tuple[ServiceProfile, float, float]]] = {s.name: [] for s in self.services}
        for caller in self.services:
            for call in caller.calls:
                self._callers[call.service].append((caller, call.share, call.lag_seconds))
        # Over-dispersion multipliers, drawn per (seed, service, block of event time).
        self._service_key = [int(hashlib.sha256(s.name.encode()).hexdigest()[:8], 16) for s in self.services]
        self._multipliers: dict[tuple[int, int], float] = {}
        self._rng = np.random.default_rng([seed, 0])
        self._fault_rng = np.random.default_rng([seed, 1])  # random faults do not shift the events
        self._seq = 0
        planned = [self._fault(f"f{i:03d}", spec) for i, spec in enumerate(scenario.faults)]
        planned += [self._benign(f"b{i:03d}", spec) for i, spec in enumerate(scenario.benign)]
        planned += [effect for fault in planned for effect in self._effects(fault)]
        self._pending = sorted(planned, key=lambda f: f.start)
        self._active: list[Fault] = []
        self._random_count = 0
        self._last_random_end: datetime | None = None
        self._next_random_check = self.start

    # ------------------------------------------------------------------ faults

    def _fault(self, fault_id: str, spec: FaultSpec) -> Fault:
        start = self.start + timedelta(seconds=spec.start_seconds)
        return Fault(fault_id, spec.type, spec.service, spec.effective_endpoint, start,
                     start + timedelta(seconds=spec.duration_seconds), spec.effective_magnitude,
                     root_cause=spec.service)

    def _benign(self, fault_id: str, spec: BenignSpec) -> Fault:
        start = self.start + timedelta(seconds=spec.start_seconds)
        return Fault(fault_id, spec.type, spec.service, None, start, start + timedelta(seconds=spec.duration_seconds),
                     spec.effective_magnitude, benign=True, root_cause=spec.service)

    def _effects(self, root: Fault) -> list[Fault]:
        """What a fault does to the services that call its service, directly or through others.

        A caller's request that calls the faulty service fails (errors, outage) or waits for it
        (latency). Such requests are `share` of the caller's: the call's share, times the share of
        the callee's requests that are touched (one endpoint of n: 1/n), along the chain.
        """
        if root.benign or root.type not in PROPAGATING:
            return []
        callee = self._profile[root.service]
        if root.type in ("error_surge", "endpoint_outage"):
            kind, per_request = "error_surge", root.magnitude
        else:  # the caller waits for the callee's extra latency
            kind, per_request = root.type, callee.latency_ms * (root.magnitude - 1)
        touched = 1 / len(callee.endpoints) if root.endpoint is not None else 1.0
        out: list[Fault] = []

        def reach(service: str, share: float, lag: float, fault_id: str) -> None:
            for caller, call_share, call_lag in self._callers[service]:
                s, delay, effect_id = share * call_share, lag + call_lag, f"{fault_id}>{caller.name}"
                magnitude = s * per_request if kind == "error_surge" else 1 + s * per_request / caller.latency_ms
                out.append(Fault(effect_id, kind, caller.name, None, root.start + timedelta(seconds=delay),
                                 root.end + timedelta(seconds=delay), round(magnitude, 4), root_cause=root.service,
                                 cause_fault_id=root.fault_id, share=s, per_request=per_request))
                reach(caller.name, s, delay, effect_id)

        reach(root.service, touched, 0.0, root.fault_id)
        return out

    def _maybe_random_fault(self, until: datetime) -> None:
        """Roll the per-second chance of a new random fault for every whole second before `until`."""
        rnd = self.scenario.random
        if rnd.anomaly_probability <= 0:
            return
        while self._next_random_check < until:
            t = self._next_random_check
            self._next_random_check += timedelta(seconds=1)
            busy = any(f.fault_id.startswith("r") and f.cause_fault_id is None and f.end > t
                       for f in self._active + self._pending)
            quiet = self._last_random_end is None or (t - self._last_random_end).total_seconds() >= rnd.min_quiet_seconds
            if busy or not quiet or self._fault_rng.random() >= rnd.anomaly_probability:
                continue
            kind = rnd.types[int(self._fault_rng.integers(len(rnd.types)))]
            candidates = [s for s, w in zip(self.services, self._weight) if w > 0]  # a fault needs traffic to show
            service = candidates[int(self._fault_rng.integers(len(candidates)))]
            endpoint = (service.endpoints[int(self._fault_rng.integers(len(service.endpoints)))]
                        if kind == "endpoint_outage" else None)
            duration = float(self._fault_rng.uniform(rnd.min_duration_seconds, rnd.max_duration_seconds))
            magnitude = _random_magnitude(kind, self._fault_rng)
            fault = Fault(f"r{self._random_count:03d}", kind, service.name, endpoint, t,
                          t + timedelta(seconds=duration), magnitude, root_cause=service.name)
            self._random_count += 1
            self._last_random_end = fault.end
            self._pending.extend([fault, *self._effects(fault)])
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

    # ------------------------------------------------------------------ traffic

    def _dispersion(self, k: int, mids_s: np.ndarray) -> np.ndarray:
        """Over-dispersion multiplier of service k at these times (1 without dispersion)."""
        cv = self.scenario.traffic.dispersion
        if cv <= 0:
            return np.ones_like(mids_s)
        blocks = np.floor(mids_s / self.scenario.traffic.dispersion_seconds).astype(np.int64)
        unique, where = np.unique(blocks, return_inverse=True)
        if len(self._multipliers) > 4096:  # a long live run: forget the past blocks
            self._multipliers.clear()
        values = []
        for block in unique.tolist():
            value = self._multipliers.get((k, block))
            if value is None:
                shape = 1 / cv**2  # gamma with mean 1 and variance cv^2
                rng = np.random.default_rng([self.seed, 2, self._service_key[k], block])
                value = self._multipliers[(k, block)] = float(rng.gamma(shape, 1 / shape))
            values.append(value)
        return np.asarray(values)[where]

    # ------------------------------------------------------------------ events

    def tick(self, t0: datetime, seconds: float = 1.0) -> EventBatch:
        """Events with event_time in [t0, t0 + seconds); faults starting or ending in that span."""
        t1 = t0 + timedelta(seconds=seconds)
        started, ended = self._update_faults(t0, t1)
        # A fault that ends inside this tick still shapes the events before its end.
        shaping = self._active + ended
        start_ms, end_ms = _ms(t0), _ms(t1)
        if end_ms <= start_ms:
            return self._batch([], started, ended)
        # Edges of the pieces in epoch ms: the tick cut at whole seconds.
        first_cut = (start_ms // PIECE_MS + 1) * PIECE_MS
        edges = np.array([start_ms, *range(first_cut, end_ms, PIECE_MS), end_ms], dtype=np.int64)
        lengths_ms = np.diff(edges)
        mids_s = (edges[:-1] + lengths_ms / 2) / 1000.0
        expected = self.rate * lengths_ms / 1000.0 * seasonal_factor(self.scenario.traffic.seasonality, mids_s)
        parts = []
        for k, service in enumerate(self.services):
            if self._weight[k] == 0:
                continue
            mine = [f for f in shaping if f.service == service.name]
            lam = expected * self._weight[k] * self._dispersion(k, mids_s)
            for f in mine:
                if f.type == "flash_crowd":
                    inside = (mids_s >= f.start.timestamp()) & (mids_s < f.end.timestamp())
                    lam = np.where(inside, lam * f.magnitude, lam)
            rng = self._rng
            counts = rng.poisson(lam)
            n = int(counts.sum())
            if n == 0:
                continue
            times = np.repeat(edges[:-1], counts) + (rng.random(n) * np.repeat(lengths_ms, counts)).astype(np.int64)
            times.sort()
            parts.append(self._shape(k, service, mine, times, rng))
        return self._batch(parts, started, ended)

    def _shape(self, k: int, service: ServiceProfile, faults: list[Fault], times: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Endpoint, latency and status of each request of one service, faults and benign events applied."""
        n = len(times)
        ep = self._first_endpoint[k] + rng.integers(0, len(service.endpoints), n)
        base = service.latency_ms
        latency = rng.normal(base, base * self.scenario.traffic.latency_sd_fraction, n)
        error_p = np.full(n, service.error_rate)
        outage_p = np.zeros(n)
        keep = np.ones(n, dtype=bool)
        for f in faults:
            if f.type == "flash_crowd":
                continue  # it shaped the arrivals
            f_start, f_end = _ms(f.start), _ms(f.end)
            hit = (times >= f_start) & (times < f_end)
            if f.endpoint is not None:
                hit &= ep == self._endpoint_index[(service.name, f.endpoint)]
            if not hit.any():
                continue
            if f.cause_fault_id is not None:  # a cascade touches only the requests that call the callee
                hit &= rng.random(n) < f.share
            effect = f.cause_fault_id is not None
            if f.type in ("latency_degradation", "drift"):  # linear ramp from 0 at the start to 1 at the end
                ramp = np.clip((times - f_start) / max(f_end - f_start, 1), 0, 1)
            if f.type == "latency_spike":
                latency = latency + hit * f.per_request if effect else np.where(hit, latency * f.magnitude, latency)
            elif f.type == "latency_degradation":
                latency = (latency + hit * f.per_request * ramp if effect
                           else np.where(hit, latency * (1 + (f.magnitude - 1) * ramp), latency))
            elif f.type == "error_surge":
                error_p = np.where(hit, np.maximum(error_p, f.per_request if effect else f.magnitude), error_p)
            elif f.type == "endpoint_outage":
                outage_p = np.where(hit, np.maximum(outage_p, f.magnitude), outage_p)
            elif f.type == "traffic_drop":
                # Thinning: each request inside the fault is lost with probability `magnitude`.
                keep &= ~(hit & (rng.random(n) < f.magnitude))
            elif f.type == "drift":
                latency = np.where(hit, latency * (1 + f.magnitude * ramp), latency)
            elif f.type == "deploy_blip":
                error_p = np.where(hit, np.minimum(error_p + f.magnitude, 1.0), error_p)
                latency = np.where(hit, latency * BLIP_LATENCY_FACTOR, latency)
        latency = np.maximum(latency, LATENCY_FLOOR_MS)
        draw = rng.random(n)
        outage = draw < outage_p
        error = ~outage & (rng.random(n) < error_p)
        codes = np.where(
            outage, 503,
            np.where(error, np.asarray(ERROR_CODES)[rng.integers(0, len(ERROR_CODES), n)],
                     np.asarray(OK_CODES)[rng.integers(0, len(OK_CODES), n)]))
        return times[keep], ep[keep], latency[keep], codes[keep]

    def _batch(self, parts: list[tuple[np.ndarray, ...]], started: list[Fault], ended: list[Fault]) -> EventBatch:
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
        return EventBatch(ids, times.astype(np.int64), ep, latency, codes, started, ended, endpoints=self.endpoints)


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

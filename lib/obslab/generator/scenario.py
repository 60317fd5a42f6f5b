"""Scenarios: services, traffic, a schedule of faults and benign events (and random faults), from YAML.

A scenario file looks like this (every field but `name` has a default):

    name: demo
    description: one error surge on payments about a minute in
    duration_seconds: 600          # default run length
    services:                      # optional; default: checkout, payments, search (see profiles.py)
      - name: checkout             # a built-in name fills every field not given from its profile
        calls: [{service: payments, share: 0.5, lag_seconds: 5}]
      - name: payments
      - name: search
      - name: inventory            # a new service needs endpoints and latency_ms
        endpoints: [/api/stock, /api/reserve]
        latency_ms: 80
        error_rate: 0.01           # default: traffic.error_rate
        share: 0.5                 # traffic weight (default 1); traffic.service_mix wins when given
        sla_ms: 200                # optional: latency SLA, into service_catalog
        slo_availability: 0.995    # optional: availability SLO, into service_catalog
    traffic:
      events_per_second: 10        # mean over all services
      service_mix: {checkout: 2, payments: 1, search: 1, inventory: 1}   # relative weights; unnamed: none
      error_rate: 0.02             # every service without an error_rate of its own
      latency_sd_fraction: 0.2
      seasonality: {period_seconds: 3600, amplitude: 0.4, peak_at_seconds: 900}
      dispersion: 0.2              # over-dispersion; 0 (default): Poisson arrivals
      dispersion_seconds: 60
    faults:
      - type: error_surge
        service: payments
        start_seconds: 75          # from the start of the run
        duration_seconds: 120
        magnitude: 0.3             # meaning depends on the type, see FAULT_TYPES
    benign:                        # surprises that are not faults (BENIGN_TYPES)
      - {type: flash_crowd, service: search, start_seconds: 200, duration_seconds: 120, magnitude: 2.5}
    random:                        # optional: faults that start by chance
      anomaly_probability: 0.01    # chance per second that a fault starts
      min_quiet_seconds: 120       # no new fault sooner than this after one ended
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from obslab.errors import ScenarioError
from obslab.generator.profiles import BUILT_IN, Call, ServiceProfile

FaultType = Literal["latency_spike", "error_surge", "latency_degradation", "endpoint_outage", "traffic_drop"]
BenignType = Literal["flash_crowd", "drift", "deploy_blip"]

# type -> (default magnitude, lowest allowed, highest allowed, meaning)
FAULT_TYPES: dict[str, tuple[float, float, float, str]] = {
    "latency_spike": (7.0, 1.0, 100.0, "latency multiplier (the spec's range is 5-10)"),
    "error_surge": (0.3, 0.0, 1.0, "error probability during the fault (the spec's range is 0.2-0.4)"),
    "latency_degradation": (4.0, 1.0, 100.0, "latency multiplier reached at the end of a linear ramp"),
    "endpoint_outage": (1.0, 0.0, 1.0, "share of the endpoint's requests that fail with 503"),
    "traffic_drop": (0.5, 0.0, 1.0, "fraction of the service's traffic that disappears"),
}

BLIP_LATENCY_FACTOR = 1.2  # a deploy blip's latency multiplier
BLIP_MAX_SECONDS = 120.0  # longer than this it is not a blip: use an error_surge fault
# Any time in a scenario (a start, a duration, a period) is at most a year: a lab run is hours, and
# beyond that event times run past the calendar's end (Python's datetime) instead of failing here.
MAX_SCENARIO_SECONDS = 366 * 86_400.0

BENIGN_TYPES: dict[str, tuple[float, float, float, str]] = {
    "flash_crowd": (2.5, 1.0, 10.0, "traffic multiplier while it lasts; errors and latency stay normal"),
    "drift": (0.2, 0.0, 1.0, "latency creep: +magnitude (a fraction) reached at the end of a linear ramp"),
    "deploy_blip": (0.03, 0.0, 0.2, f"extra error probability while it lasts (latency x{BLIP_LATENCY_FACTOR:g})"),
}

# Faults that reach the services calling the faulty one (a traffic drop stays where it is).
PROPAGATING = ("error_surge", "endpoint_outage", "latency_spike", "latency_degradation")

# Names become Kafka keys, table keys, dashboard labels and JSON strings written without escaping.
SERVICE_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
# The stream's rule for an endpoint (obslab.stream.transform.ENDPOINT_PATTERN, kept equal by a test):
# an endpoint the stream would dead-letter is refused here, when the scenario is read.
ENDPOINT_PATTERN = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallSpec(_Strict):
    service: str
    share: float = Field(1.0, gt=0, le=1)  # fraction of the caller's requests that call it
    lag_seconds: float = Field(0.0, ge=0, le=3600)  # how much later a callee's fault shows in the caller


class ServiceSpec(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=SERVICE_NAME_PATTERN)
    endpoints: list[str] | None = Field(None, min_length=1)
    latency_ms: float | None = Field(None, gt=0, le=600_000)
    error_rate: float | None = Field(None, ge=0, le=1)
    share: float = Field(1.0, ge=0)
    sla_ms: float | None = Field(None, gt=0)
    slo_availability: float | None = Field(None, gt=0, lt=1)
    calls: list[CallSpec] = Field(default_factory=list)

    @field_validator("endpoints")
    @classmethod
    def _paths(cls, endpoints: list[str] | None) -> list[str] | None:
        if endpoints is None:
            return None
        bad = [e for e in endpoints if not re.match(ENDPOINT_PATTERN, e)]
        if bad:
            raise ValueError(f"endpoint(s) {bad} are not URL paths; write e.g. /api/stock "
                             "(a leading /, no spaces, quotes or query string)")
        if len(set(endpoints)) != len(endpoints):
            raise ValueError("an endpoint is listed twice")
        return endpoints


class Seasonality(_Strict):
    """A daily (and optionally weekly) rhythm multiplying the rate, phased on absolute event time."""

    period_seconds: float = Field(86_400.0, ge=60, le=MAX_SCENARIO_SECONDS)  # a "day"; 3600 compresses one into an hour
    amplitude: float = Field(0.3, ge=0, lt=1)  # rate between (1 - a) and (1 + a) times the mean
    # Seconds into each cycle at which traffic peaks; cycles are counted from the Unix epoch
    # (00:00 UTC), so a rhythm does not depend on when a run starts. Default: 7/12 of the
    # period, i.e. 14:00 UTC of a real day.
    peak_at_seconds: float | None = Field(None, ge=0, le=MAX_SCENARIO_SECONDS)
    weekly_amplitude: float = Field(0.0, ge=0, lt=1)  # a second rhythm over 7 periods
    weekly_peak_day: float = Field(2.5, ge=0, lt=7)  # periods after Monday 00:00 UTC (2.5: Wednesday noon)

    @model_validator(mode="after")
    def _peak_in_period(self) -> "Seasonality":
        if self.peak_at_seconds is not None and self.peak_at_seconds >= self.period_seconds:
            raise ValueError(f"peak_at_seconds ({self.peak_at_seconds:g}) must be below period_seconds "
                             f"({self.period_seconds:g})")
        return self

    @property
    def peak_seconds(self) -> float:
        return self.peak_at_seconds if self.peak_at_seconds is not None else self.period_seconds * 7 / 12


class Traffic(_Strict):
    events_per_second: float = Field(10.0, gt=0, le=1_000_000)
    service_mix: dict[str, float] | None = None
    error_rate: float = Field(0.02, ge=0, le=1)
    latency_sd_fraction: float = Field(0.2, ge=0, le=5)
    seasonality: Seasonality | None = None
    dispersion: float = Field(0.0, ge=0, le=3)  # coefficient of variation of the rate multiplier
    dispersion_seconds: float = Field(60.0, ge=1, le=86_400)  # how long one multiplier holds

    @field_validator("service_mix")
    @classmethod
    def _weights(cls, mix: dict[str, float] | None) -> dict[str, float] | None:
        if mix is not None and (any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0):
            raise ValueError("weights must be >= 0 and not all zero")
        return mix


class FaultSpec(_Strict):
    type: FaultType
    service: str
    endpoint: str | None = None
    start_seconds: float = Field(ge=0, le=MAX_SCENARIO_SECONDS)
    duration_seconds: float = Field(gt=0, le=MAX_SCENARIO_SECONDS)
    magnitude: float | None = None
    _first_endpoint: str | None = PrivateAttr(None)  # of the scenario's service, set when the scenario is read

    @model_validator(mode="after")
    def _check(self) -> "FaultSpec":
        _, low, high, meaning = FAULT_TYPES[self.type]
        if self.magnitude is not None and not (low < self.magnitude <= high):
            raise ValueError(f"magnitude {self.magnitude} out of range for {self.type} "
                             f"({meaning}: must be > {low} and <= {high})")
        return self

    @property
    def effective_magnitude(self) -> float:
        return self.magnitude if self.magnitude is not None else FAULT_TYPES[self.type][0]

    @property
    def effective_endpoint(self) -> str | None:
        # An outage always hits one endpoint: the service's first unless the file names one.
        if self.type == "endpoint_outage" and self.endpoint is None:
            if self._first_endpoint is not None:
                return self._first_endpoint
            return BUILT_IN[self.service].endpoints[0] if self.service in BUILT_IN else None
        return self.endpoint


class BenignSpec(_Strict):
    type: BenignType
    service: str
    start_seconds: float = Field(ge=0, le=MAX_SCENARIO_SECONDS)
    duration_seconds: float = Field(gt=0, le=MAX_SCENARIO_SECONDS)
    magnitude: float | None = None

    @model_validator(mode="after")
    def _check(self) -> "BenignSpec":
        _, low, high, meaning = BENIGN_TYPES[self.type]
        if self.magnitude is not None and not (low < self.magnitude <= high):
            raise ValueError(f"magnitude {self.magnitude} out of range for {self.type} "
                             f"({meaning}: must be > {low} and <= {high})")
        if self.type == "deploy_blip" and self.duration_seconds > BLIP_MAX_SECONDS:
            raise ValueError(f"a deploy_blip lasts at most {BLIP_MAX_SECONDS:g} s; a longer error rise is a "
                             "fault: use an error_surge under faults:")
        return self

    @property
    def effective_magnitude(self) -> float:
        return self.magnitude if self.magnitude is not None else BENIGN_TYPES[self.type][0]


class RandomFaults(_Strict):
    anomaly_probability: float = Field(0.0, ge=0, le=1)
    min_quiet_seconds: float = Field(120.0, ge=0, le=MAX_SCENARIO_SECONDS)
    min_duration_seconds: float = Field(60.0, gt=0, le=MAX_SCENARIO_SECONDS)
    max_duration_seconds: float = Field(240.0, gt=0, le=MAX_SCENARIO_SECONDS)
    types: list[FaultType] = Field(default_factory=lambda: list(FAULT_TYPES))

    @model_validator(mode="after")
    def _durations(self) -> "RandomFaults":
        if self.max_duration_seconds < self.min_duration_seconds:
            raise ValueError("max_duration_seconds must be >= min_duration_seconds")
        return self


class Scenario(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    duration_seconds: float = Field(600.0, gt=0, le=MAX_SCENARIO_SECONDS)
    services: list[ServiceSpec] | None = Field(None, min_length=1)
    traffic: Traffic = Field(default_factory=Traffic)
    faults: list[FaultSpec] = Field(default_factory=list)
    benign: list[BenignSpec] = Field(default_factory=list)
    random: RandomFaults = Field(default_factory=RandomFaults)

    @model_validator(mode="after")
    def _references(self) -> "Scenario":
        # Cross-field checks raise ScenarioError (not ValueError) so that the error names the field;
        # parse_scenario puts the file name in.
        profiles = {p.name: p for p in self.service_profiles()}
        for i, fault in enumerate(self.faults):
            service = profiles.get(fault.service)
            if service is None:
                _refuse(f"faults.{i}.service", f"service {fault.service!r} is not one of {sorted(profiles)}")
            if fault.endpoint is not None and fault.endpoint not in service.endpoints:
                _refuse(f"faults.{i}.endpoint", f"endpoint {fault.endpoint!r} is not an endpoint of "
                                                f"{fault.service}: {list(service.endpoints)}")
            fault._first_endpoint = service.endpoints[0]
        for i, event in enumerate(self.benign):
            if event.service not in profiles:
                _refuse(f"benign.{i}.service", f"service {event.service!r} is not one of {sorted(profiles)}")
        return self

    def service_profiles(self) -> tuple[ServiceProfile, ...]:
        """The services this scenario runs, every field resolved (built-in defaults, traffic.*)."""
        specs = self.services if self.services is not None else [ServiceSpec(name=n) for n in BUILT_IN]
        explicit_error_rate = "error_rate" in self.traffic.model_fields_set
        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            _refuse("services", f"service(s) {duplicates} declared twice")
        mix = self.traffic.service_mix
        if mix is not None and set(mix) - set(names):
            unknown = sorted(set(mix) - set(names))
            _refuse("traffic.service_mix", f"unknown service(s) {unknown}; known: {sorted(names)}")
        out = []
        for i, spec in enumerate(specs):
            base = BUILT_IN.get(spec.name)
            if base is None and (spec.endpoints is None or spec.latency_ms is None):
                missing = " and ".join(f for f in ("endpoints", "latency_ms") if getattr(spec, f) is None)
                _refuse(f"services.{i}", f"service {spec.name!r} needs {missing} (only the built-in "
                                         f"{sorted(BUILT_IN)} have defaults)")
            if spec.error_rate is not None:
                error_rate = spec.error_rate
            elif base is not None and not explicit_error_rate:
                error_rate = base.error_rate
            else:
                error_rate = self.traffic.error_rate
            calls = []
            for j, call in enumerate(spec.calls):
                where = f"services.{i}.calls.{j}.service"
                if call.service not in names:
                    _refuse(where, f"service {call.service!r} is not one of {sorted(names)}")
                if call.service == spec.name:
                    _refuse(where, f"{spec.name} cannot call itself")
                if call.service in (c.service for c in calls):
                    _refuse(where, f"{spec.name} calls {call.service} twice; give one entry with the total share")
                calls.append(Call(call.service, call.share, call.lag_seconds))
            out.append(ServiceProfile(
                spec.name,
                tuple(spec.endpoints) if spec.endpoints is not None else base.endpoints,
                spec.latency_ms if spec.latency_ms is not None else base.latency_ms,
                error_rate,
                mix.get(spec.name, 0.0) if mix is not None else spec.share,
                spec.sla_ms if spec.sla_ms is not None or base is None else base.sla_ms,
                spec.slo_availability if spec.slo_availability is not None or base is None else base.slo_availability,
                tuple(calls),
            ))
        if sum(p.share for p in out) <= 0:
            _refuse("services", "every service has share 0: give at least one a positive share")
        cycle = _call_cycle(out)
        if cycle:
            _refuse("services", f"calls go round in a circle ({' -> '.join(cycle)}); a fault would propagate "
                                "forever")
        return tuple(out)


def _refuse(field: str, why: str):
    raise ScenarioError("<scenario>", field, why)


def _call_cycle(services: list[ServiceProfile]) -> list[str]:
    """A cycle of calls as [a, b, ..., a], or [] when the call graph has none."""
    calls = {s.name: [c.service for c in s.calls] for s in services}
    acyclic: set[str] = set()  # services from which no cycle can be reached

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return path[path.index(name):] + [name]
        if name in acyclic:
            return []
        for callee in calls[name]:
            found = visit(callee, path + [name])
            if found:
                return found
        acyclic.add(name)
        return []

    for name in calls:
        found = visit(name, [])
        if found:
            return found
    return []


def fault_schedule(scenario: Scenario) -> list[dict]:
    """The scheduled faults and benign events as rows (type, service, endpoint, start/end in seconds,
    magnitude, benign)."""
    rows = [
        {"type": f.type, "service": f.service, "endpoint": f.effective_endpoint, "start_s": f.start_seconds,
         "end_s": f.start_seconds + f.duration_seconds, "magnitude": f.effective_magnitude, "benign": False}
        for f in scenario.faults
    ] + [
        {"type": b.type, "service": b.service, "endpoint": None, "start_s": b.start_seconds,
         "end_s": b.start_seconds + b.duration_seconds, "magnitude": b.effective_magnitude, "benign": True}
        for b in scenario.benign
    ]
    return sorted(rows, key=lambda r: r["start_s"])


def _package_dir():
    return resources.files("obslab.generator") / "scenarios"


def available_scenarios() -> list[str]:
    """Names of the scenarios shipped in the package."""
    return sorted(p.name.removesuffix(".yaml") for p in _package_dir().iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name, or a YAML file by path; errors name the file, the field and why."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        source = str(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise ScenarioError(source, "(file)", f"cannot read it: {err.strerror}") from None
    else:
        shipped = _package_dir() / f"{name_or_path}.yaml"
        if not shipped.is_file():
            raise ScenarioError(str(name_or_path), "(name)",
                                f"no such scenario; shipped: {available_scenarios()}, or give a path to a .yaml file")
        source, text = f"scenario {name_or_path} ({shipped})", shipped.read_text()
    return parse_scenario(text, source)


def parse_scenario(text: str, source: str = "<text>") -> Scenario:
    """Validate scenario YAML text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(yaml)"
        raise ScenarioError(source, where, f"not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ScenarioError(source, "(top level)", "expected a mapping with at least `name:`")
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ScenarioError(source, field, first["msg"].removeprefix("Value error, ")) from None
    except ScenarioError as err:
        raise ScenarioError(source, err.field, err.why) from None

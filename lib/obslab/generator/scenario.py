"""Scenarios: traffic settings plus a schedule of faults (and optionally random faults), from YAML.

A scenario file looks like this (every field but `name` has a default):

    name: demo
    description: one error surge on payments about a minute in
    duration_seconds: 600          # default run length
    traffic:
      events_per_second: 10
      service_mix: {checkout: 1, payments: 1, search: 1}   # relative weights
      error_rate: 0.02
      latency_sd_fraction: 0.2
    faults:
      - type: error_surge
        service: payments
        start_seconds: 60          # from the start of the run
        duration_seconds: 120
        magnitude: 0.3             # meaning depends on the type, see FAULT_TYPES
    random:                        # optional: faults that start by chance
      anomaly_probability: 0.01    # chance per second that a fault starts
      min_quiet_seconds: 120       # no new fault sooner than this after one ended
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from obslab.errors import ScenarioError
from obslab.generator.profiles import SERVICES

FaultType = Literal["latency_spike", "error_surge", "latency_degradation", "endpoint_outage", "traffic_drop"]

# type -> (default magnitude, lowest allowed, highest allowed, meaning)
FAULT_TYPES: dict[str, tuple[float, float, float, str]] = {
    "latency_spike": (7.0, 1.0, 100.0, "latency multiplier (the spec's range is 5-10)"),
    "error_surge": (0.3, 0.0, 1.0, "error probability during the fault (the spec's range is 0.2-0.4)"),
    "latency_degradation": (4.0, 1.0, 100.0, "latency multiplier reached at the end of a linear ramp"),
    "endpoint_outage": (1.0, 0.0, 1.0, "share of the endpoint's requests that fail with 503"),
    "traffic_drop": (0.5, 0.0, 1.0, "fraction of the service's traffic that disappears"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Traffic(_Strict):
    events_per_second: float = Field(10.0, gt=0, le=1_000_000)
    service_mix: dict[str, float] = Field(default_factory=lambda: {s: 1.0 for s in SERVICES})
    error_rate: float = Field(0.02, ge=0, le=1)
    latency_sd_fraction: float = Field(0.2, ge=0, le=5)

    @field_validator("service_mix")
    @classmethod
    def _known_services(cls, mix: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(mix) - set(SERVICES))
        if unknown:
            raise ValueError(f"unknown service(s) {unknown}; known: {sorted(SERVICES)}")
        if any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError("weights must be >= 0 and not all zero")
        return mix


class FaultSpec(_Strict):
    type: FaultType
    service: str
    endpoint: str | None = None
    start_seconds: float = Field(ge=0)
    duration_seconds: float = Field(gt=0)
    magnitude: float | None = None

    @model_validator(mode="after")
    def _check(self) -> "FaultSpec":
        if self.service not in SERVICES:
            raise ValueError(f"service {self.service!r} is not one of {sorted(SERVICES)}")
        if self.endpoint is not None and self.endpoint not in SERVICES[self.service]:
            raise ValueError(f"endpoint {self.endpoint!r} is not an endpoint of {self.service}: "
                             f"{list(SERVICES[self.service])}")
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
            return SERVICES[self.service][0]
        return self.endpoint


class RandomFaults(_Strict):
    anomaly_probability: float = Field(0.0, ge=0, le=1)
    min_quiet_seconds: float = Field(120.0, ge=0)
    min_duration_seconds: float = Field(60.0, gt=0)
    max_duration_seconds: float = Field(240.0, gt=0)
    types: list[FaultType] = Field(default_factory=lambda: list(FAULT_TYPES))

    @model_validator(mode="after")
    def _durations(self) -> "RandomFaults":
        if self.max_duration_seconds < self.min_duration_seconds:
            raise ValueError("max_duration_seconds must be >= min_duration_seconds")
        return self


class Scenario(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    duration_seconds: float = Field(600.0, gt=0)
    traffic: Traffic = Field(default_factory=Traffic)
    faults: list[FaultSpec] = Field(default_factory=list)
    random: RandomFaults = Field(default_factory=RandomFaults)


def fault_schedule(scenario: Scenario) -> list[dict]:
    """The scheduled faults as rows (type, service, endpoint, start/end in seconds, magnitude)."""
    return [
        {"type": f.type, "service": f.service, "endpoint": f.effective_endpoint, "start_s": f.start_seconds,
         "end_s": f.start_seconds + f.duration_seconds, "magnitude": f.effective_magnitude}
        for f in scenario.faults
    ]


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

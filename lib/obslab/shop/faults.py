"""The shop's fault switch, and the ground truth each flip of it writes.

The switch is a flag file, DATA_DIR/shop/faults.json, in the manner of the OpenTelemetry demo's
feature flags: the CLI writes it, every shop service re-reads it when it changes. It holds the
shop's run id and every fault of the run, each with its start and planned end:

    {"run_id": "shop-20260105T090000Z", "faults": [{"fault_id": "001-error_surge-payment",
     "type": "error_surge", "service": "payment", "endpoint": null, "start": "...", "end": "...",
     "magnitude": 0.3}]}

Each flip also goes to the store's injected_incidents through the generator's own ground-truth
code (StoreGroundTruth), so `obslab evaluate`'s matching scores detection on the shop as on a
generated scenario. Fault types and magnitudes mean what they mean in a scenario (FAULT_TYPES).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from obslab.errors import ConfigError
from obslab.generator.events import Fault
from obslab.generator.scenario import FAULT_TYPES
from obslab.generator.truth import StoreGroundTruth
from obslab.shop.topology import PROFILES, SCENARIO, SERVICES

log = logging.getLogger(__name__)

# The generator's fault types the shop can play (a latency ramp or a traffic drop it cannot).
KINDS = ("latency_spike", "error_surge", "endpoint_outage")


@dataclass
class FlagState:
    """The flag file's content: the shop's run and every fault switched in it."""

    run_id: str
    faults: list[Fault] = field(default_factory=list)


def new_run_id(now: datetime) -> str:
    """`shop-<UTC start>`, as the generator names its runs `<scenario>-<start>-<seed>`."""
    return f"{SCENARIO}-{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"


class FlagFile:
    """The flag file, written whole and atomically (a reader never sees half of it)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> FlagState | None:
        """The state in the file, or None when there is no file yet."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        return FlagState(data["run_id"], [_fault(f) for f in data["faults"]])

    def write(self, state: FlagState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"run_id": state.run_id, "faults": [_flag(f) for f in state.faults]}
        partial = self.path.with_suffix(".json.partial")
        partial.write_text(json.dumps(body, indent=1) + "\n")
        os.replace(partial, self.path)


def _flag(fault: Fault) -> dict:
    return {"fault_id": fault.fault_id, "type": fault.type, "service": fault.service, "endpoint": fault.endpoint,
            "start": fault.start.isoformat(), "end": fault.end.isoformat(), "magnitude": fault.magnitude}


def _fault(flag: dict) -> Fault:
    return Fault(flag["fault_id"], flag["type"], flag["service"], flag.get("endpoint"),
                 datetime.fromisoformat(flag["start"]), datetime.fromisoformat(flag["end"]),
                 float(flag["magnitude"]), root_cause=flag["service"])


class FaultSwitch:
    """A service's view of the flag file: the faults on it now. The file is parsed again only when
    it changed (one stat per request), so reading it on every request stays cheap."""

    def __init__(self, path: Path, service: str):
        self.flags, self.service = FlagFile(path), service
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file last parsed
        self._faults: list[Fault] = []

    def active(self, now: datetime) -> list[Fault]:
        """This service's faults running at `now`."""
        self._refresh()
        return [f for f in self._faults if f.active_at(now)]

    def _refresh(self) -> None:
        try:
            stat = self.flags.path.stat()
        except FileNotFoundError:
            self._seen, self._faults = None, []
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            state = self.flags.read()
        except (OSError, ValueError, KeyError, TypeError) as err:
            # A hand-edited file gone wrong: keep the faults last read rather than fail requests.
            log.warning("%s cannot be read (%s); keeping the faults read before", self.flags.path, err)
            return
        self._faults = [f for f in state.faults if f.service == self.service] if state else []


# ---------------------------------------------------------------------- the switch (CLI side)


def begin_run(flags: FlagFile, store, now: datetime | None = None) -> str:
    """Start a new shop run: an empty flag file under a new run id, and the shop's services (with
    their calls) in the service catalogue. Returns the run id."""
    now = now or datetime.now(timezone.utc)
    run_id = new_run_id(now)
    flags.write(FlagState(run_id))
    StoreGroundTruth(store, run_id, SCENARIO).begin(tuple(PROFILES.values()))
    return run_id


def switch_on(flags: FlagFile, store, service: str, kind: str, seconds: float, size: float | None = None,
              endpoint: str | None = None, now: datetime | None = None) -> Fault:
    """Switch a fault on `service` for `seconds` (on one of its routes when `endpoint` is given); the
    services pick it up from the flag file, and its ground-truth row goes to the store."""
    magnitude = _checked(service, kind, seconds, size, endpoint)
    now = now or datetime.now(timezone.utc)
    state = flags.read() or FlagState(new_run_id(now))
    fault = Fault(f"{len(state.faults) + 1:03d}-{kind}-{service}", kind, service, endpoint, now,
                  now + timedelta(seconds=seconds), magnitude, root_cause=service)
    flags.write(replace(state, faults=[*state.faults, fault]))
    # The services end the fault on time by themselves, so its row is written closed from the start.
    StoreGroundTruth(store, state.run_id, SCENARIO).ended(fault, fault.end)
    return fault


def clear(flags: FlagFile, store, service: str, now: datetime | None = None) -> list[Fault]:
    """End `service`'s running faults now (before their planned end); returns the faults ended."""
    _check_service(service)
    now = now or datetime.now(timezone.utc)
    state = flags.read()
    if state is None:
        return []
    ended = [f for f in state.faults if f.service == service and f.active_at(now)]
    if not ended:
        return []
    flags.write(replace(state, faults=[replace(f, end=now) if f in ended else f for f in state.faults]))
    truth = StoreGroundTruth(store, state.run_id, SCENARIO)
    for fault in ended:
        truth.ended(fault, now)
    return ended


def _checked(service: str, kind: str, seconds: float, size: float | None, endpoint: str | None) -> float:
    """The fault's magnitude (the type's default when no size is given), after checking every argument."""
    _check_service(service)
    if kind not in KINDS:
        raise ConfigError(f"the shop cannot play a fault {kind!r}; choose one of {', '.join(KINDS)}")
    if not seconds > 0:
        raise ConfigError(f"a fault lasts more than 0 seconds, got {seconds:g}; give --seconds N")
    if endpoint is not None and endpoint not in PROFILES[service].endpoints:
        raise ConfigError(f"{service} has no route {endpoint!r}; its routes: {', '.join(PROFILES[service].endpoints)}")
    default, low, high, meaning = FAULT_TYPES[kind]
    magnitude = default if size is None else size
    if not low < magnitude <= high:
        raise ConfigError(f"--size of {kind} is the {meaning}: above {low:g} and at most {high:g}, got {magnitude:g}")
    return float(magnitude)


def _check_service(service: str) -> None:
    if service not in SERVICES:
        raise ConfigError(f"the shop has no service {service!r}; choose one of {', '.join(SERVICES)}")

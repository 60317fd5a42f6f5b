"""Ground truth of a generator run: each fault and benign event as it starts and ends, and the
scenario's services, written to the store (injected_incidents, service_catalog) or beside an events file."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, runtime_checkable

from obslab.generator.events import Fault
from obslab.generator.profiles import ServiceProfile
from obslab.jsonform import plain

log = logging.getLogger(__name__)


@runtime_checkable
class GroundTruth(Protocol):
    """What the run loop tells about faults: the services at the start, then each start and end."""

    def begin(self, services: tuple[ServiceProfile, ...]) -> None: ...
    def started(self, fault: Fault) -> None: ...
    def ended(self, fault: Fault, at: datetime) -> None: ...
    def flush(self, final: bool = False) -> None: ...


def _truth_row(run_id: str, scenario: str, fault: Fault, end: datetime | None) -> dict:
    return {"run_id": run_id, "fault_id": fault.fault_id, "scenario": scenario, "fault_type": fault.type,
            "service": fault.service, "endpoint": fault.endpoint, "start_time": fault.start,
            "end_time": end, "magnitude": fault.magnitude, "benign": fault.benign,
            "root_cause": fault.root_cause or fault.service, "cause_fault_id": fault.cause_fault_id}


def catalog_rows(services: tuple[ServiceProfile, ...], scenario: str, at: datetime) -> list[dict]:
    """The scenario's services as service_catalog rows (endpoints as JSON, callees comma-separated)."""
    return [{"service": s.name, "endpoints": json.dumps(list(s.endpoints)), "sla_ms": s.sla_ms,
             "slo_availability": s.slo_availability, "calls": ",".join(c.service for c in s.calls) or None,
             "scenario": scenario, "updated_at": at} for s in services]


class StoreGroundTruth:
    """Writes each fault to injected_incidents when it starts, and closes it when it ends; at the
    start of a run, the scenario's services (SLA, SLO, calls) to service_catalog.

    A store another process holds does not stop the traffic: the fault's row waits (`pending`, the newest
    row per fault) and is written at the next start, end or tick (`flush`); the run's last `flush(final=True)`
    waits for the store up to FINAL_WAIT_S, then raises."""

    FINAL_WAIT_S = 300.0

    def __init__(self, store, run_id: str, scenario: str):
        self.store, self.run_id, self.scenario = store, run_id, scenario
        self.pending: dict[str, dict] = {}  # fault_id -> its newest row, not written yet

    def begin(self, services: tuple[ServiceProfile, ...]) -> None:
        self.store.upsert("service_catalog", catalog_rows(services, self.scenario, datetime.now(timezone.utc)))

    def started(self, fault: Fault) -> None:
        self.pending[fault.fault_id] = _truth_row(self.run_id, self.scenario, fault, None)
        self.flush()

    def ended(self, fault: Fault, at: datetime) -> None:
        self.pending[fault.fault_id] = _truth_row(self.run_id, self.scenario, fault, at)
        self.flush()

    def flush(self, final: bool = False) -> None:
        from obslab.errors import StoreLockedError
        from obslab.retry import call_with_retries

        if not self.pending:
            return
        rows = list(self.pending.values())
        try:
            if final:
                call_with_retries(lambda: self.store.upsert("injected_incidents", rows), StoreLockedError,
                                  first_wait_s=1.0, max_wait_s=30.0, within_s=self.FINAL_WAIT_S)
            else:
                self.store.upsert("injected_incidents", rows)
        except StoreLockedError as err:
            if final:
                raise
            log.warning("the ground truth of %s waits for the store (%s); the traffic goes on",
                        ", ".join(self.pending), err)
            return
        self.pending.clear()


class FileGroundTruth:
    """Ground truth beside an events file: one JSON line per start and per end."""

    def __init__(self, path: Path, run_id: str, scenario: str):
        self.path, self.run_id, self.scenario = Path(path), run_id, scenario
        self.path.write_text("")

    def begin(self, services: tuple[ServiceProfile, ...]) -> None:
        """Nothing: a file's ground truth holds faults only (the scenario file names the services)."""

    def flush(self, final: bool = False) -> None:
        """Nothing: each line is written when it comes."""

    def _write(self, row: dict) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(plain(row)) + "\n")

    def started(self, fault: Fault) -> None:
        self._write(_truth_row(self.run_id, self.scenario, fault, None))

    def ended(self, fault: Fault, at: datetime) -> None:
        self._write(_truth_row(self.run_id, self.scenario, fault, at))


def faults_file_for(events_file: Path) -> Path:
    """`events.jsonl` -> `events.faults.jsonl`."""
    events_file = Path(events_file)
    return events_file.with_name(events_file.name.removesuffix(".jsonl") + ".faults.jsonl")

"""What an evaluation reports: one result per fault, incident, benign event and cascade, and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from statistics import median

from obslab.jsonform import plain

# Fixed start of the simulated run (a Monday, on a window boundary): the same inputs give the same report.
EVALUATION_START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)

# What became of a fault (see docs/detection.md, "Evaluation"); only the first counts as found.
IN_TIME, LATE, MERGED, MISSED = "in_time", "late", "merged", "missed"
OUTCOMES = (IN_TIME, LATE, MERGED, MISSED)


@dataclass
class FaultResult:
    fault_id: str
    type: str
    service: str
    endpoint: str | None
    start: datetime
    end: datetime
    magnitude: float | None = None
    root_cause: str | None = None
    cause_fault_id: str | None = None  # set on a cascade's effect: the root fault's id
    outcome: str = MISSED  # in_time | late | merged | missed
    detected: bool = False  # found in time (outcome == in_time)
    ttd_seconds: float | None = None  # first detection - start (in time or late)
    late_seconds: float | None = None  # first detection - end, when late
    incident_id: str | None = None  # the incident credited to it (in time or late)
    merged_into: str | None = None  # when merged: the fault its matching incident is credited to
    incident_ids: list[str] = field(default_factory=list)  # every incident that matches it
    detectors: list[str] = field(default_factory=list)  # detectors with an anomaly in its own incident


@dataclass
class BenignResult:
    fault_id: str
    type: str
    service: str
    start: datetime
    end: datetime
    magnitude: float | None = None
    paged: bool = False  # an incident that matches no fault overlaps it on its service
    incident_ids: list[str] = field(default_factory=list)


@dataclass
class IncidentResult:
    incident_id: str
    service: str
    kind: str
    opened_at: datetime
    last_anomaly_at: datetime
    first_detected_at: datetime  # including the wall time of the detection run that raised it
    early: bool  # first raised on an open (partial) window
    origin_service: str | None = None
    matched: bool = False  # credited to a fault (one at most)
    fault_id: str | None = None  # that fault
    duplicate: bool = False  # matches only faults that another incident is credited to
    cause: str = "spurious"  # fault | duplicate | benign | other_kind | spurious


@dataclass
class CascadeResult:
    root_fault_id: str
    root_cause: str
    effect_fault_ids: list[str]
    origins: dict[str, str | None]  # incident id -> origin_service, for every incident matched to it
    correct: bool


@dataclass
class Evaluation:
    """The report of one evaluation; `as_dict()` is the `obslab evaluate --json` contract."""

    scenario: str
    seed: int
    events_per_second: float
    duration_seconds: float
    events: int
    window_seconds: int
    trigger_seconds: float
    poll_seconds: float
    faults: list[FaultResult]
    incidents: list[IncidentResult]
    store_path: str | None
    seconds: float
    benign: list[BenignResult] = field(default_factory=list)
    cascades: list[CascadeResult] = field(default_factory=list)
    detect_run_seconds: list[float] = field(default_factory=list)  # wall time of every run_detection call

    def count(self, outcome: str) -> int:
        """How many faults had this outcome."""
        return sum(f.outcome == outcome for f in self.faults)

    @property
    def recall(self) -> float | None:
        return self.count(IN_TIME) / len(self.faults) if self.faults else None

    @property
    def precision(self) -> float | None:
        return sum(i.matched for i in self.incidents) / len(self.incidents) if self.incidents else None

    @property
    def false_incidents(self) -> int:
        return sum(not i.matched for i in self.incidents)

    @property
    def false_incidents_per_hour(self) -> float:
        return self.false_incidents / (self.duration_seconds / 3600)

    @property
    def median_ttd_seconds(self) -> float | None:
        ttds = [f.ttd_seconds for f in self.faults if f.outcome == IN_TIME]
        return median(ttds) if ttds else None

    @property
    def benign_paged(self) -> int:
        return sum(b.paged for b in self.benign)

    @property
    def root_cause_accuracy(self) -> float | None:
        return sum(c.correct for c in self.cascades) / len(self.cascades) if self.cascades else None

    def as_dict(self) -> dict:
        """The `--json` form: the summary figures, the per-type figures and every result."""
        from obslab.evaluation.pooling import pool, spread

        pooled = pool([self])
        return plain({
            "scenario": self.scenario, "seed": self.seed, "events_per_second": self.events_per_second,
            "duration_seconds": self.duration_seconds, "events": self.events,
            "window_seconds": self.window_seconds, "trigger_seconds": self.trigger_seconds,
            "poll_seconds": self.poll_seconds,
            "precision": self.precision, "recall": self.recall,
            **{outcome: self.count(outcome) for outcome in OUTCOMES},
            "median_ttd_seconds": self.median_ttd_seconds,
            "p90_ttd_seconds": pooled["overall"]["p90_ttd_seconds"],
            "false_incidents": self.false_incidents,
            "false_incidents_per_hour": round(self.false_incidents_per_hour, 3),
            "benign_events": len(self.benign), "benign_paged": self.benign_paged,
            "root_cause_accuracy": self.root_cause_accuracy,
            "by_type": pooled["by_type"], "false_by_cause": pooled["overall"]["false_by_cause"],
            "detect_run_seconds": spread(self.detect_run_seconds),
            "faults": self.faults, "benign": self.benign, "cascades": self.cascades, "incidents": self.incidents,
            "store_path": self.store_path, "seconds": round(self.seconds, 1),
        })

    def describe(self, each_fault: bool = False) -> str:
        """For a person: a line per fault, benign event, cascade and false incident (`each_fault`), then a summary."""
        lines = []
        if each_fault:
            lines += [_fault_line(f) for f in self.faults]
            lines += [f"{b.start:%H:%M:%S}  benign {b.type:<13} {b.service:<26} "
                      f"{'PAGED: ' + ', '.join(b.incident_ids) if b.paged else 'did not page'}" for b in self.benign]
            for c in self.cascades:
                named = ", ".join(f"{i} -> {o or 'none'}" for i, o in c.origins.items()) or "no incident"
                lines.append(f"cascade {c.root_fault_id} from {c.root_cause}: root cause "
                             f"{'named' if c.correct else 'NOT named'} ({named})")
            lines += [f"{i.opened_at:%H:%M:%S}  false incident {i.incident_id} ({i.cause})"
                      for i in self.incidents if not i.matched]
        ttd = self.median_ttd_seconds
        lines.append(f"{self.scenario} (seed {self.seed}, {self.events:,} events, {self.duration_seconds / 60:g} min): "
                     f"recall in time {_pct(self.recall)} ({self.count(IN_TIME)} of {len(self.faults)}; "
                     f"late {self.count(LATE)}, merged {self.count(MERGED)}, missed {self.count(MISSED)}), "
                     f"precision {_pct(self.precision)}, median time to detect "
                     f"{'n/a' if ttd is None else f'{ttd:g} s'}, {self.false_incidents} false incidents "
                     f"({self.false_incidents_per_hour:g}/h), benign events paged {self.benign_paged} of "
                     f"{len(self.benign)}; store: {self.store_path or 'not kept'}")
        return "\n".join(lines)


def _fault_line(f: FaultResult) -> str:
    where = f.service + (f" {f.endpoint}" if f.endpoint else "")
    if f.outcome == IN_TIME:
        found = f"in time, detected after {f.ttd_seconds:g} s"
    elif f.outcome == LATE:
        found = f"LATE: first detected {f.late_seconds:g} s after it ended ({f.incident_id})"
    elif f.outcome == MERGED:
        found = f"MERGED: {', '.join(f.incident_ids)} credited to {f.merged_into}"
    else:
        found = "MISSED"
    effect = f" (effect of {f.cause_fault_id})" if f.cause_fault_id else ""
    return f"{f.start:%H:%M:%S}  {f.fault_id:<10} {f.type:<20} {where:<26} {found}{effect}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"

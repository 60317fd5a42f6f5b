"""Incidents matched to the injected faults: in time, late, merged or missed (docs/detection.md, "Evaluation")."""

from __future__ import annotations

from datetime import datetime, timedelta

from obslab.evaluation.results import (IN_TIME, LATE, MERGED, BenignResult, CascadeResult, FaultResult,
                                       IncidentResult)
from obslab.settings import Settings

# Which incident kinds each fault type is expected to cause.
FAULT_KINDS = {"error_surge": {"errors"}, "endpoint_outage": {"errors"}, "latency_spike": {"latency"},
               "latency_degradation": {"latency"}, "traffic_drop": {"traffic"}}

# (detector, window end, detection time, raised on an open window) of each anomaly of one incident
Evidence = list[tuple[str, datetime, datetime, bool]]


def in_time_allowance(window_seconds: float, trigger_seconds: float, poll_seconds: float) -> timedelta:
    """How long after a fault's end its first detection still counts as in time: a window, a trigger and a poll."""
    return timedelta(seconds=window_seconds + trigger_seconds + poll_seconds)


def default_allowance() -> timedelta:
    """The allowance with the settings' default window, trigger and poll."""
    fields = Settings.model_fields
    return in_time_allowance(fields["window_seconds"].default, fields["trigger_seconds"].default,
                             fields["detect_poll_seconds"].default)


def match_incidents(store, run_seconds: dict[datetime, float] | None = None, allowance: timedelta | None = None):
    """(faults, incidents, benign events, cascades) of a store, each fault judged by the in-time rule."""
    faults, benign = _truth(store)
    evidence = _evidence(store, run_seconds or {})
    incidents = _incidents(store, evidence)
    credit(faults, incidents, evidence, default_allowance() if allowance is None else allowance)
    _classify(incidents, faults, benign)
    return faults, incidents, benign, cascades(faults, incidents)


def _truth(store) -> tuple[list[FaultResult], list[BenignResult]]:
    rows = store.query("""
        SELECT fault_id, fault_type, service, endpoint, start_time, end_time, magnitude,
               coalesce(benign, false), root_cause, cause_fault_id
        FROM injected_incidents ORDER BY start_time, fault_id""")
    faults = [FaultResult(*r[:6], magnitude=r[6], root_cause=r[8] or r[2], cause_fault_id=r[9])
              for r in rows if not r[7]]
    benign = [BenignResult(r[0], r[1], r[2], r[4], r[5], magnitude=r[6]) for r in rows if r[7]]
    return faults, benign


def _evidence(store, run_seconds: dict[datetime, float]) -> dict[str, Evidence]:
    """incident id -> its anomalies, each dated with the wall time of the run that raised it."""
    out: dict[str, Evidence] = {}
    for incident_id, detector, window_end, at, partial in store.query(
            "SELECT incident_id, detector, window_end, detected_at, used_partial_window FROM anomalies"):
        at += timedelta(seconds=run_seconds.get(at, 0.0))
        out.setdefault(incident_id, []).append((detector, window_end, at, bool(partial)))
    return out


def _incidents(store, evidence: dict[str, Evidence]) -> list[IncidentResult]:
    """The incidents that have evidence, each with its first detection and whether that was on an open window."""
    out = []
    for incident_id, service, kind, opened, last, origin in store.query(
            "SELECT incident_id, service, kind, opened_at, last_anomaly_at, origin_service FROM incidents "
            "ORDER BY opened_at, service, kind"):
        if incident_id in evidence:
            _, _, at, partial = min(evidence[incident_id], key=lambda e: e[2])
            out.append(IncidentResult(incident_id, service, kind, opened, last, at, partial, origin_service=origin))
    return out


def _overlaps(i: IncidentResult, start: datetime, end: datetime) -> bool:
    return i.opened_at < end and i.last_anomaly_at > start


def credit(faults: list[FaultResult], incidents: list[IncidentResult], evidence: dict[str, Evidence],
           allowance: timedelta) -> None:
    """Give each fault, earliest first, the free matching incident that detected it first; set its outcome."""
    owner: dict[str, FaultResult] = {}  # incident id -> the fault credited with it
    for f in faults:
        matching = sorted((i for i in incidents if i.service == f.service and i.kind in FAULT_KINDS[f.type]
                           and _overlaps(i, f.start, f.end)), key=lambda i: (i.first_detected_at, i.opened_at))
        f.incident_ids = [i.incident_id for i in matching]
        # (first detection after the fault began, in a window it reaches; the incident), for free incidents
        found = sorted(((at, i.opened_at, i.incident_id), i) for i in matching if i.incident_id not in owner
                       for at in [_first_after(evidence[i.incident_id], f.start)] if at is not None)
        if found:
            (at, _, _), own = found[0]
            owner[own.incident_id] = f
            own.matched, own.fault_id = True, f.fault_id
            _found(f, own, at, evidence[own.incident_id], allowance)
        elif taken := [i for i in matching if i.incident_id in owner]:
            f.outcome, f.merged_into = MERGED, owner[taken[0].incident_id].fault_id


def _first_after(evidence: Evidence, start: datetime) -> datetime | None:
    return min((at for _, window_end, at, _ in evidence if window_end > start and at >= start), default=None)


def _found(f: FaultResult, own: IncidentResult, at: datetime, evidence: Evidence, allowance: timedelta) -> None:
    in_time = at < f.end + allowance
    f.outcome, f.detected, f.incident_id = (IN_TIME if in_time else LATE), in_time, own.incident_id
    f.ttd_seconds = round((at - f.start).total_seconds(), 3)
    f.late_seconds = None if in_time else round((at - f.end).total_seconds(), 3)
    f.detectors = sorted({d for d, window_end, t, _ in evidence if window_end > f.start and t >= f.start})


def _classify(incidents: list[IncidentResult], faults: list[FaultResult], benign: list[BenignResult]) -> None:
    """The cause of every incident, and the benign events that paged."""
    reported = {incident_id for f in faults for incident_id in f.incident_ids}
    for i in incidents:
        i.duplicate = not i.matched and i.incident_id in reported
        if i.matched or i.duplicate:
            i.cause = "fault" if i.matched else "duplicate"
        elif any(b.service == i.service and _overlaps(i, b.start, b.end) for b in benign):
            i.cause = "benign"
        elif any(f.service == i.service and _overlaps(i, f.start, f.end) for f in faults):
            i.cause = "other_kind"
    for b in benign:
        b.incident_ids = [i.incident_id for i in incidents
                          if i.cause == "benign" and i.service == b.service and _overlaps(i, b.start, b.end)]
        b.paged = bool(b.incident_ids)


def cascades(faults: list[FaultResult], incidents: list[IncidentResult]) -> list[CascadeResult]:
    """Each root fault with effects, and whether every incident matched to it names the root's origin."""
    origin = {i.incident_id: i.origin_service for i in incidents}
    out = []
    for root in faults:
        effects = [f for f in faults if f.cause_fault_id == root.fault_id]
        if not effects or root.cause_fault_id:
            continue
        named = {incident_id: origin[incident_id] for f in [root, *effects] for incident_id in f.incident_ids}
        cause = root.root_cause or root.service
        out.append(CascadeResult(root.fault_id, cause, [f.fault_id for f in effects], named,
                                 bool(named) and all(o == cause for o in named.values())))
    return out

"""Incidents: anomalies of one service and kind, merged over time, that open, update and resolve.

An incident is stored, and keeps the id it got when it opened for its whole life
(`<service>:<kind>:<start of the window that opened it>`); it is never re-derived from whatever
anomalies the detector's lookback still holds. Each new anomaly finds its home among the
incidents of its service and kind:

    1. an incident whose span, widened by the resolve gap on both sides, holds the anomaly's window:
       it is evidence of that incident, even when it arrives late (a window that only fires once
       final) and even when its window is earlier than the incident's first one;
    2. else the open incident whose clean tail has not passed yet: nothing has ended it;
    3. else a new incident, opened at the anomaly's window.

The resolve gap is RESOLVE_AFTER_WINDOWS windows. An incident resolves once that many windows
after its last anomaly are final (judged on the newest final window of any service); a late
anomaly in that tail reopens it. Counts, severity, detectors and endpoints accumulate, so an
incident longer than the lookback still describes all of itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone

from obslab.detect.detectors import Anomaly

_SEVERITY_ORDER = {"medium": 0, "high": 1, "critical": 2}


@dataclass(frozen=True)
class Incident:
    """A group of anomalies with a lifecycle."""

    incident_id: str
    service: str
    kind: str
    status: str  # open | resolved
    opened_at: datetime  # start of the first anomalous window
    last_anomaly_at: datetime  # end of the last anomalous window
    resolved_at: datetime | None
    severity: str  # the worst of its anomalies
    anomaly_count: int
    detectors: str  # comma-separated, sorted
    endpoints: str  # comma-separated, sorted ('' when only service-level)

    def row(self) -> dict:
        return asdict(self)


def assign_incidents(anomalies: list[Anomaly], membership: dict[str, str], known: list[Incident],
                     latest_final_end: datetime | None, window_seconds: int,
                     resolve_after_windows: int) -> tuple[list[Incident], dict[str, str]]:
    """Fold anomalies into the stored incidents: (every incident, updated; the incident id of every anomaly).

    `membership` holds the incident of each anomaly that already belongs to one of `known` (those
    are not counted again); every other anomaly is placed by the rules of this module.
    """
    gap = timedelta(seconds=window_seconds * resolve_after_windows)
    incidents = {i.incident_id: i for i in known}
    placed = {a: i for a, i in membership.items() if i in incidents}
    # Time order: an anomaly that opens an incident comes before the ones that join it.
    for a in sorted(anomalies, key=lambda a: (a.window_start, a.window_end, a.anomaly_id)):
        incident_id = placed.get(a.anomaly_id)
        new = incident_id is None
        if new:
            home = _home(a, incidents.values(), latest_final_end, gap)
            incident_id = home.incident_id if home else _new_id(a, incidents)
            if home is None:
                incidents[incident_id] = Incident(incident_id, a.service, a.kind, "open", a.window_start,
                                                  a.window_end, None, a.severity, 0, "", "")
            placed[a.anomaly_id] = incident_id
        incidents[incident_id] = _absorb(incidents[incident_id], a, counted=new)
    out = [_settle(i, latest_final_end, gap) for i in incidents.values()]
    return sorted(out, key=lambda i: (i.opened_at, i.service, i.kind)), placed


def build_incidents(anomalies: list[Anomaly], latest_final_end: datetime | None, window_seconds: int,
                    resolve_after_windows: int) -> tuple[list[Incident], dict[str, str]]:
    """Incidents from anomalies alone (nothing stored yet), and the incident id of every anomaly id."""
    return assign_incidents(anomalies, {}, [], latest_final_end, window_seconds, resolve_after_windows)


def _home(a: Anomaly, incidents, latest_final_end: datetime | None, gap: timedelta) -> Incident | None:
    mine = sorted((i for i in incidents if (i.service, i.kind) == (a.service, a.kind)), key=lambda i: i.opened_at)
    for i in mine:
        if i.opened_at - gap < a.window_end and a.window_start < i.last_anomaly_at + gap:
            return i
    for i in mine:
        if not _tail_passed(i, latest_final_end, gap):  # still open
            return i
    return None


def _new_id(a: Anomaly, incidents: dict) -> str:
    base = f"{a.service}:{a.kind}:{a.window_start.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"
    # An incident whose first window moved earlier (a late anomaly joined it) keeps its id, so a
    # later incident could in principle be born with the same one: never reuse an id.
    incident_id, n = base, 1
    while incident_id in incidents:
        n += 1
        incident_id = f"{base}-{n}"
    return incident_id


def _absorb(i: Incident, a: Anomaly, counted: bool) -> Incident:
    return replace(
        i, opened_at=min(i.opened_at, a.window_start), last_anomaly_at=max(i.last_anomaly_at, a.window_end),
        severity=max(i.severity, a.severity, key=_SEVERITY_ORDER.__getitem__),
        anomaly_count=i.anomaly_count + (1 if counted else 0),
        detectors=_union(i.detectors, a.detector), endpoints=_union(i.endpoints, a.endpoint))


def _union(listed: str, item: str | None) -> str:
    items = {x for x in listed.split(",") if x}
    if item:
        items.add(item)
    return ",".join(sorted(items))


def _tail_passed(i: Incident, latest_final_end: datetime | None, gap: timedelta) -> bool:
    return latest_final_end is not None and latest_final_end - i.last_anomaly_at >= gap


def _settle(i: Incident, latest_final_end: datetime | None, gap: timedelta) -> Incident:
    if latest_final_end is None:
        return i  # no window is final yet: nothing can have ended
    if _tail_passed(i, latest_final_end, gap):
        return replace(i, status="resolved", resolved_at=i.last_anomaly_at + gap)
    return replace(i, status="open", resolved_at=None)

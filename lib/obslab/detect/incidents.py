"""Incidents: anomalies of one service and kind, merged over time, that open, update and resolve.

An incident is stored, and keeps the id it got when it opened for its whole life
(`<service>:<kind>:<start of the window that opened it>`); it is never re-derived from whatever
anomalies the detector's lookback still holds. Each new anomaly finds its home among the
incidents of its service and kind, in event time:

    1. an incident whose span, widened by the resolve gap on both sides, holds the anomaly's window
       (it starts before last_anomaly_at + gap and ends after opened_at - gap): evidence of that
       incident, even when it arrives late (a window that only fires once final) and even when its
       window is earlier than the incident's first one;
    2. else a new incident, opened at the anomaly's window.

The resolve gap is RESOLVE_AFTER_WINDOWS windows. An anomaly that starts a gap or more after an
incident's last anomalous window belongs to a new incident at once, whether or not the windows in
between are final yet: the service was back to normal for the gap, so it is a separate fault.
An incident's status becomes resolved once that many windows after its last anomaly are final
(judged on the newest final window of any service); a late anomaly in that tail reopens it.
Counts, severity, detectors and endpoints accumulate, so an incident longer than the lookback
still describes all of itself.

Cascades. One fault often shows on several services: payments fails, and checkout, which calls
it, fails with it. Incidents on different services whose spans overlap, that opened at most
CASCADE_GAP_WINDOWS windows apart, and whose services the catalogue links (one calls the other,
directly or through services in between) are related (transitively: one cascade). Services the
catalogue does not link are never related, however close in time: two independent faults that
happen to overlap are common, and a narrative that names a wrong origin misleads more than one
that names none. Each incident of a cascade names the likely origin:

    1. a service of the cascade that the others call (service_catalog.calls, followed through
       intermediate services), if it deviated no later than a window after its callers there;
       the deepest such callee wins ("checkout calls payments");
    2. otherwise the service that deviated first: the earliest first anomalous window, then the
       earliest detection ("first to deviate").

Its related incidents are the cascade's other incidents. An incident that stands alone has
neither (NULL). The relation is recomputed on every run over the incidents in play, so it grows
with the cascade.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    origin_service: str | None = None  # likely origin of the cascade it belongs to (None: it stands alone)
    origin_reason: str | None = None  # why that service: "first to deviate", "checkout calls payments"
    related_incidents: str | None = None  # comma-separated ids of the other incidents of the cascade

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
            home = _home(a, incidents.values(), gap)
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


def _home(a: Anomaly, incidents, gap: timedelta) -> Incident | None:
    """The earliest incident of the anomaly's service and kind whose span widened by `gap` holds its window."""
    mine = sorted((i for i in incidents if (i.service, i.kind) == (a.service, a.kind)), key=lambda i: i.opened_at)
    return next((i for i in mine if i.opened_at - gap < a.window_end and a.window_start < i.last_anomaly_at + gap),
                None)


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


def relate_incidents(incidents: list[Incident], calls: Mapping[str, set[str]], window_seconds: int,
                     gap_windows: int, first_seen: Mapping[str, datetime] | None = None) -> list[Incident]:
    """The incidents with their cascade (origin, reason, related ids), or NULLs when alone.

    `calls` maps a service to the services it calls (the service catalogue's declared
    dependencies); `first_seen` the incident ids to when they were first detected (breaks a tie
    between services that deviated in the same window). A cascade that reaches incidents outside
    `incidents` (a member no longer in play) keeps what is stored: it cannot be recomputed whole.
    """
    first_seen = first_seen or {}
    window = timedelta(seconds=window_seconds)
    gap = window * gap_windows
    by_id = {i.incident_id: i for i in incidents}
    ordered = sorted(incidents, key=lambda i: (i.opened_at, i.incident_id))
    parent = {i.incident_id: i.incident_id for i in incidents}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for n, a in enumerate(ordered):
        for b in ordered[n + 1:]:
            if b.opened_at - a.opened_at > gap:
                break  # opened too long after a: so is everything after b
            if (a.service != b.service and a.opened_at < b.last_anomaly_at and b.opened_at < a.last_anomaly_at
                    and _linked(a.service, b.service, calls)):
                parent[root(b.incident_id)] = root(a.incident_id)
    groups: dict[str, list[Incident]] = {}
    for i in incidents:
        groups.setdefault(root(i.incident_id), []).append(i)
    out = dict(by_id)
    for members in groups.values():
        ids = {i.incident_id for i in members}
        stored = {x for i in members for x in (i.related_incidents or "").split(",") if x}
        if not stored <= set(by_id):
            continue  # part of the cascade is out of play: keep what is stored
        if len({i.service for i in members}) < 2:
            for i in members:
                out[i.incident_id] = replace(i, origin_service=None, origin_reason=None, related_incidents=None)
            continue
        origin, reason = _origin(members, calls, window, first_seen)
        for i in members:
            related = ",".join(sorted(ids - {i.incident_id}))
            out[i.incident_id] = replace(i, origin_service=origin, origin_reason=reason, related_incidents=related)
    return [out[i.incident_id] for i in incidents]


def _origin(members: list[Incident], calls: Mapping[str, set[str]], window: timedelta,
            first_seen: Mapping[str, datetime]) -> tuple[str, str]:
    """(origin service, reason) of one cascade (see the module's docstring)."""
    never = datetime.max.replace(tzinfo=timezone.utc)
    deviated: dict[str, tuple[datetime, datetime]] = {}  # service -> (first window, first detection)
    for i in members:
        mark = (i.opened_at, first_seen.get(i.incident_id, never))
        deviated[i.service] = min(deviated.get(i.service, mark), mark)
    services = sorted(deviated)
    paths = {s: _reach(s, calls, set(services)) for s in services}  # caller -> {callee in the cascade: path}
    candidates = {}
    for callee in services:
        callers = [s for s in services if callee in paths[s]]
        if callers and deviated[callee][0] <= min(deviated[s][0] for s in callers) + window:
            first_caller = min(callers, key=lambda s: (deviated[s], len(paths[s][callee]), s))
            candidates[callee] = paths[first_caller][callee]
    if candidates:
        # The deepest callee: one that reaches no other candidate through its own calls.
        deepest = [c for c in candidates if not any(o in paths[c] for o in candidates if o != c)]
        origin = min(deepest or candidates, key=lambda s: (deviated[s], s))
        return origin, _path_text(candidates[origin])
    origin = min(services, key=lambda s: (deviated[s], s))
    return origin, "first to deviate"


def _linked(a: str, b: str, calls: Mapping[str, set[str]]) -> bool:
    """Whether the catalogue declares a path of calls from a to b or from b to a."""
    return bool(_reach(a, calls, {b}) or _reach(b, calls, {a}))


def _reach(service: str, calls: Mapping[str, set[str]], within: set[str]) -> dict[str, list[str]]:
    """The services of `within` that `service` calls, directly or through others, each with the
    shortest declared path to it (the caller first)."""
    found: dict[str, list[str]] = {}
    frontier = [[service]]
    seen = {service}
    while frontier:
        nxt = []
        for path in frontier:
            for callee in sorted(calls.get(path[-1], ())):
                if callee in seen:
                    continue
                seen.add(callee)
                nxt.append(path + [callee])
                if callee in within:
                    found[callee] = path + [callee]
        frontier = nxt
    return found


def _path_text(path: list[str]) -> str:
    """'checkout calls payments', 'search calls checkout, which calls payments'."""
    text = f"{path[0]} calls {path[1]}"
    for callee in path[2:]:
        text += f", which calls {callee}"
    return text

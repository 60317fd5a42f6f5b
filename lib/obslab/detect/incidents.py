"""Incidents: anomalies of one service and kind, merged over time, that open, update and resolve.

An incident opens with its first anomalous window. Anomalies of the same service and kind that
come within RESOLVE_AFTER_WINDOWS windows of the previous one join it. It resolves once that many
final windows have passed after its last anomaly (judged on the newest final window of any
service, so an incident on a service that went silent still resolves). Incidents are rebuilt from
the anomalies each time, so detection over the same windows always gives the same incidents.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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


def build_incidents(anomalies: list[Anomaly], latest_final_end: datetime | None, window_seconds: int,
                    resolve_after_windows: int) -> tuple[list[Incident], dict[str, str]]:
    """Incidents from anomalies, and the incident id of every anomaly id."""
    gap = timedelta(seconds=window_seconds * resolve_after_windows)
    groups: dict[tuple[str, str], list[list[Anomaly]]] = {}
    for a in sorted(anomalies, key=lambda a: (a.service, a.kind, a.window_start)):
        runs = groups.setdefault((a.service, a.kind), [])
        if runs and a.window_start - max(x.window_end for x in runs[-1]) < gap:
            runs[-1].append(a)
        else:
            runs.append([a])
    incidents, membership = [], {}
    for (service, kind), runs in groups.items():
        for members in runs:
            opened = min(a.window_start for a in members)
            last = max(a.window_end for a in members)
            resolved = latest_final_end is not None and latest_final_end - last >= gap
            incident_id = f"{service}:{kind}:{opened.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"
            incidents.append(Incident(
                incident_id, service, kind, "resolved" if resolved else "open", opened, last,
                last + gap if resolved else None,
                max((a.severity for a in members), key=_SEVERITY_ORDER.__getitem__), len(members),
                ",".join(sorted({a.detector for a in members})),
                ",".join(sorted({a.endpoint for a in members if a.endpoint})),
            ))
            for a in members:
                membership[a.anomaly_id] = incident_id
    return sorted(incidents, key=lambda i: (i.opened_at, i.service, i.kind)), membership

"""One detection run over the store: windows -> anomalies -> incidents, written idempotently."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from obslab.detect.detectors import Anomaly, DetectorConfig, Window, detect_series
from obslab.detect.incidents import Incident, build_incidents
from obslab.health import beat
from obslab.settings import Settings, get_settings

log = logging.getLogger(__name__)

_WINDOW_COLUMNS = ("window_start, window_end, request_count, error_count, avg_latency_ms, p99_latency_ms, is_final")


def config_from(settings: Settings) -> DetectorConfig:
    """Detector thresholds from settings: changing a threshold is a settings change, not a code edit."""
    return DetectorConfig(
        error_surge_factor=settings.error_surge_factor, error_confidence_z=settings.error_confidence_z,
        latency_sla_ms=dict(settings.latency_sla_ms), latency_spike_factor=settings.latency_spike_factor,
        shift_z=settings.shift_z, slo_availability=dict(settings.slo_availability),
        burn_threshold=settings.burn_threshold,
        min_partial_requests=settings.partial_window_min_requests or DetectorConfig.NEVER)


@dataclass
class DetectReport:
    """What one detection run found and changed."""

    windows: int
    anomalies: int
    incidents: list[Incident]
    changed: list[Incident]  # new or updated since the previous run


def read_series(store, settings: Settings) -> tuple[list[list[Window]], datetime | None]:
    """Per service and per endpoint: the windows of the lookback period; and the newest final window end."""
    with store.reader() as con:
        newest = con.execute("SELECT max(window_start) FROM service_metrics").fetchall()[0][0]
        if newest is None:
            return [], None
        since = newest - timedelta(minutes=settings.detect_lookback_minutes)
        services = con.execute(f"SELECT service, NULL, {_WINDOW_COLUMNS} FROM service_metrics "
                               "WHERE window_start >= ? ORDER BY service, window_start", [since]).fetchall()
        endpoints = con.execute(f"SELECT service, endpoint, {_WINDOW_COLUMNS} FROM endpoint_metrics "
                                "WHERE window_start >= ? ORDER BY service, endpoint, window_start", [since]).fetchall()
        latest_final = con.execute("SELECT max(window_end) FROM service_metrics WHERE is_final").fetchall()[0][0]
    series: dict[tuple, list[Window]] = {}
    for row in services + endpoints:
        series.setdefault((row[0], row[1]), []).append(Window(*row))
    return list(series.values()), latest_final


_ANOMALY_FIELDS = ("detector, service, endpoint, metric, value, baseline, threshold, window_start, window_end, "
                   "request_count, severity, used_partial_window")


def run_detection(store, settings: Settings | None = None, now: datetime | None = None) -> DetectReport:
    """Detect over the lookback period and write anomalies and incidents; re-running changes nothing.

    An anomaly once raised stays raised: an early detection on an open window that the full window
    no longer supports keeps its row (it was reported), and its incident resolves like any other.
    Its first `detected_at` and `used_partial_window` survive later runs. `now` is the detection
    time to record (default: the wall clock; evaluation passes simulated time).
    """
    s = settings or get_settings()
    store.migrate()
    cfg = config_from(s)
    all_series, latest_final = read_series(store, s)
    found = {a.anomaly_id: a for series in all_series for a in detect_series(series, cfg)}
    now = now or datetime.now(timezone.utc)
    with store.reader() as con:
        newest = con.execute("SELECT max(window_start) FROM service_metrics").fetchall()[0][0]
        stored = con.execute(f"SELECT {_ANOMALY_FIELDS}, detected_at FROM anomalies WHERE window_start >= ?",
                             [newest - timedelta(minutes=s.detect_lookback_minutes)]).fetchall() if newest else []
        before = {r[0]: r[1:] for r in con.execute(
            "SELECT incident_id, status, last_anomaly_at, severity, anomaly_count, detectors, endpoints "
            "FROM incidents").fetchall()}
        still_open = con.execute("SELECT * EXCLUDE (updated_at) FROM incidents WHERE status = 'open'").fetchall()
    earlier, first_seen = {}, {}
    for row in stored:
        a = Anomaly(*row[:-1])
        earlier[a.anomaly_id] = a
        first_seen[a.anomaly_id] = (row[-1], a.used_partial_window)  # survive re-runs
    raised = earlier | found
    incidents, membership = build_incidents(list(raised.values()), latest_final, s.window_seconds,
                                            s.resolve_after_windows)
    rows = []
    for a in raised.values():
        row = a.row()
        row["incident_id"] = membership[a.anomaly_id]
        if a.anomaly_id in first_seen:
            row["detected_at"], row["used_partial_window"] = first_seen[a.anomaly_id]
        else:
            row["detected_at"] = now
        rows.append(row)
    changed = [i for i in incidents if before.get(i.incident_id) !=
               (i.status, i.last_anomaly_at, i.severity, i.anomaly_count, i.detectors, i.endpoints)]
    changed += _aged_out(still_open, {i.incident_id for i in incidents}, s)
    store.upsert_many({"anomalies": rows, "incidents": [i.row() | {"updated_at": now} for i in changed]})
    windows = sum(len(x) for x in all_series)
    # The wall-clock heartbeat `obslab health` reads (the recorded `now` may be simulated).
    beat(s, "detect", detail=f"{windows} windows, {len(found)} anomalies, {len(changed)} incidents changed")
    return DetectReport(windows, len(found), incidents, changed)


def _aged_out(still_open: list[tuple], current: set[str], s: Settings) -> list[Incident]:
    """Open incidents whose anomalies all left the lookback period (the stream was stopped for a
    long time): nothing can update them any more, so they resolve rather than stay open forever."""
    gap = timedelta(seconds=s.window_seconds * s.resolve_after_windows)
    out = []
    for row in still_open:
        incident = Incident(*row)
        if incident.incident_id not in current:
            out.append(replace(incident, status="resolved", resolved_at=incident.last_anomaly_at + gap))
    return out


def detect_for(store, settings: Settings, seconds: float = 0.0) -> DetectReport:
    """One run, or (seconds > 0) runs every DETECT_POLL_SECONDS for that long; returns the last report."""
    import time

    deadline = time.monotonic() + seconds
    report = run_detection(store, settings)
    while time.monotonic() + settings.detect_poll_seconds < deadline:
        time.sleep(settings.detect_poll_seconds)
        report = run_detection(store, settings)
    return report


def incidents_frame(store, limit: int = 50):
    """Incidents, newest first, as a DataFrame."""
    return store.query_df("SELECT * EXCLUDE (updated_at) FROM incidents ORDER BY opened_at DESC LIMIT ?", [limit])


def evidence_frame(store, incident_id: str):
    """The anomalies (evidence) of one incident as a DataFrame."""
    return store.query_df(
        "SELECT detector, metric, endpoint, window_start, value, baseline, threshold, request_count, severity, "
        "used_partial_window FROM anomalies WHERE incident_id = ? ORDER BY window_start, detector", [incident_id])


def publish_incidents(settings: Settings, incidents: list[Incident]) -> int:
    """New or updated incidents to the anomalies topic (JSON, key = service)."""
    if not incidents:
        return 0
    from obslab.broker import producer

    p = producer(settings, max_block_ms=10_000)
    try:
        for i in incidents:
            value = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in i.row().items()}
            p.send(settings.topic_anomalies, key=i.service.encode(), value=json.dumps(value).encode())
        p.flush(timeout=30)
    finally:
        p.close()
    return len(incidents)

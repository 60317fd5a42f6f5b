"""One detection run over the store: windows -> anomalies -> incidents, written idempotently.

What a run reads, in one read-only snapshot:

    incidents that are open or ended near the lookback       -> the incidents anomalies may join
    service and endpoint windows since newest window start - DETECT_LOOKBACK_MINUTES, read from
      a warm-up before that (see `history_start`), and for a service with an open incident
      also the baseline before that incident opened                                  -> series
    anomalies already stored for those windows                -> raised before (kept as raised)

Incidents are stored state (see obslab.detect.incidents): a run folds the anomalies it finds into
them and writes only what changed.

Silence is an outage. A service that has windows in the range but none in a window period that
has passed (another service has a final window for it, or a window newer than it) gets a window
of zero requests there, final or open like the period, so the traffic detector sees the drop.
Only periods in which some service's events arrived count: when nothing arrives at all the
pipeline has stopped, which `obslab health` reports (freshness), and filling the pause with zeros
would turn every restart into an outage of every service.
Endpoint series are not filled: a quiet endpoint legitimately has empty windows.

The service catalogue (`service_catalog`, written by the generator from the scenario) gives each
service's latency SLA, availability SLO and the services it calls; LATENCY_SLA_MS and
SLO_AVAILABILITY override it service by service. The declared calls name the likely origin of
a cascade (see obslab.detect.incidents).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from obslab.detect.detectors import Anomaly, DetectorConfig, SeriesMemory, Window, detect_series
from obslab.detect.incidents import Incident, assign_incidents, relate_incidents
from obslab.feeds import Feeds
from obslab.health import beat
from obslab.settings import Settings

log = logging.getLogger(__name__)

_WINDOW_COLUMNS = ("window_start, window_end, request_count, error_count, avg_latency_ms, p99_latency_ms, is_final, "
                   "p50_latency_ms")
_ANOMALY_FIELDS = ("detector, service, endpoint, metric, value, baseline, threshold, window_start, window_end, "
                   "request_count, severity, used_partial_window")
_INCIDENT_FIELDS = ("incident_id, service, kind, status, opened_at, last_anomaly_at, resolved_at, severity, "
                    "anomaly_count, detectors, endpoints, origin_service, origin_reason, related_incidents")


@dataclass(frozen=True)
class ServiceEntry:
    """What the service catalogue declares about one service (None: not declared)."""

    sla_ms: float | None = None
    slo_availability: float | None = None
    calls: frozenset[str] = frozenset()


def read_catalog(con) -> dict[str, ServiceEntry]:
    """The service catalogue as the store holds it: service -> SLA, SLO and declared callees."""
    rows = con.execute("SELECT service, sla_ms, slo_availability, calls FROM service_catalog").fetchall()
    return {service: ServiceEntry(sla, slo, frozenset(c.strip() for c in (calls or "").split(",") if c.strip()))
            for service, sla, slo, calls in rows}


def config_from(settings: Settings, catalog: dict[str, ServiceEntry] | None = None) -> DetectorConfig:
    """Detector thresholds from settings: changing a threshold is a settings change, not a code edit.

    SLAs and SLOs come from the service catalogue, and a service named in LATENCY_SLA_MS or
    SLO_AVAILABILITY takes the setting instead. A catalogue SLO outside (0, 1) is ignored (it
    leaves no error budget to burn); the setting's validator already refuses one.
    """
    catalog = catalog or {}
    slas = {s: e.sla_ms for s, e in catalog.items() if e.sla_ms is not None and e.sla_ms > 0}
    slos = {s: e.slo_availability for s, e in catalog.items()
            if e.slo_availability is not None and 0 < e.slo_availability < 1}
    return DetectorConfig(
        error_surge_factor=settings.error_surge_factor, error_confidence_z=settings.error_confidence_z,
        latency_sla_ms=slas | dict(settings.latency_sla_ms), latency_spike_factor=settings.latency_spike_factor,
        shift_z=settings.shift_z, trend_windows=settings.detect_trend_windows,
        slo_availability=slos | dict(settings.slo_availability),
        default_slo_availability=settings.slo_default_availability,
        burn_threshold=settings.burn_threshold,
        min_partial_requests=settings.partial_window_min_requests or DetectorConfig.NEVER)


@dataclass
class DetectReport:
    """What one detection run found and changed."""

    windows: int
    anomalies: int
    incidents: list[Incident]  # the open ones and those that ended near the lookback, as now stored
    changed: list[Incident]  # new or updated by this run

    def as_dict(self) -> dict:
        """The `obslab detect --json` form (without what the caller published): counts, and the changed ids."""
        return {"windows": self.windows, "anomalies": self.anomalies, "incidents": len(self.incidents),
                "open": sum(1 for i in self.incidents if i.status == "open"),
                "changed": [i.incident_id for i in self.changed]}

    def describe(self) -> str:
        """One line for a person."""
        d = self.as_dict()
        return (f"{d['windows']} windows, {d['anomalies']} anomalies, {d['incidents']} incidents ({d['open']} open), "
                f"{len(d['changed'])} new or updated")


def read_series(store, settings: Settings, reach: dict[str, datetime] | None = None
                ) -> tuple[list[list[Window]], datetime | None]:
    """Per service and per endpoint, the windows of the lookback period (from `reach[service]` when
    that is earlier), silent passed periods of a service filled with zero-request windows; and the
    end of the newest final window."""
    with store.reader() as con:
        newest = con.execute("SELECT max(window_start) FROM service_metrics").fetchall()[0][0]
        if newest is None:
            return [], None
        return _read_windows(con, newest - timedelta(minutes=settings.detect_lookback_minutes), reach or {})


def _read_windows(con, since: datetime, reach: dict[str, datetime]) -> tuple[list[list[Window]], datetime | None]:
    start = min([since, *reach.values()])
    services = con.execute(f"SELECT service, NULL, {_WINDOW_COLUMNS} FROM service_metrics "
                           "WHERE window_start >= ? ORDER BY service, window_start", [start]).fetchall()
    endpoints = con.execute(f"SELECT service, endpoint, {_WINDOW_COLUMNS} FROM endpoint_metrics "
                            "WHERE window_start >= ? ORDER BY service, endpoint, window_start", [start]).fetchall()
    latest_final = con.execute("SELECT max(window_end) FROM service_metrics WHERE is_final").fetchall()[0][0]
    # (window_start, window_end) of every period some service's final window covers
    # and of every open one that a newer window of some service follows (its time has passed):
    # (window_start, window_end, is_final)
    newest = max((row[2] for row in services), default=None)
    passed = {(row[2], row[3], row[8]) for row in services if row[8] or row[3] <= newest}
    series: dict[tuple, list[Window]] = {}
    for row in services + endpoints:
        if row[2] >= min(reach.get(row[0], since), since):
            series.setdefault((row[0], row[1]), []).append(Window(*row))
    for (service, endpoint), ws in series.items():
        if endpoint is None:
            ws.extend(_silence(service, ws, passed))
            ws.sort(key=lambda w: w.window_start)
    return list(series.values()), latest_final


def _silence(service: str, windows: list[Window], passed: set[tuple[datetime, datetime, bool]]) -> list[Window]:
    """Zero-request windows (final or open) for the passed periods after the service's first window
    that it has none in."""
    first = windows[0].window_start
    have = {w.window_start for w in windows}
    return [Window(service, None, start, end, 0, 0, 0.0, 0.0, final)
            for start, end, final in passed if start > first and start not in have]


def run_detection(store, settings: Settings, now: datetime | None = None,
                  memory: SeriesMemory | None = None) -> DetectReport:
    """Detect over the lookback period and fold what is found into the stored incidents; re-running changes nothing.

    An anomaly once raised stays raised: an early detection on an open window that the full window
    no longer supports keeps its row (it was reported), and its incident resolves like any other.
    Its first `detected_at`, `used_partial_window` and incident survive later runs. `now` is the
    detection time to record (default: the wall clock; evaluation passes simulated time). `memory`:
    what the detectors learned in the previous runs of the same loop (see SeriesMemory); without
    it they walk every series from scratch (the same anomalies, slower).
    """
    s = settings
    now = now or datetime.now(timezone.utc)
    gap = timedelta(seconds=s.window_seconds * s.resolve_after_windows)
    with store.reader() as con:
        newest = con.execute("SELECT max(window_start) FROM service_metrics").fetchall()[0][0]
        if newest is None:
            beat(s, "detect", detail="no windows yet")
            return DetectReport(0, 0, [], [])
        catalog = read_catalog(con)
        cfg = config_from(s, catalog)
        since = newest - timedelta(minutes=s.detect_lookback_minutes)
        known = [Incident(*r) for r in con.execute(
            f"SELECT {_INCIDENT_FIELDS} FROM incidents WHERE status = 'open' OR last_anomaly_at > ?",
            [since - gap]).fetchall()]
        all_series, latest_final = _read_windows(con, history_start(since, s.window_seconds, cfg),
                                                 _reach(known, since, s.window_seconds, cfg))
        stored = con.execute(f"SELECT {_ANOMALY_FIELDS}, incident_id, detected_at FROM anomalies "
                             "WHERE window_start >= ?", [since]).fetchall()
    earlier = {}  # anomaly id -> (as stored, its incident, detected_at)
    for row in stored:
        a = Anomaly(*row[:-2])
        earlier[a.anomaly_id] = (a, row[-2], row[-1])
    # Windows before the lookback are read only as history: they were judged while they were in it.
    found = [a for series in all_series for a in detect_series(series, cfg, memory=memory, elapsed=newest)
             if a.window_start >= since]
    raised = {k: a for k, (a, _, _) in earlier.items()}
    for a in found:
        if a.anomaly_id in earlier:  # fresh evidence; whether it was first seen on an open window stays
            a = replace(a, used_partial_window=earlier[a.anomaly_id][0].used_partial_window)
        raised[a.anomaly_id] = a
    incidents, membership = assign_incidents(
        list(raised.values()), {k: v[1] for k, v in earlier.items() if v[1]}, known, latest_final,
        s.window_seconds, s.resolve_after_windows)
    first_seen: dict[str, datetime] = {}  # incident id -> its first detection still in the lookback
    for anomaly_id, incident_id in membership.items():
        at = earlier[anomaly_id][2] if anomaly_id in earlier else now
        first_seen[incident_id] = min(first_seen.get(incident_id, at), at)
    incidents = relate_incidents(incidents, {name: set(e.calls) for name, e in catalog.items()},
                                 s.window_seconds, s.cascade_gap_windows, first_seen)
    rows = _changed_rows(raised, earlier, membership, now)
    previous = {i.incident_id: i for i in known}
    changed = [i for i in incidents if previous.get(i.incident_id) != i]
    if rows or changed:
        store.upsert_many({"anomalies": rows, "incidents": [i.row() | {"updated_at": now} for i in changed]})
    windows = sum(len(x) for x in all_series)
    # The wall-clock heartbeat `obslab health` reads (the recorded `now` may be simulated).
    beat(s, "detect", detail=f"{windows} windows, {len(found)} anomalies, {len(changed)} incidents changed")
    return DetectReport(windows, len(found), incidents, changed)


def _reach(known: list[Incident], since: datetime, window_seconds: int, cfg: DetectorConfig) -> dict[str, datetime]:
    """service -> where its windows are read from, when earlier than `since`. A long incident is
    judged against the history before it, not against itself: its service's baselines read from
    before it opened, however long ago that was."""
    baseline = timedelta(seconds=window_seconds * max(cfg.lookback_windows, cfg.burn_long_windows,
                                                      cfg.dispersion_windows))
    reach: dict[str, datetime] = {}
    for i in known:
        if i.status == "open" and i.opened_at - baseline < reach.get(i.service, since):
            reach[i.service] = i.opened_at - baseline
    return reach


def _changed_rows(raised: dict, earlier: dict, membership: dict, now: datetime) -> list[dict]:
    """The anomaly rows to write: new ones, and stored ones whose evidence or incident changed."""
    rows = []
    for a in raised.values():
        before = earlier.get(a.anomaly_id)
        if before and before[0] == a and before[1] == membership[a.anomaly_id]:
            continue  # unchanged: not written again
        rows.append(a.row() | {"incident_id": membership[a.anomaly_id], "detected_at": before[2] if before else now})
    return rows


def history_start(since: datetime, window_seconds: int, cfg: DetectorConfig) -> datetime:
    """Where the detectors' walk starts: 1-2 warm-ups (`lookback_windows` windows) before `since`,
    on a grid of warm-ups.

    Every window the run may report then has at least a warm-up of history before it, so a
    model that has only just started (and could mistake the first turn of a daily rhythm for a
    drop) never judges a reported window. The grid keeps the start in place for a warm-up's
    length, so consecutive runs walk the same final windows and the detectors reuse what they
    learned from them (a loop's SeriesMemory keeps it per series).
    """
    grid = window_seconds * cfg.lookback_windows
    warmed = since.timestamp() - grid
    return datetime.fromtimestamp(warmed - warmed % grid, tz=timezone.utc)


def detect_for(store, settings: Settings, seconds: float = 0.0) -> DetectReport:
    """One run, or (seconds > 0) runs every DETECT_POLL_SECONDS for that long; returns the last report."""
    import threading

    from obslab.retry import repeat_stage

    reports: list[DetectReport] = []
    memory = SeriesMemory()  # one per loop: what each run's detectors learned, for the next run
    deadline = threading.Event()
    timer = threading.Timer(seconds, deadline.set)
    if seconds > 0:
        timer.start()
    try:
        repeat_stage(lambda: reports.append(run_detection(store, settings, memory=memory)), "detect", settings,
                     once=seconds <= 0, poll_seconds=settings.detect_poll_seconds, stop=deadline)
    finally:
        timer.cancel()
    return reports[-1] if reports else run_detection(store, settings, memory=memory)


@dataclass
class DetectState:
    """What continuous detection carries from one pass to the next."""

    unpublished: dict = field(default_factory=dict)  # incident id -> Incident not published yet
    published: int = 0  # incidents published by the last pass
    memory: SeriesMemory = field(default_factory=SeriesMemory)  # what the detectors learned in earlier passes


def detect_pass(store, settings: Settings, state: DetectState, feeds: Feeds | None = None) -> DetectReport:
    """One pass of continuous detection: detect, then publish to `feeds` (if given) what changed and
    what a failed pass could not."""
    report = run_detection(store, settings, memory=state.memory)
    state.published = 0
    if feeds is not None:
        # Kept until published: the store already has these incidents, so the next run will not
        # report them as changed again, and a failed publish (broker away) would lose them.
        state.unpublished |= {i.incident_id: i for i in report.changed}
        if state.unpublished:
            state.published = feeds.incidents(list(state.unpublished.values()))
            state.unpublished = {}
    return report


def incidents_frame(store, limit: int = 50):
    """Incidents, newest first, as a DataFrame."""
    return store.query_df("SELECT * EXCLUDE (updated_at) FROM incidents ORDER BY opened_at DESC LIMIT ?", [limit])


def evidence_frame(store, incident_id: str):
    """The anomalies (evidence) of one incident as a DataFrame."""
    return store.query_df(
        "SELECT detector, metric, endpoint, window_start, value, baseline, threshold, request_count, severity, "
        "used_partial_window FROM anomalies WHERE incident_id = ? ORDER BY window_start, detector", [incident_id])

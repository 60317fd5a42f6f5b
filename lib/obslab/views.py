"""What the dashboard and the notebooks show, read from the store (read-only, one short read each).

    services(store)                    the services of the data: the current scenario's catalogue,
                                       windows, incidents, faults (the dashboard's filter)
    newest_window(store)               start of the newest service window (the end of a time range)
    overview(store, services)          per service: newest window's rate, error rate, p95/p99, status
    series(store, services, since)     windows per service (final and open) for the charts
    incident_list(store, since)        incidents with their newest narrative and its provenance
    anomaly_list(store, since)         anomalies for the timeline
    fault_list(store, since)           injected faults (ground truth)
    health(store)                      freshness, dead letters, the last run of each stage
    window_invariants(store, seconds)  what every window keeps by construction (notebook 02)
    dead_letter_reasons(store)         set-aside events per reason
    incident_states(store)             what a detection run may change, per incident (notebook 03)
    misfiled_anomalies(store)          anomalies not in an incident of their own service
    recent_faults(store, limit)        the newest injected faults (ground truth)
    narratives(store)                  stored narratives with the facts they were checked against
    database_size(store)               DuckDB's block usage of the file (notebook 08)

Status of a service: `incident` while one of its incidents is open, `degraded` when its newest
window is anomalous without an incident yet, else `healthy`.

Requests per second divide a window's requests by the time the window has covered so far: its
whole length once the stream has seen an event past its end (final or not), else from its start to
the newest event time the stream has seen (stream_state.max_event_time). An open window 20 s old
holds 20 s of requests, not 60. A window that has covered less than MIN_RATE_SECONDS is too young
for a rate: the service's previous window is shown instead. `rate_basis` says which was used.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd


MIN_RATE_SECONDS = 1.0  # a window younger than this (in event time) is too young for a rate


def services(store) -> list[str]:
    """Every service the data names, sorted: the newest scenario's catalogue (a declared service
    shows before it sends anything), and whatever has windows, incidents or injected faults."""
    return [r[0] for r in store.query("""
        SELECT service FROM service_catalog
        WHERE scenario IS NOT DISTINCT FROM (SELECT scenario FROM service_catalog ORDER BY updated_at DESC LIMIT 1)
        UNION SELECT service FROM service_metrics UNION SELECT service FROM incidents
        UNION SELECT service FROM injected_incidents ORDER BY service""")]


def newest_window(store) -> datetime | None:
    """Start of the newest service window (None before the first): the end of the time range shown."""
    return store.query("SELECT max(window_start) FROM service_metrics")[0][0]


def overview(store, services: list[str]) -> pd.DataFrame:
    """Per service: the newest window with a rate, its requests/s over the time it covered, errors, latency, status."""
    df = store.query_df("""
        WITH seen AS (SELECT max(max_event_time) AS until FROM stream_state),
        covered AS (
            SELECT m.*, epoch(m.window_end) - epoch(m.window_start) AS length_seconds,
                   CASE WHEN m.is_final OR seen.until IS NULL OR seen.until >= m.window_end
                        THEN epoch(m.window_end) - epoch(m.window_start)
                        ELSE epoch(seen.until) - epoch(m.window_start) END AS covered_seconds,
                   NOT m.is_final AND seen.until IS NULL AS coverage_unknown
            FROM service_metrics m, seen WHERE list_contains(?, m.service)),
        latest AS (
            SELECT service, max(window_start) AS window_start FROM covered
            WHERE covered_seconds >= ? GROUP BY service)
        SELECT m.service, m.window_start, m.window_end, m.request_count,
               m.request_count / m.covered_seconds AS requests_per_second, m.covered_seconds, m.length_seconds,
               m.coverage_unknown, m.error_rate, m.p95_latency_ms, m.p99_latency_ms, m.is_final,
               (SELECT count(*) FROM incidents i WHERE i.service = m.service AND i.status = 'open') AS open_incidents,
               (SELECT count(*) FROM anomalies a WHERE a.service = m.service
                  AND a.window_start = m.window_start) AS anomalies_now
        FROM covered m JOIN latest USING (service, window_start)
        ORDER BY m.service""", [services, MIN_RATE_SECONDS])
    df["status"] = [("incident" if o else "degraded" if a else "healthy")
                    for o, a in zip(df.open_incidents, df.anomalies_now)]
    df["rate_basis"] = [_rate_basis(r) for r in df.itertuples()]
    return df


def _rate_basis(row) -> str:
    """How a row's requests/s was computed, in words for the dashboard."""
    if row.is_final:
        return f"final window: {row.request_count:,} requests over its {row.length_seconds:g} s"
    if row.coverage_unknown:  # no stream progress recorded (a store not written by the stream)
        return (f"open window: {row.request_count:,} requests over its whole {row.length_seconds:g} s "
                "(the time it covered is not recorded)")
    if row.covered_seconds >= row.length_seconds:
        return f"open window, its whole {row.length_seconds:g} s seen: {row.request_count:,} requests"
    return (f"open window: {row.request_count:,} requests over the {row.covered_seconds:.0f} s of its "
            f"{row.length_seconds:g} s seen so far")


def series(store, services: list[str], since: datetime) -> pd.DataFrame:
    df = store.query_df("""
        SELECT service, window_start, window_end, request_count, error_rate * 100 AS error_rate_pct,
               avg_latency_ms, p95_latency_ms, p99_latency_ms, is_final
        FROM service_metrics WHERE list_contains(?, service) AND window_start >= ?
        ORDER BY service, window_start""", [services, since])
    df["window"] = df.is_final.map({True: "final", False: "open (partial)"})
    return df


def incident_list(store, services: list[str], since: datetime) -> pd.DataFrame:
    return store.query_df("""
        SELECT i.incident_id, i.service, i.kind, i.status, i.severity, i.opened_at, i.last_anomaly_at,
               i.resolved_at, i.detectors, s.title, s.summary, s.likely_causes, s.impact, s.suggested_actions,
               s.facts, s.backend, s.model, s.grounded, s.fallback_reason, s.latency_ms
        FROM incidents i
        LEFT JOIN (SELECT * FROM incident_summaries QUALIFY row_number() OVER
                   (PARTITION BY incident_id ORDER BY created_at DESC) = 1) s USING (incident_id)
        WHERE list_contains(?, i.service) AND i.last_anomaly_at >= ?
        ORDER BY i.opened_at DESC""", [services, since])


def anomaly_list(store, services: list[str], since: datetime) -> pd.DataFrame:
    return store.query_df("""
        SELECT service, coalesce(endpoint, '(service)') AS endpoint, detector, metric, severity, window_start,
               window_end, value, threshold, used_partial_window, incident_id
        FROM anomalies WHERE list_contains(?, service) AND window_start >= ? ORDER BY window_start""",
                          [services, since])


def fault_list(store, services: list[str], since: datetime) -> pd.DataFrame:
    return store.query_df("""
        SELECT fault_type, service, endpoint, start_time, coalesce(end_time, now()) AS end_time, magnitude,
               end_time IS NULL AS running
        FROM injected_incidents WHERE list_contains(?, service) AND coalesce(end_time, now()) >= ?
        ORDER BY start_time""", [services, since])


def health(store, now: datetime | None = None) -> dict:
    """Freshness of the data, dead letters, and when each stage last did something."""
    now = now or datetime.now(timezone.utc)
    with store.reader() as con:
        last_event = con.execute("SELECT max(max_event_time) FROM stream_state").fetchall()[0][0]
        last_window = con.execute("SELECT max(window_end) FROM service_metrics").fetchall()[0][0]
        events, dead = con.execute("SELECT coalesce(sum(events), 0), coalesce(sum(dead_letters), 0) "
                                   "FROM stream_batches").fetchall()[0]
        stages = {
            "stream": con.execute("SELECT max(applied_at) FROM stream_batches").fetchall()[0][0],
            "detect": con.execute("SELECT max(updated_at) FROM incidents").fetchall()[0][0],
            "narrate": con.execute("SELECT max(created_at) FROM incident_summaries").fetchall()[0][0],
            "generate": con.execute("SELECT max(start_time) FROM injected_incidents").fetchall()[0][0],
        }
        runs = con.execute("SELECT stage, max(coalesce(finished_at, started_at)) FROM pipeline_runs "
                           "GROUP BY stage").fetchall()
    for stage, at in runs:
        stages[stage] = max([t for t in (stages.get(stage), at) if t is not None], default=None)
    newest = last_event or last_window
    return {"last_event": newest, "freshness_seconds": (now - newest).total_seconds() if newest else None,
            "events": int(events), "dead_letters": int(dead),
            "dead_letter_rate": dead / (events + dead) if events + dead else 0.0,
            "stages": {k: v for k, v in stages.items()}}


def runs(store, limit: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scheduled runs, newest first: (one row per DAG run, one row per task with its kept notebook).

    A DAG run is `failed` when one of its tasks failed, `running` while one runs, else `ok`."""
    tasks = store.query_df("""
        SELECT dag_id, dag_run_id, stage AS task, status, started_at, finished_at,
               epoch(coalesce(finished_at, now())) - epoch(started_at) AS seconds, output_notebook, error
        FROM pipeline_runs WHERE dag_id IS NOT NULL ORDER BY started_at DESC LIMIT ?""", [limit])
    dag_runs = store.query_df("""
        SELECT dag_id, dag_run_id,
               CASE WHEN bool_or(status = 'failed') THEN 'failed'
                    WHEN bool_or(status = 'running') THEN 'running' ELSE 'ok' END AS status,
               min(started_at) AS started_at, max(finished_at) AS finished_at,
               epoch(max(coalesce(finished_at, now()))) - epoch(min(started_at)) AS seconds,
               string_agg(stage || ' ' || status, ', ' ORDER BY started_at) AS tasks
        FROM pipeline_runs WHERE dag_id IS NOT NULL
        GROUP BY dag_id, dag_run_id ORDER BY min(started_at) DESC LIMIT ?""", [limit])
    return dag_runs, tasks


def since_for(minutes: int | None, newest: datetime | None) -> datetime:
    """The start of the time range: the last `minutes` before the newest data (all data when None)."""
    if minutes is None or newest is None:
        return datetime(1970, 1, 1, tzinfo=timezone.utc)
    return newest - timedelta(minutes=minutes)


def quality_checks(store) -> pd.DataFrame:
    """The rules of the newest data-quality run, failed ones first (empty before the first run)."""
    return store.query_df("""
        SELECT check_name, ok, violations, message, checked_at, run_id FROM quality_checks
        WHERE run_id = (SELECT arg_max(run_id, checked_at) FROM quality_checks)
        ORDER BY ok, check_name""")


def health_checks(store) -> pd.DataFrame:
    """The checks of the newest monitoring run, failed ones first (empty before the first run)."""
    from obslab.health import CHECK_NAMES

    return store.query_df("""
        SELECT check_name, ok, value, bound, message, checked_at, run_id FROM health_checks
        WHERE run_id = (SELECT arg_max(run_id, checked_at) FROM health_checks)
        ORDER BY ok, list_position(?, check_name)""", [list(CHECK_NAMES)])


def window_invariants(store, window_seconds: int) -> dict[str, bool]:
    """What every service window keeps by construction, each true when no window breaks it (or none exist)."""
    ordered, tumbling, summed = store.query("""
        SELECT coalesce(bool_and(p50_latency_ms <= p95_latency_ms AND p95_latency_ms <= p99_latency_ms), TRUE),
               coalesce(bool_and(epoch(window_end) - epoch(window_start) = $s AND epoch(window_start) % $s = 0), TRUE),
               coalesce(bool_and(request_count = (
                   SELECT sum(e.request_count) FROM endpoint_metrics e
                   WHERE e.service = m.service AND e.window_start = m.window_start)), TRUE)
        FROM service_metrics m""", {"s": window_seconds})[0]
    # percentiles of one histogram are ordered; windows are one length and aligned (tumbling);
    # a service's requests are the sum of its endpoints'
    return {"percentiles_ordered": ordered, "tumbling": tumbling, "endpoints_sum_to_service": summed}


def dead_letter_reasons(store) -> pd.DataFrame:
    """Dead letters per reason, most first."""
    return store.query_df("SELECT reason, count(*) AS events FROM dead_letter_events GROUP BY reason "
                          "ORDER BY events DESC, reason")


def incident_states(store) -> pd.DataFrame:
    """Id, status, severity and anomaly count of every incident, by id: what a detection run may change."""
    return store.query_df("SELECT incident_id, status, severity, anomaly_count FROM incidents ORDER BY incident_id")


def misfiled_anomalies(store) -> int:
    """Anomalies whose incident is missing or of another service (0 in a consistent store)."""
    return store.query("SELECT count(*) FROM anomalies a LEFT JOIN incidents i USING (incident_id) "
                       "WHERE i.service IS DISTINCT FROM a.service")[0][0]


def recent_faults(store, limit: int = 20) -> pd.DataFrame:
    """The newest injected faults (ground truth), newest first."""
    return store.query_df("SELECT fault_type, service, endpoint, start_time, end_time, magnitude "
                          "FROM injected_incidents ORDER BY start_time DESC LIMIT ?", [limit])


def narratives(store) -> list[tuple[dict, dict]]:
    """Every stored narrative (title, summary, likely_causes, impact, suggested_actions) with its facts."""
    rows = store.query("SELECT facts, title, summary, likely_causes, impact, suggested_actions "
                       "FROM incident_summaries")
    return [(json.loads(facts), {"title": title, "summary": summary, "likely_causes": json.loads(causes),
                                 "impact": impact, "suggested_actions": json.loads(actions)})
            for facts, title, summary, causes, impact, actions in rows]


def database_size(store) -> pd.DataFrame:
    """DuckDB's own account of the file: blocks used and free, WAL size, memory."""
    return store.query_df("PRAGMA database_size")

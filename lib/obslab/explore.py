"""Notebook 05's material: one scenario's raw events beside the windows, anomalies and incidents made of them.

    explore_run(scenario, settings)        evaluate the scenario in a scratch store (as notebook 06 does) and
                                           write the very same raw events to a JSONL file beside it
    percentiles_by_window(run, service)    per window: mean and the stream's percentiles against exact ones
    first_anomaly(run)                     the earliest service-level anomaly and its threshold
    partial_versions(run, service, start)  one window after each micro-batch (partial), then final
    fault_side_by_side(run, fault_id)      one fault as raw events, windows and incidents
    percentile_chart / side_by_side_chart  the two figures (Altair)

The raw events are regenerated rather than kept from the evaluation: the same scenario, seed and
start give byte-identical events, so the file holds exactly what the windows were made of.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd

from obslab.settings import Settings


@dataclass
class Exploration:
    """A scenario run to explore: its evaluation report, scratch store and raw events file."""

    report: object  # obslab.evaluation.Evaluation
    store: object  # obslab.store.Store of the scratch store
    events_file: Path

    @property
    def start(self):
        from obslab.evaluation import EVALUATION_START

        return EVALUATION_START


def explore_run(scenario: str | Path, settings: Settings, seed: int = 42,
                minutes: float | None = None, spark=None, aggregator: str = "spark") -> Exploration:
    """Generate, aggregate and detect `scenario` in a scratch store under DATA_DIR/runs/explore-<name>-<seed>,
    then write its raw events to `raw_events.jsonl` there. The lab's own store is not touched.
    `aggregator`: spark (the stream's own transform) or duckdb (its SQL twin, no JVM)."""
    from obslab.evaluation import EVALUATION_START, evaluate
    from obslab.generator.clock import SimulatedClock
    from obslab.generator.events import EventStream
    from obslab.generator.publish import publish_events
    from obslab.generator.scenario import load_scenario
    from obslab.generator.sinks import FileSink
    from obslab.store import Store

    base = settings
    plan = load_scenario(scenario)
    workdir = base.data_dir / "runs" / f"explore-{plan.name}-{seed}"
    report = evaluate(plan, base, seed=seed, minutes=minutes, spark=spark, workdir=workdir, aggregator=aggregator)
    # The evaluation's own generator call, repeated into a file: same scenario, seed, start and length.
    events_file = workdir / "raw_events.jsonl"
    sink = FileSink(events_file)
    try:
        publish_events(EventStream(plan, seed, EVALUATION_START), SimulatedClock(EVALUATION_START), sink, None,
                       duration_s=report.duration_seconds)
    finally:
        sink.close()
    if sink.sent != report.events:
        raise RuntimeError(f"regenerated {sink.sent} events, the evaluation had {report.events}: the generator "
                           "is no longer deterministic for a seed and start")
    return Exploration(report, Store(Path(report.store_path)), events_file)


def percentiles_by_window(run: Exploration, service: str) -> pd.DataFrame:
    """Per window of `service`: requests, the mean, the stream's p50/p99 (read from its log-bucket
    histograms) and the exact p50/p99 of the raw events (nearest rank: the ceil(q*n)-th smallest)."""
    return run.store.query_df("""
        WITH raw AS (
            SELECT time_bucket(to_seconds(?), event_time::TIMESTAMPTZ, TIMESTAMPTZ '1970-01-01 00:00:00+00')
                       AS window_start,
                   list_sort(list(latency_ms)) AS sorted, count(*) AS n
            FROM read_json(?, columns = {event_time: 'TIMESTAMPTZ', service: 'VARCHAR', latency_ms: 'DOUBLE'})
            WHERE service = ? GROUP BY ALL)
        SELECT m.window_start, m.request_count AS requests, round(m.avg_latency_ms, 1) AS mean_ms,
               round(m.p50_latency_ms, 1) AS p50_ms, round(m.p99_latency_ms, 1) AS p99_ms,
               round(raw.sorted[ceil(0.50 * raw.n)::INT], 1) AS exact_p50_ms,
               round(raw.sorted[ceil(0.99 * raw.n)::INT], 1) AS exact_p99_ms
        FROM service_metrics m JOIN raw USING (window_start)
        WHERE m.service = ? ORDER BY m.window_start""",
                              [run.report.window_seconds, str(run.events_file), service, service])


def first_anomaly(run: Exploration) -> pd.Series:
    """The earliest service-level anomaly (by the time it was raised), with its threshold."""
    rows = run.store.query_df("""
        SELECT service, detector, metric, window_start, window_end, threshold, used_partial_window, detected_at
        FROM anomalies WHERE endpoint IS NULL ORDER BY detected_at, service, detector LIMIT 1""")
    if rows.empty:
        raise ValueError(f"no service-level anomaly in this run of {run.report.scenario!r}; "
                         "pick a scenario with faults")
    return rows.iloc[0]


def partial_versions(run: Exploration, service: str, window_start) -> pd.DataFrame:
    """One window of `service` as the stream held it after each micro-batch, then final.

    A version `as_of` T holds the window's events dated before T (the stream sees an event once its
    micro-batch has run); the last row is the final window from the store. The stream merges
    exactly these partial sums, so the last version before the end equals the final row."""
    trigger = run.report.trigger_seconds
    steps = int(run.report.window_seconds // trigger)
    return run.store.query_df("""
        WITH ev AS (
            SELECT event_time, latency_ms, status_code
            FROM read_json(?, columns = {event_time: 'TIMESTAMPTZ', service: 'VARCHAR', latency_ms: 'DOUBLE',
                                         status_code: 'INTEGER'})
            WHERE service = ? AND event_time >= ?::TIMESTAMPTZ
              AND event_time < ?::TIMESTAMPTZ + to_seconds(?)),
        versions AS (SELECT ?::TIMESTAMPTZ + to_seconds(k * ?) AS as_of FROM range(1, ? + 1) t(k))
        SELECT 'partial' AS version, v.as_of, count(ev.event_time) AS requests,
               count(ev.event_time) FILTER (WHERE ev.status_code >= 400) AS errors,
               round(errors / nullif(requests, 0), 4) AS error_rate, round(avg(ev.latency_ms), 1) AS avg_latency_ms
        FROM versions v LEFT JOIN ev ON ev.event_time < v.as_of
        GROUP BY v.as_of
        UNION ALL
        SELECT 'final', window_end, request_count, error_count, round(error_rate, 4), round(avg_latency_ms, 1)
        FROM service_metrics WHERE service = ? AND window_start = ?
        ORDER BY as_of, version DESC""",
        [str(run.events_file), service, window_start, window_start, run.report.window_seconds,
         window_start, trigger, steps, service, window_start])


@dataclass
class SideBySide:
    """One fault as the pipeline saw it, step by step."""

    fault: pd.Series  # the ground truth row
    events: pd.DataFrame  # raw events of its service from one window before to one after (every event)
    windows: pd.DataFrame  # the service's windows over the same span
    incidents: pd.DataFrame  # the service's incidents that overlap the span


def fault_side_by_side(run: Exploration, fault_id: str = "") -> SideBySide:
    """The fault `fault_id` (default: the first fault that is not benign) in the raw events, the windows
    and the incidents of its service, from one window before it started to one after it ended."""
    faults = run.store.query_df("""
        SELECT fault_id, fault_type, service, endpoint, start_time, end_time, magnitude, root_cause
        FROM injected_incidents WHERE NOT coalesce(benign, false) ORDER BY start_time, fault_id""")
    if faults.empty:
        raise ValueError(f"scenario {run.report.scenario!r} injected no fault; pick one with faults (e.g. demo)")
    if fault_id:
        chosen = faults[faults.fault_id == fault_id]
        if chosen.empty:
            raise ValueError(f"no fault {fault_id!r} in this run; its faults: {', '.join(faults.fault_id)}")
        fault = chosen.iloc[0]
    else:
        fault = faults.iloc[0]
    pad = timedelta(seconds=run.report.window_seconds)
    since, until = fault.start_time - pad, fault.end_time + pad
    events = run.store.query_df("""
        SELECT event_time, endpoint, latency_ms, status_code, status_code >= 400 AS failed
        FROM read_json(?, columns = {event_time: 'TIMESTAMPTZ', service: 'VARCHAR', endpoint: 'VARCHAR',
                                     latency_ms: 'DOUBLE', status_code: 'INTEGER'})
        WHERE service = ? AND event_time >= ? AND event_time < ? ORDER BY event_time""",
                                [str(run.events_file), fault.service, since, until])
    windows = run.store.query_df("""
        SELECT window_start, window_end, request_count, error_count, round(error_rate, 4) AS error_rate,
               round(avg_latency_ms, 1) AS avg_latency_ms, round(p99_latency_ms, 1) AS p99_latency_ms, is_final
        FROM service_metrics WHERE service = ? AND window_end > ? AND window_start < ? ORDER BY window_start""",
                                 [fault.service, since, until])
    incidents = run.store.query_df("""
        SELECT incident_id, kind, severity, opened_at, last_anomaly_at, resolved_at, anomaly_count, detectors,
               origin_service
        FROM incidents WHERE service = ? AND last_anomaly_at > ? AND opened_at < ? ORDER BY opened_at""",
                                   [fault.service, since, until])
    return SideBySide(fault, events, windows, incidents)


def percentile_chart(frame: pd.DataFrame, service: str):
    """Mean, p50 and p99 of each window (lines), the exact p99 of the raw events (points)."""
    import altair as alt

    long = frame.melt(id_vars=["window_start"], value_vars=["mean_ms", "p50_ms", "p99_ms"],
                      var_name="statistic", value_name="latency_ms")
    lines = alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("window_start:T", title="window start (UTC)"),
        y=alt.Y("latency_ms:Q", title="latency (ms)", scale=alt.Scale(type="log")),
        color=alt.Color("statistic:N", title="per window"))
    exact = alt.Chart(frame).mark_point(shape="cross", size=80, color="black").encode(
        x="window_start:T", y="exact_p99_ms:Q", tooltip=["window_start:T", "exact_p99_ms", "p99_ms"])
    title = f"{service}: mean against percentiles (crosses: exact p99 of the raw events)"
    return (lines + exact).properties(width=700, height=260, title=title)


def side_by_side_chart(view: SideBySide):
    """Three panels on one time axis: every raw event, the windows, the incidents; the fault shaded."""
    import altair as alt

    fault = pd.DataFrame([{"start": view.fault.start_time, "end": view.fault.end_time,
                           "fault": f"{view.fault.fault_type} ({view.fault.fault_id})"}])
    x = alt.X("event_time:T", title=None)
    band = alt.Chart(fault).mark_rect(opacity=0.15, color="red").encode(x="start:T", x2="end:T")
    events = alt.Chart(view.events).mark_circle(size=12).encode(
        x=x, y=alt.Y("latency_ms:Q", title="latency (ms)", scale=alt.Scale(type="log")),
        color=alt.Color("failed:N", title="failed request", scale=alt.Scale(range=["steelblue", "red"])))
    windows = view.windows.assign(error_pct=view.windows.error_rate * 100)
    window_bars = alt.Chart(windows).mark_bar(opacity=0.6).encode(
        x=alt.X("window_start:T", title=None), x2="window_end:T", y=alt.Y("error_pct:Q", title="errors (%)"))
    window_p99 = alt.Chart(windows).mark_rule(color="black", strokeWidth=2).encode(
        x="window_start:T", x2="window_end:T", y=alt.Y("p99_latency_ms:Q", title="p99 (ms)"))
    incident_bars = alt.Chart(view.incidents).mark_bar(height=16).encode(
        x=alt.X("opened_at:T", title="event time (UTC)"), x2="last_anomaly_at:T",
        y=alt.Y("incident_id:N", title=None), color=alt.Color("kind:N", title="incident kind"))
    top = (band + events).properties(title="raw events (one dot per request)")
    middle = alt.layer(band + window_bars, window_p99).resolve_scale(y="independent").properties(
        title="windows: error rate (bars), p99 latency (black lines)")
    bottom = (band + incident_bars).properties(title="incidents: first to last anomalous window")
    return alt.vconcat(*(c.properties(width=700, height=h) for c, h in ((top, 180), (middle, 140), (bottom, 60))))

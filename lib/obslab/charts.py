"""The teaching figures of notebooks 02 and 03: the data behind each (a DataFrame) and its Altair chart.

    error_trace(store, settings, service)   one service's error rate per window with what error_surge
                                            held it to: baseline, noise band, threshold, and the windows
                                            detection flagged (notebook 03)
    threshold_chart(trace)                  that series as a chart
    late_event(store, settings)             one event dated in a window the watermark has closed (02)
    dead_letter_reason(store, event_id)     why the stream set that event aside
    watermark_frame(store, topic)           the last windows on the event-time axis, the watermark, the
                                            newest event, and the late events set aside (notebook 02)
    watermark_chart(frame)                  that picture

The charts are Altair objects; they render where Vega's JavaScript is available (Jupyter does).
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from obslab.settings import Settings

ERROR_DETECTOR = "error_surge"
TRACE_COLUMNS = ["window_start", "window_end", "requests", "error_rate", "baseline", "band_low", "band_high",
                 "threshold", "is_final", "flagged"]

LATE_EVENTS_SHOWN = 500  # late events drawn at most by the watermark chart


def error_trace(store, settings: Settings, service: str = "") -> pd.DataFrame:
    """Per window of `service` (default: the service of the newest errors incident, else the first):
    its error rate; error_surge's baseline (the usual rate) and threshold as they stood when the window
    was judged; the window's noise band (the Wilson interval of its rate at `error_margin_z`, its counts
    divided by the series' over-dispersion: error_surge needs the whole band above the threshold, and
    the count beyond chance); and `flagged`, whether detection stored an error_surge anomaly for it.
    Baseline, band and threshold are empty before the baseline exists."""
    from obslab.detect.errors import ErrorSurge, wilson_lower
    from obslab.detect.noise import wilson_upper
    from obslab.detect.run import config_from, read_catalog, read_series

    series, _ = read_series(store, settings)
    if not series:
        raise ValueError("no windows in the store: run the stream first (notebook 02), or read a replay")
    service = service or _busiest_service(store) or series[0][0].service
    mine = next((ws for ws in series if ws[0].service == service and ws[0].endpoint is None), None)
    if mine is None:
        known = sorted({ws[0].service for ws in series})
        raise ValueError(f"no windows of service {service!r}; the store has {', '.join(known)}")
    with store.reader() as con:
        cfg = config_from(settings, read_catalog(con))
    flagged = {r[0] for r in store.query(
        "SELECT window_start FROM anomalies WHERE service = ? AND endpoint IS NULL AND detector = ?",
        [service, ERROR_DETECTOR])}
    walker, rows = ErrorSurge(cfg), []
    for i, w in enumerate(mine):
        usual = walker.usual  # as it stands before this window: what the window is judged against
        row = {"window_start": w.window_start, "window_end": w.window_end, "requests": w.request_count,
               "error_rate": w.error_rate, "is_final": w.is_final, "flagged": w.window_start in flagged}
        if usual.ready() and w.request_count:
            # the detector's own reading of the window's noise: its counts over the series' dispersion
            phi = usual._phi(w.request_count)
            errors, n = w.error_count / phi, w.request_count / phi
            row |= {"baseline": usual.rate, "band_low": wilson_lower(errors, n, cfg.error_margin_z),
                    "band_high": wilson_upper(errors, n, cfg.error_margin_z), "threshold": usual.threshold}
        rows.append(row)
        walker.see(w, complete=i + 1 < len(mine))
    return pd.DataFrame(rows, columns=TRACE_COLUMNS).assign(service=service)


def _busiest_service(store) -> str | None:
    rows = store.query("SELECT service FROM incidents WHERE kind = 'errors' ORDER BY opened_at DESC LIMIT 1")
    return rows[0][0] if rows else None


def threshold_chart(trace: pd.DataFrame):
    """The error rate per window (line) and its noise band (grey), the baseline (dashed), the threshold
    (red) and the flagged windows (red diamonds)."""
    import altair as alt

    service = trace.service.iloc[0] if len(trace) else ""
    x = alt.X("window_start:T", title="window start (UTC)")
    pct = alt.Axis(format="%")
    band = alt.Chart(trace).mark_area(opacity=0.25, color="grey").encode(
        x=x, y=alt.Y("band_low:Q", title="error rate", axis=pct), y2="band_high:Q")
    baseline = alt.Chart(trace).mark_line(strokeDash=[4, 3], color="grey").encode(x=x, y="baseline:Q")
    threshold = alt.Chart(trace).mark_line(color="red").encode(x=x, y="threshold:Q")
    rate = alt.Chart(trace).mark_line(point=True, color="steelblue").encode(
        x=x, y="error_rate:Q", tooltip=["window_start:T", "requests", alt.Tooltip("error_rate:Q", format=".2%"),
                                       alt.Tooltip("threshold:Q", format=".2%"), "flagged"])
    layers = [band, baseline, threshold, rate]
    if trace.flagged.any():
        layers.append(alt.Chart(trace[trace.flagged]).mark_point(color="red", size=160, filled=True,
                                                                 shape="diamond").encode(x=x, y="error_rate:Q"))
    title = (f"{service}: error rate per window; dashed: baseline, grey: noise band, red line: threshold, "
             "red diamonds: flagged")
    return alt.layer(*layers).properties(width=700, height=260, title=title)


def late_event(store, settings: Settings):
    """One request (an EventBatch of one) of the store's newest endpoint, dated one window before the
    store's watermark: its window ended at or before the watermark, so the stream has made it final
    and must set the event aside as `late`."""
    import numpy as np

    from obslab.generator.events import EventBatch

    [(watermark,)] = store.query("SELECT max(watermark) FROM stream_state")
    newest = store.query("SELECT service, endpoint FROM endpoint_metrics ORDER BY window_start DESC, service, endpoint "
                         "LIMIT 1")
    if watermark is None or not newest:
        raise ValueError("no watermark yet: run the stream first, on some traffic, before sending a late event")
    millis = int((watermark - timedelta(seconds=settings.window_seconds)).timestamp() * 1000)
    return EventBatch([f"late-{millis}"], np.array([millis], np.int64), np.array([0]), np.array([42.0]),
                      np.array([200]), endpoints=(newest[0],))


def dead_letter_reason(store, event_id: str) -> str | None:
    """Why the stream set the event `event_id` aside (None: it did not)."""
    rows = store.query("SELECT reason FROM dead_letter_events WHERE raw_payload->>'event_id' = ? AND json_valid(raw_payload)",
                       [event_id])
    return rows[0][0] if rows else None


def watermark_frame(store, topic: str, minutes: int = 15) -> pd.DataFrame:
    """Rows to draw on one event-time axis: each service window of the last `minutes` (`window`, final or
    open), the store's watermark and newest event time (`mark`), and the late dead letters of `topic` in
    that span, at their own event time (`late event`; the newest LATE_EVENTS_SHOWN of them)."""
    [(newest,)] = store.query("SELECT max(window_end) FROM service_metrics")
    if newest is None:
        return pd.DataFrame(columns=["kind", "label", "t", "t_end", "is_final", "request_count"])
    since = newest - timedelta(minutes=minutes)
    windows = store.query_df("""
        SELECT 'window' AS kind, service AS label, window_start AS t, window_end AS t_end, is_final, request_count
        FROM service_metrics WHERE window_end > ? ORDER BY window_start, service""", [since])
    marks = store.query_df("""
        SELECT 'mark' AS kind, unnest(['watermark', 'newest event']) AS label,
               unnest([max(watermark), max(max_event_time)]) AS t FROM stream_state""")
    # Late events in the span, the newest LATE_EVENTS_SHOWN by event time: a lab that re-sends old
    # traffic sets thousands aside, more than a chart can hold (altair refuses data over 5,000 rows).
    late = store.query("""
        SELECT service, t FROM (
            SELECT json_extract_string(raw_payload, '$.service') AS service,
                   try_cast(json_extract_string(raw_payload, '$.event_time') AS TIMESTAMPTZ) AS t
            FROM dead_letter_events WHERE reason = 'late' AND topic = ? AND json_valid(raw_payload))
        WHERE t > ? ORDER BY t DESC LIMIT ?""", [topic, since, LATE_EVENTS_SHOWN])
    dead = pd.DataFrame({"kind": "late event", "label": [service for service, _ in late],
                         "t": pd.to_datetime([t for _, t in late], utc=True)})
    frame = pd.concat([f for f in (windows, marks.dropna(subset=["t"]), dead) if len(f)], ignore_index=True)
    # one time type for the chart (the store's and pandas' UTC zones and units may differ: object columns)
    return frame.assign(t=pd.to_datetime(frame.t, utc=True), t_end=pd.to_datetime(frame.t_end, utc=True))


def watermark_chart(frame: pd.DataFrame):
    """Windows as bars on the event-time axis (final or open), the watermark and the newest event as
    rules, and each late event as a red cross: left of the watermark, in a window already final."""
    import altair as alt

    x = alt.X("t:T", title="event time (UTC)")
    windows = frame[frame.kind == "window"].assign(
        state=lambda f: f.is_final.map({True: "final", False: "open (partial)"}))
    bars = alt.Chart(windows).mark_bar(opacity=0.7).encode(
        x=x, x2="t_end:T", y=alt.Y("label:N", title=None),
        color=alt.Color("state:N", title="window", scale=alt.Scale(domain=["final", "open (partial)"],
                                                                   range=["steelblue", "orange"])),
        tooltip=["label", "t:T", "t_end:T", "request_count"])
    layers = [bars]
    if (frame.kind == "mark").any():
        layers.append(alt.Chart(frame[frame.kind == "mark"]).mark_rule(strokeWidth=2).encode(
            x="t:T", strokeDash=alt.StrokeDash("label:N", title="time"), tooltip=["label", "t:T"]))
    if (frame.kind == "late event").any():
        layers.append(alt.Chart(frame[frame.kind == "late event"]).mark_point(
            shape="cross", size=250, color="red", filled=True).encode(x="t:T", y="label:N", tooltip=["label", "t:T"]))
    return alt.layer(*layers).properties(
        width=700, height=160, title="event time: windows, the watermark, and the late event (red cross)")

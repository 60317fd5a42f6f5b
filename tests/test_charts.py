"""obslab.charts: the data behind notebook 02's and 03's figures, on a small real DuckDB store."""

import json
import math
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from obslab.charts import (LATE_EVENTS_SHOWN, TRACE_COLUMNS, dead_letter_reason, error_trace, late_event,
                           threshold_chart, watermark_chart, watermark_frame)
from obslab.detect.run import run_detection
from obslab.settings import load_settings
from obslab.store import Store

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)
# (requests, errors) per minute of service "pay": twelve quiet windows at 1 %, then a surge of 30 %
WINDOWS = [(100, 1)] * 12 + [(100, 30)]


def _window(service: str, k: int, requests: int, errors: int, final: bool = True) -> dict:
    return {"service": service, "window_start": T0 + k * MINUTE, "window_end": T0 + (k + 1) * MINUTE,
            "request_count": requests, "error_count": errors, "error_rate": errors / requests,
            "avg_latency_ms": 50.0, "p50_latency_ms": 40.0, "p95_latency_ms": 80.0, "p99_latency_ms": 90.0,
            "is_final": final, "updated_at": T0}


@pytest.fixture()
def detected(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    store.upsert("service_metrics", [_window("pay", k, n, e) for k, (n, e) in enumerate(WINDOWS)]
                 + [_window("ship", k, 100, 1) for k in range(len(WINDOWS))])
    run_detection(store, settings, now=T0 + len(WINDOWS) * MINUTE)
    return store, settings


def test_the_error_trace_holds_each_window_with_the_baseline_it_was_judged_against(detected):
    store, settings = detected
    trace = error_trace(store, settings, "pay")
    assert list(trace.columns) == [*TRACE_COLUMNS, "service"]
    assert len(trace) == len(WINDOWS) and set(trace.service) == {"pay"}
    assert list(trace.requests) == [n for n, _ in WINDOWS]
    assert trace.error_rate.tolist() == pytest.approx([e / n for n, e in WINDOWS])
    assert math.isnan(trace.baseline.iloc[0])  # nothing learned before the first window
    assert trace.baseline.iloc[1:].tolist() == pytest.approx([0.01] * 12)  # every quiet window is at 1 %
    quiet, last = trace.iloc[1:-1], trace.iloc[-1]
    assert (quiet.band_low <= quiet.error_rate).all() and (quiet.error_rate <= quiet.band_high).all()
    assert (quiet.band_low < quiet.threshold).all()  # a quiet window's band reaches below the threshold
    assert quiet.baseline.iloc[0] < last.threshold < last.band_low < last.error_rate  # the surge's is all above it
    assert trace.flagged.tolist() == [False] * 12 + [True]  # detection stored one error_surge: the surge


def test_the_error_trace_defaults_to_the_service_of_the_newest_errors_incident(detected):
    store, settings = detected
    assert error_trace(store, settings).service.iloc[0] == "pay"  # "ship" comes first by name, but is quiet


def test_the_error_trace_says_what_is_missing(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    with pytest.raises(ValueError, match="no windows in the store: run the stream first"):
        error_trace(store, settings)
    store.upsert("service_metrics", [_window("ship", 0, 10, 0)])
    with pytest.raises(ValueError, match="no windows of service 'pay'; the store has ship"):
        error_trace(store, settings, "pay")


def test_the_threshold_chart_carries_the_trace_and_one_layer_of_flagged_windows(detected):
    store, settings = detected
    spec = threshold_chart(error_trace(store, settings, "pay")).to_dict()
    datasets = list(spec["datasets"].values())
    full = [d for d in datasets if len(d) == len(WINDOWS)]
    assert full and {"baseline", "band_low", "band_high", "threshold", "error_rate", "flagged"} <= set(full[0][0])
    flagged = [d for d in datasets if len(d) == 1]
    assert len(flagged) == 1 and flagged[0][0]["requests"] == 100 and flagged[0][0]["error_rate"] == 0.3
    assert len(spec["layer"]) == 5  # band, baseline, threshold, rate, flagged


def _state(store, watermark):
    store.upsert("stream_state", [{"query_id": "q", "max_event_time": watermark + 2 * MINUTE,
                                   "watermark": watermark, "window_seconds": 60, "updated_at": T0}])


def test_a_late_event_falls_in_a_window_the_watermark_has_closed(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    settings = load_settings(window_seconds=60)
    with pytest.raises(ValueError, match="no watermark yet: run the stream first"):
        late_event(store, settings)
    store.upsert("endpoint_metrics", [_window("pay", 0, 10, 0) | {"endpoint": "/charge", "latency_sum_ms": 500.0}])
    _state(store, datetime(2026, 11, 28, 8, 3, 20, tzinfo=timezone.utc))
    [line] = late_event(store, settings).json_lines()
    event = json.loads(line)
    at = datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))
    assert at == datetime(2026, 11, 28, 8, 2, 20, tzinfo=timezone.utc)  # one window before the watermark
    # its window, 08:02-08:03, ended before the watermark (08:03:20): final, so the event is late
    assert (event["service"], event["endpoint"], event["status_code"]) == ("pay", "/charge", 200)
    assert dead_letter_reason(store, event["event_id"]) is None  # not sent yet
    store.upsert("dead_letter_events", [{"topic": "raw", "kafka_partition": 0, "kafka_offset": 1, "raw_payload": line,
                                         "reason": "late", "received_at": T0}])
    assert dead_letter_reason(store, event["event_id"]) == "late"


def test_the_watermark_frame_puts_windows_marks_and_late_events_on_one_axis(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    store.upsert("service_metrics", [_window("pay", 0, 10, 0), _window("pay", 1, 10, 0, final=False)])
    _state(store, T0 + MINUTE)
    late = {"event_id": "x", "event_time": "2026-11-28T07:59:30.000Z", "service": "pay", "endpoint": "/charge",
            "latency_ms": 1.0, "status_code": 200}
    store.upsert("dead_letter_events", [
        {"topic": "raw", "kafka_partition": 0, "kafka_offset": 7, "raw_payload": json.dumps(late), "reason": "late",
         "received_at": T0},
        {"topic": "raw", "kafka_partition": 0, "kafka_offset": 8, "raw_payload": "{", "reason": "malformed_json",
         "received_at": T0}])
    frame = watermark_frame(store, "raw")
    assert frame.kind.tolist() == ["window", "window", "mark", "mark", "late event"]  # the malformed one is no event
    marks = frame[frame.kind == "mark"].set_index("label").t
    assert marks["watermark"] == pd.Timestamp(T0 + MINUTE) and marks["newest event"] == pd.Timestamp(T0 + 3 * MINUTE)
    assert frame[frame.kind == "late event"].t.iloc[0] == pd.Timestamp("2026-11-28T07:59:30Z")
    assert str(frame.t.dtype).startswith("datetime64") and str(frame.t_end.dtype).startswith("datetime64")
    assert len(watermark_chart(frame).to_dict()["layer"]) == 3  # windows, marks, late events


def test_thousands_of_late_events_still_chart_the_newest_in_the_span(tmp_path):
    # a lab whose scheduled runs re-send old traffic sets thousands of events aside as late;
    # the chart failed with altair's MaxRowsError (over 5,000 rows) and took its task down
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    store.upsert("service_metrics", [_window("pay", 0, 10, 0), _window("pay", 1, 10, 0, final=False)])
    _state(store, T0 + MINUTE)
    rows = []
    for i in range(6_000):  # one every 0.1 s from 07:50 on: 07:50:00-08:00:00 in the span, the rest before it
        t = T0 - timedelta(minutes=20) + timedelta(seconds=0.1 * i)
        event = {"event_id": f"e{i}", "event_time": t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "service": "pay",
                 "endpoint": "/charge", "latency_ms": 1.0, "status_code": 200}
        rows.append({"topic": "raw", "kafka_partition": 0, "kafka_offset": i, "raw_payload": json.dumps(event),
                     "reason": "late", "received_at": T0})
    store.upsert("dead_letter_events", rows)
    frame = watermark_frame(store, "raw")
    late = frame[frame.kind == "late event"]
    assert len(late) == LATE_EVENTS_SHOWN
    newest = T0 - timedelta(minutes=20) + timedelta(seconds=0.1 * 5_999)
    assert late.t.max() == pd.Timestamp(newest) and late.t.min() > pd.Timestamp(T0 - timedelta(minutes=13))
    json.dumps(watermark_chart(frame).to_dict())  # no MaxRowsError


def test_the_watermark_frame_of_an_empty_store_is_empty(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    assert watermark_frame(store, "raw").empty


def test_the_watermark_frame_has_one_time_type_whatever_the_local_zone(tmp_path):
    # DuckDB returns times in the local zone (TZ), pandas parses the dead letters' as UTC: mixed, the
    # column would hold objects, which Altair cannot serialise (as a kernel outside UTC found)
    import os
    import subprocess
    import sys

    code = f"""
import json
from datetime import datetime, timedelta, timezone
from obslab.charts import watermark_chart, watermark_frame
from obslab.store import Store
t0 = datetime(2026, 11, 28, 8, 0, tzinfo=timezone.utc)
store = Store({str(tmp_path / "s.duckdb")!r})
store.migrate()
store.upsert("service_metrics", [dict(service="pay", window_start=t0, window_end=t0 + timedelta(minutes=1),
    request_count=1, error_count=0, error_rate=0.0, avg_latency_ms=1.0, p50_latency_ms=1.0, p95_latency_ms=1.0,
    p99_latency_ms=1.0, is_final=True, updated_at=t0)])
store.upsert("stream_state", [dict(query_id="q", max_event_time=t0, watermark=t0, window_seconds=60, updated_at=t0)])
late = dict(event_id="x", event_time="2026-11-28T07:59:30.000Z", service="pay", endpoint="/a", latency_ms=1.0,
            status_code=200)
store.upsert("dead_letter_events", [dict(topic="raw", kafka_partition=0, kafka_offset=1, raw_payload=json.dumps(late),
                                         reason="late", received_at=t0)])
frame = watermark_frame(store, "raw")
assert str(frame.t.dtype).endswith(", UTC]"), frame.t.dtype
json.dumps(watermark_chart(frame).to_dict())
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env={**os.environ, "TZ": "Europe/Paris"})

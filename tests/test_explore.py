"""obslab.explore: notebook 05's raw events, windows and incidents of one scenario run must describe the same
requests. The raw side is read here with plain Python, independently of the helper's SQL."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import datetime, timedelta

import pytest

from obslab.settings import load_settings
from obslab.stream.transform import RELATIVE_ACCURACY



@pytest.fixture(scope="module")
def run(spark, tmp_path_factory):
    from obslab.explore import explore_run

    settings = load_settings(data_dir=tmp_path_factory.mktemp("explore"))
    # Four minutes of the demo: its payments error surge starts 75 s in.
    return explore_run("demo", settings, seed=7, minutes=4, spark=spark)


@pytest.fixture(scope="module")
def events(run):
    with run.events_file.open() as f:
        return [json.loads(line) for line in f]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _window(t: datetime, seconds: int) -> datetime:
    return datetime.fromtimestamp(t.timestamp() // seconds * seconds, tz=t.tzinfo)


@pytest.mark.spark
@pytest.mark.slow
def test_the_raw_events_are_the_ones_the_windows_counted(run, events):
    assert len(events) == run.report.events
    counted = defaultdict(int)  # (service, window_start) -> requests
    for e in events:
        counted[(e["service"], _window(_time(e["event_time"]), run.report.window_seconds))] += 1
    stored = {(s, w): n for s, w, n in run.store.query(
        "SELECT service, window_start, request_count FROM service_metrics")}
    assert stored == counted


@pytest.mark.spark
@pytest.mark.slow
def test_the_streams_p99_is_within_one_bucket_of_the_exact_p99(run, events):
    from obslab.explore import percentiles_by_window

    latencies = defaultdict(list)  # window_start -> checkout latencies
    for e in events:
        if e["service"] == "checkout":
            latencies[_window(_time(e["event_time"]), run.report.window_seconds)].append(e["latency_ms"])
    frame = percentiles_by_window(run, "checkout")
    assert len(frame) == len(latencies) > 0
    for row in frame.itertuples():
        ranked = sorted(latencies[row.window_start])
        exact = ranked[math.ceil(0.99 * len(ranked)) - 1]  # nearest rank
        assert row.requests == len(ranked)
        assert row.exact_p99_ms == pytest.approx(exact, abs=0.05)  # rounded to 0.1 ms
        # The histogram bound (DDSketch), plus the rounding of both columns to 0.1 ms.
        assert abs(row.p99_ms - exact) <= RELATIVE_ACCURACY * exact + 0.1


@pytest.mark.spark
@pytest.mark.slow
def test_partial_versions_grow_to_the_final_window(run, events):
    from obslab.explore import first_anomaly, partial_versions

    anomaly = first_anomaly(run)
    versions = partial_versions(run, anomaly.service, anomaly.window_start)
    partial, final = versions[versions.version == "partial"], versions[versions.version == "final"]
    assert len(partial) == run.report.window_seconds / run.report.trigger_seconds and len(final) == 1
    assert partial.requests.is_monotonic_increasing
    assert partial.iloc[-1].requests == final.iloc[0].requests and partial.iloc[-1].errors == final.iloc[0].errors
    first_cut = anomaly.window_start + timedelta(seconds=run.report.trigger_seconds)
    in_first = sum(1 for e in events if e["service"] == anomaly.service
                   and anomaly.window_start <= _time(e["event_time"]) < first_cut)
    assert partial.iloc[0].requests == in_first


@pytest.mark.spark
@pytest.mark.slow
def test_a_fault_side_by_side_covers_its_service_around_the_fault(run, events):
    from obslab.explore import fault_side_by_side

    view = fault_side_by_side(run)
    f = view.fault
    assert (f.fault_id, f.fault_type, f.service) == ("f000", "error_surge", "payments")  # the demo's first fault
    pad = timedelta(seconds=run.report.window_seconds)
    expected = sum(1 for e in events if e["service"] == f.service
                   and f.start_time - pad <= _time(e["event_time"]) < f.end_time + pad)
    assert len(view.events) == expected
    during = view.events[(view.events.event_time >= f.start_time) & (view.events.event_time < f.end_time)]
    before = view.events[view.events.event_time < f.start_time]
    assert during.failed.mean() > before.failed.mean() + 0.1  # a surge adding 30 % error probability
    assert (view.incidents.kind == "errors").any()


@pytest.mark.spark
@pytest.mark.slow
def test_an_unknown_fault_is_refused_with_the_faults_there_are(run):
    from obslab.explore import fault_side_by_side

    with pytest.raises(ValueError, match="f000"):
        fault_side_by_side(run, "f999")


@pytest.mark.spark
@pytest.mark.slow
def test_the_charts_build(run):
    from obslab.explore import fault_side_by_side, percentile_chart, percentiles_by_window, side_by_side_chart

    assert percentile_chart(percentiles_by_window(run, "checkout"), "checkout").to_dict()["layer"]
    assert side_by_side_chart(fault_side_by_side(run)).to_dict()["vconcat"]


# ---------------------------------------------------------------------------- the queries, on a hand-made run

W0 = datetime.fromisoformat("2026-03-01T09:00:00+00:00")


@pytest.fixture()
def small_run(tmp_path):
    """One minute of service `a`: four events (10, 20, 30, 40 ms; the second failed) and the window the
    stream made of them, with the percentiles it reported (21 and 39 ms)."""
    from types import SimpleNamespace

    from obslab.explore import Exploration
    from obslab.store import Store

    events = [(5, 10.0, 200), (25, 20.0, 500), (45, 30.0, 200), (50, 40.0, 200)]  # (second, latency, status)
    path = tmp_path / "raw_events.jsonl"
    path.write_text("".join(json.dumps({"event_time": (W0 + timedelta(seconds=s)).isoformat(), "service": "a",
                                        "latency_ms": ms, "status_code": code}) + "\n" for s, ms, code in events))
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    store.upsert("service_metrics", [{
        "service": "a", "window_start": W0, "window_end": W0 + timedelta(minutes=1), "request_count": 4,
        "error_count": 1, "error_rate": 0.25, "avg_latency_ms": 25.0, "p50_latency_ms": 21.0, "p95_latency_ms": 39.0,
        "p99_latency_ms": 39.0, "is_final": True, "updated_at": W0 + timedelta(minutes=2)}])
    report = SimpleNamespace(window_seconds=60, trigger_seconds=20.0, scenario="hand-made")
    return Exploration(report, store, path)


def test_the_stream_s_percentiles_stand_beside_the_exact_ones(small_run):
    from obslab.explore import percentiles_by_window

    [row] = percentiles_by_window(small_run, "a").itertuples()
    assert (row.requests, row.mean_ms, row.p50_ms, row.p99_ms) == (4, 25.0, 21.0, 39.0)  # the stream's
    # nearest rank of 4 sorted values: p50 is the ceil(2.0) = 2nd (20 ms), p99 the ceil(3.96) = 4th (40 ms)
    assert (row.exact_p50_ms, row.exact_p99_ms) == (20.0, 40.0)


def test_the_partial_versions_of_a_window_count_the_events_before_each_trigger(small_run):
    from obslab.explore import partial_versions

    rows = partial_versions(small_run, "a", W0)
    # triggers every 20 s: the events of 0-20 s, 0-40 s, 0-60 s, then the stored final window
    assert list(rows.version) == ["partial", "partial", "partial", "final"]
    assert list(rows.requests) == [1, 2, 4, 4] and list(rows.errors) == [0, 1, 1, 1]
    assert list(rows.error_rate) == [0.0, 0.5, 0.25, 0.25]
    assert list(rows.avg_latency_ms) == [10.0, 15.0, 25.0, 25.0]


def test_no_anomaly_is_a_clear_error_and_the_first_raised_is_found(small_run):
    from obslab.explore import first_anomaly

    with pytest.raises(ValueError, match="no service-level anomaly in this run of 'hand-made'; pick a scenario"):
        first_anomaly(small_run)
    rows = [{"anomaly_id": f"x{i}", "detector": det, "service": "a", "endpoint": None, "metric": "error_rate",
             "value": 0.25, "baseline": 0.01, "threshold": 0.05, "window_start": W0,
             "window_end": W0 + timedelta(minutes=1),
             "request_count": 4, "severity": "high", "used_partial_window": False,
             "detected_at": W0 + timedelta(seconds=seconds)} for i, (det, seconds) in enumerate(
                 [("burn_rate", 90), ("error_surge", 70)])]
    small_run.store.upsert("anomalies", rows)
    assert first_anomaly(small_run).detector == "error_surge"  # raised 20 s before the other

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

pytestmark = [pytest.mark.spark, pytest.mark.slow]


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


def test_the_raw_events_are_the_ones_the_windows_counted(run, events):
    assert len(events) == run.report.events
    counted = defaultdict(int)  # (service, window_start) -> requests
    for e in events:
        counted[(e["service"], _window(_time(e["event_time"]), run.report.window_seconds))] += 1
    stored = {(s, w): n for s, w, n in run.store.query(
        "SELECT service, window_start, request_count FROM service_metrics")}
    assert stored == counted


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


def test_an_unknown_fault_is_refused_with_the_faults_there_are(run):
    from obslab.explore import fault_side_by_side

    with pytest.raises(ValueError, match="f000"):
        fault_side_by_side(run, "f999")


def test_the_charts_build(run):
    from obslab.explore import fault_side_by_side, percentile_chart, percentiles_by_window, side_by_side_chart

    assert percentile_chart(percentiles_by_window(run, "checkout"), "checkout").to_dict()["layer"]
    assert side_by_side_chart(fault_side_by_side(run)).to_dict()["vconcat"]

"""The driver (obslab.evaluation.runs) end to end: generator -> Spark transform -> windows after every
trigger interval -> detection -> matching, against the issue's targets where a shipped scenario is
used; and `obslab evaluate`."""

import json
import math
from statistics import median

import pytest
from typer.testing import CliRunner

from obslab.cli import app
from obslab.evaluation import evaluate
from obslab.evaluation.runs import _chunks
from obslab.settings import load_settings
from obslab.store import Store


def slow_spark(test):
    """Marks a test that needs the session's Spark and takes a while."""
    return pytest.mark.spark(pytest.mark.slow(test))


def _ttd_target(settings) -> float:
    # The target: half a window plus one trigger interval (60 s, 5 s -> 35 s).
    return 0.5 * settings.window_seconds + settings.trigger_seconds


@pytest.mark.parametrize("events, limit, expected", [
    ([5, 5, 5], 10, [[0, 1], [2]]),  # two runs fill a job of 10 events
    ([20, 1], 10, [[0], [1]]),  # a run bigger than the limit is a job of its own
    ([], 10, []),  # nothing to do
])
def test_runs_are_aggregated_in_jobs_of_at_most_a_limit_of_events(events, limit, expected):
    assert _chunks(events, limit) == expected


# ---------------------------------------------------------------------------- end to end (Spark)


@pytest.fixture(scope="module")
def fault_reports(evaluated):
    return evaluated.settings, {name: evaluated(name) for name in ("demo", "workshop", "mixed")}


@slow_spark
@pytest.mark.parametrize("name", ["demo", "workshop", "mixed"])
def test_every_fault_is_detected_without_false_incidents(fault_reports, name):
    _, reports = fault_reports
    report = reports[name]
    missed = [(f.type, f.service) for f in report.faults if not f.detected]
    false = [(i.incident_id, i.cause) for i in report.incidents if not i.matched]
    assert report.faults and missed == []
    assert report.recall == 1.0
    assert report.precision >= 0.95, false
    assert report.false_incidents == 0, false


@slow_spark
def test_median_time_to_detect_is_within_half_a_window_plus_a_trigger(fault_reports):
    settings, reports = fault_reports
    for name, report in reports.items():
        assert report.median_ttd_seconds <= _ttd_target(settings), (name, report.as_dict()["faults"])
    pooled = [f.ttd_seconds for r in reports.values() for f in r.faults if f.outcome == "in_time"]
    assert median(pooled) <= _ttd_target(settings)
    # Most faults are caught before their first window is over, on the open window.
    early = [i.early for r in reports.values() for i in r.incidents]
    assert sum(early) > len(early) / 2


@slow_spark
@pytest.mark.parametrize("rate", [10, 1000])
def test_thirty_minutes_of_clean_traffic_raise_no_incident(spark, tmp_path, rate):
    settings = load_settings(data_dir=tmp_path)
    report = evaluate("clean", settings, spark=spark, events_per_second=rate, minutes=30)
    assert report.events >= rate * 1800 * 0.95
    assert report.incidents == [] and report.false_incidents_per_hour == 0
    assert report.faults == [] and report.recall is None


CASCADE = """
name: short-cascade
duration_seconds: 900
services:
  - {name: checkout, calls: [{service: payments, share: 0.6, lag_seconds: 5}]}
  - {name: payments}
  - {name: search}
traffic: {events_per_second: 20}
faults:
  - {type: error_surge, service: payments, start_seconds: 437, duration_seconds: 150, magnitude: 0.35}
benign:
  - {type: flash_crowd, service: search, start_seconds: 251, duration_seconds: 120, magnitude: 2.5}
"""


@slow_spark
def test_end_to_end_a_short_cascade_the_two_replays_agree_and_ttd_includes_the_detection_run(spark, tmp_path):
    # An error surge on payments at 09:07:17 reaches checkout 5 s later; a flash crowd on search is benign.
    scenario = tmp_path / "short-cascade.yaml"
    scenario.write_text(CASCADE)
    settings = load_settings(data_dir=tmp_path)
    reports = {mode: evaluate(scenario, settings, seed=11, spark=spark, workdir=tmp_path / mode, replay=mode)
               for mode in ("versions", "sink")}
    report = reports["versions"]
    assert [(f.type, f.service, f.cause_fault_id is not None, f.root_cause) for f in report.faults] == [
        ("error_surge", "payments", False, "payments"), ("error_surge", "checkout", True, "payments")]
    assert [(b.type, b.service) for b in report.benign] == [("flash_crowd", "search")]
    assert len(report.cascades) == 1 and report.cascades[0].root_cause == "payments"
    root = report.faults[0]
    assert root.detected, report.as_dict()
    # The first detection can use data up to the end of the trigger interval the fault began in; it is
    # dated a trigger and a poll later, plus the run's own time, which is never zero.
    allowance = settings.trigger_seconds + settings.detect_poll_seconds
    first_interval_end = (math.floor(root.start.timestamp() / settings.trigger_seconds) + 1) * settings.trigger_seconds
    assert root.ttd_seconds > first_interval_end - root.start.timestamp() + allowance
    stored = {r[0]: r[1] for r in Store(report.store_path).query(
        "SELECT incident_id, min(detected_at) FROM anomalies GROUP BY ALL")}
    for i in report.incidents:
        assert i.first_detected_at > stored[i.incident_id]  # the run's wall time was added
        assert (i.first_detected_at - stored[i.incident_id]).total_seconds() <= max(report.detect_run_seconds)
    # Both replays leave the same anomalies (first detected at the same simulated times) and incidents.
    rows = {mode: Store(r.store_path).query(
        "SELECT anomaly_id, incident_id, detected_at, used_partial_window FROM anomalies ORDER BY 1")
        for mode, r in reports.items()}
    assert rows["versions"] == rows["sink"] and rows["versions"]
    incidents = {mode: Store(r.store_path).query(
        "SELECT incident_id, opened_at, last_anomaly_at, status, origin_service FROM incidents ORDER BY 1")
        for mode, r in reports.items()}
    assert incidents["versions"] == incidents["sink"]
    # ... and the same error mix, which the narrator's facts read.
    mix = {mode: Store(r.store_path).query("SELECT * FROM status_counts ORDER BY ALL") for mode, r in reports.items()}
    assert mix["versions"] == mix["sink"] and mix["versions"]
    # Each incident matched to the cascade is scored with the origin it stored.
    origins = dict(Store(report.store_path).query("SELECT incident_id, origin_service FROM incidents"))
    assert report.cascades[0].origins == {i: origins[i] for f in report.faults for i in f.incident_ids}


@slow_spark
def test_cli_json_contract_on_a_scenario_file(spark, tmp_path, monkeypatch):
    scenario = tmp_path / "one_surge.yaml"
    scenario.write_text(
        "name: one-surge\nduration_seconds: 600\ntraffic: {events_per_second: 20}\n"
        "faults:\n  - {type: error_surge, service: search, start_seconds: 330, duration_seconds: 120}\n")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["evaluate", "--scenario", str(scenario), "--seed", "7", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    for key in ("precision", "recall", "median_ttd_seconds", "p90_ttd_seconds", "false_incidents_per_hour",
                "faults", "by_type", "benign_paged", "root_cause_accuracy", "false_by_cause", "detect_run_seconds"):
        assert key in report
    assert report["scenario"] == "one-surge" and report["seed"] == 7
    (fault,) = report["faults"]
    assert {k: fault[k] for k in ("type", "service", "start", "detected", "outcome")} == {
        "type": "error_surge", "service": "search", "start": "2026-01-05T09:05:30+00:00", "detected": True,
        "outcome": "in_time"}
    assert 0 < fault["ttd_seconds"] <= 35
    assert report["recall"] == 1.0 and report["precision"] == 1.0
    assert report["by_type"]["error_surge"]["faults"] == 1 and report["root_cause_accuracy"] is None
    assert report["detect_run_seconds"]["runs"] > 100  # one per 5 s interval of 10 minutes, and the end


@slow_spark
def test_cli_pools_several_runs(spark, tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    args = ["evaluate", "--scenario", "demo", "--seed", "3", "--seed", "4", "--minutes", "4"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert [(r["scenario"], r["seed"], r["duration_seconds"]) for r in out["runs"]] == [
        ("demo", 3, 240), ("demo", 4, 240)]
    overall = out["pooled"]["overall"]
    assert overall["runs"] == 2 and overall["faults"] == sum(len(r["faults"]) for r in out["runs"]) == 2
    assert out["pooled"]["by_type"]["error_surge"]["faults"] == 2  # demo's first fault starts at 75 s, in both
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "| fault type | faults | in time | late | merged | missed | recall in time |" in text.output
    assert "| error_surge | 2 |" in text.output


@slow_spark
def test_cli_names_an_unknown_scenario(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["evaluate", "--scenario", "no-such-thing"])
    assert result.exit_code != 0
    assert "no-such-thing" in result.output and "shipped" in result.output


@slow_spark
def test_a_total_outage_of_one_service_is_detected_within_two_windows_and_the_watermark(spark, tmp_path):
    # search sends nothing from 09:10 to 09:15 while checkout and payments go on. The fault starts on
    # a window boundary, so no window of search holds fewer requests than usual: there is nothing
    # to see but the silence.
    scenario = tmp_path / "outage.yaml"
    scenario.write_text(
        "name: outage\nduration_seconds: 1200\ntraffic: {events_per_second: 20}\n"
        "faults:\n  - {type: traffic_drop, service: search, start_seconds: 600, duration_seconds: 300, "
        "magnitude: 1.0}\n")
    settings = load_settings(data_dir=tmp_path)
    report = evaluate(scenario, settings, spark=spark, keep_store=False)
    (fault,) = report.faults
    assert fault.detected, report.as_dict()
    # The first silent window is final once the watermark has passed its end; the replay records a
    # detection one trigger plus one poll after the data that made it, plus the detection run's own
    # time (see obslab.evaluation.replay).
    bound = (2 * settings.window_seconds + settings.watermark_seconds
             + settings.trigger_seconds + settings.detect_poll_seconds + max(report.detect_run_seconds))
    assert 0 < fault.ttd_seconds <= bound
    assert [(i.service, i.kind, i.matched) for i in report.incidents] == [("search", "traffic", True)]


def test_without_spark_the_duckdb_aggregator_gives_the_demos_first_fault_in_time(tmp_path):
    # the light set-up's path (notebooks 05, 06): no JVM; the demo's first fault starts at 75 s
    settings = load_settings(data_dir=tmp_path)
    report = evaluate("demo", settings, minutes=3, aggregator="duckdb")
    assert report.events > 1000  # three minutes of the demo's traffic
    assert [(f.service, f.outcome) for f in report.faults] == [("payments", "in_time")], report.faults
    assert Store(report.store_path).query("SELECT count(*) FROM service_metrics")[0][0] >= 9  # 3 services x 3+ min
    with pytest.raises(ValueError, match="aggregator must be one of spark, duckdb"):
        evaluate("demo", settings, minutes=1, aggregator="pandas")

import pytest

from obslab.detect.run import run_detection
from obslab.settings import load_settings
from obslab.store import Store
from obslab.stream.job import aggregate_static
from tests.stream.helpers import event_lines

pytestmark = pytest.mark.spark


def _store_with(spark, tmp_path, scenario, seconds):
    settings = load_settings(data_dir=tmp_path)
    store = Store.from_settings(settings)
    store.migrate()
    lines = event_lines(scenario, seconds=seconds)
    raw = spark.createDataFrame([("t", 0, i, v) for i, v in enumerate(lines)],
                                "topic STRING, partition INT, offset LONG, value STRING")
    aggregate_static(spark, raw, settings, store)
    return settings, store


def test_clean_traffic_gives_no_incident_and_reruns_change_nothing(spark, tmp_path):
    settings, store = _store_with(spark, tmp_path, "clean", 1800)  # 30 minutes at 10 events/s
    report = run_detection(store, settings)
    assert report.anomalies == 0 and report.incidents == []
    assert run_detection(store, settings).changed == []


def test_mixed_faults_become_incidents_with_evidence_and_reruns_are_idempotent(spark, tmp_path):
    settings, store = _store_with(spark, tmp_path, "mixed", 1800)
    first = run_detection(store, settings)
    assert first.incidents and first.changed == first.incidents
    services = {(i.service, i.kind) for i in first.incidents}
    assert ("payments", "errors") in services and ("checkout", "latency") in services
    rows = store.query("SELECT count(*), count(DISTINCT incident_id) FROM anomalies")[0]
    assert rows[0] == first.anomalies and rows[1] == len(first.incidents)
    again = run_detection(store, settings)
    assert again.changed == [] and again.anomalies == first.anomalies  # idempotent
    # Each scheduled fault of `mixed` became exactly one incident, opened in the window it started in.
    assert [(i.service, i.kind, i.opened_at.strftime("%H:%M")) for i in first.incidents] == [
        ("checkout", "latency", "09:04"), ("payments", "errors", "09:05"), ("search", "traffic", "09:11"),
        ("payments", "errors", "09:17"), ("search", "latency", "09:18"), ("checkout", "errors", "09:21")]
    assert all(i.status == "resolved" for i in first.incidents)

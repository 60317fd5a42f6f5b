"""obslab.views: what the dashboard and the notebooks read, on a small real DuckDB store."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from obslab import views
from obslab.schedule.tasks import record
from obslab.store import Store

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)


def test_runs_summarise_each_dag_run_from_its_tasks(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    plan = [  # (run, task, status, start offset s, duration s or None while running)
        ("r1", "stream", "ok", 0, 20), ("r1", "detect", "ok", 20, 5),
        ("r2", "stream", "ok", 300, 20), ("r2", "detect", "failed", 320, 4),
        ("r3", "stream", "running", 600, None),
    ]
    for run, task, status, start, seconds in plan:
        record(store, f"obslab_pipeline/{run}/{task}", stage=task, status=status, dag_id="obslab_pipeline",
               dag_run_id=run, started_at=T0 + timedelta(seconds=start),
               finished_at=None if seconds is None else T0 + timedelta(seconds=start + seconds),
               output_notebook=f"/x/{run}/{task}.ipynb", error="boom" if status == "failed" else None)
    # a stage run outside Airflow (no dag_id) is not a scheduled run
    record(store, "cli-1", stage="detect", status="ok", started_at=T0)
    dag_runs, tasks = views.runs(store)
    assert list(dag_runs.dag_run_id) == ["r3", "r2", "r1"]  # newest first
    assert list(dag_runs.status) == ["running", "failed", "ok"]  # any failed task fails its run
    assert dag_runs.set_index("dag_run_id").loc["r1", "seconds"] == 25  # first start to last end
    assert dag_runs.set_index("dag_run_id").loc["r2", "tasks"] == "stream ok, detect failed"
    assert len(tasks) == 5 and tasks.iloc[0].task == "stream" and tasks.iloc[0].status == "running"
    assert tasks.set_index(["dag_run_id", "task"]).loc[("r2", "detect"), "error"] == "boom"


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    return store


def _window(service, minute, requests=100, endpoint=None, seconds=60, p50=40.0, p95=90.0):
    start = T0 + timedelta(minutes=minute)
    row = {"service": service, "window_start": start, "window_end": start + timedelta(seconds=seconds),
           "request_count": requests, "error_count": 0, "error_rate": 0.0, "avg_latency_ms": 50.0,
           "p50_latency_ms": p50, "p95_latency_ms": p95, "p99_latency_ms": 120.0, "is_final": True, "updated_at": T0}
    return row | ({"endpoint": endpoint} if endpoint else {})


def _catalog(services, scenario, at):
    return [{"service": s, "endpoints": json.dumps(["/api/x"]), "scenario": scenario, "updated_at": at}
            for s in services]


def test_services_come_from_the_data_not_a_built_in_list(store):
    # an older scenario declared `billing`; the newest one declares two services none of the defaults
    store.upsert("service_catalog", _catalog(["billing"], "old", T0) + _catalog(["ledger", "vault"], "bank", T0 + H))
    store.upsert("service_metrics", [_window("ledger", 0), _window("frontdoor", 0)])
    # the newest catalogue (vault has sent nothing yet) and whatever has windows; billing is of the past
    assert views.services(store) == ["frontdoor", "ledger", "vault"]


def test_services_of_a_store_without_a_catalogue_are_those_with_windows(store):
    assert views.services(store) == []
    store.upsert("service_metrics", [_window("ledger", 0)])
    assert views.services(store) == ["ledger"]


def test_newest_window_is_the_latest_window_start(store):
    assert views.newest_window(store) is None  # nothing yet: since_for then shows everything
    store.upsert("service_metrics", [_window("ledger", 0), _window("ledger", 3), _window("vault", 1)])
    assert views.newest_window(store) == T0 + timedelta(minutes=3)


@pytest.mark.parametrize("broken, service_row, endpoint_requests, failed", [
    (None, {}, 100, None),  # a correct window keeps every invariant
    ("percentiles", {"p50": 95.0}, 100, "percentiles_ordered"),  # p50 above p95
    ("length", {"seconds": 30}, 100, "tumbling"),  # half a window long
    ("sum", {}, 99, "endpoints_sum_to_service"),  # one request missing from the endpoints
])
def test_window_invariants_name_the_one_a_window_breaks(store, broken, service_row, endpoint_requests, failed):
    store.upsert("service_metrics", [_window("ledger", 0, **service_row)])
    store.upsert("endpoint_metrics", [_window("ledger", 0, 60, "/a"),
                                      _window("ledger", 0, endpoint_requests - 60, "/b")])
    holds = views.window_invariants(store, 60)
    assert {name for name, ok in holds.items() if not ok} == ({failed} if failed else set())


def test_window_invariants_hold_on_an_empty_store(store):
    assert all(views.window_invariants(store, 60).values())


def test_a_window_not_aligned_to_the_window_length_breaks_tumbling(store):
    store.upsert("service_metrics", [_window("ledger", 0) | {"window_start": T0 + timedelta(seconds=10),
                                                             "window_end": T0 + timedelta(seconds=70)}])
    assert views.window_invariants(store, 60)["tumbling"] is False


def test_dead_letter_reasons_count_each_reason_most_first(store):
    reasons = ["late", "late", "late", "invalid:json", "future"]
    store.upsert("dead_letter_events", [{"topic": "raw", "kafka_partition": 0, "kafka_offset": i, "raw_payload": "{}",
                                         "reason": r, "received_at": T0} for i, r in enumerate(reasons)])
    df = views.dead_letter_reasons(store)
    assert list(zip(df.reason, df.events)) == [("late", 3), ("future", 1), ("invalid:json", 1)]  # ties by name


def _incident(incident_id, service):
    return {"incident_id": incident_id, "service": service, "kind": "errors", "status": "open", "opened_at": T0,
            "last_anomaly_at": T0, "severity": "high", "anomaly_count": 1, "detectors": "error_surge",
            "endpoints": "", "updated_at": T0}


def _anomaly(anomaly_id, service, incident_id):
    return {"anomaly_id": anomaly_id, "incident_id": incident_id, "detector": "error_surge", "service": service,
            "metric": "error_rate", "value": 0.2, "threshold": 0.1, "window_start": T0, "window_end": T0 + H,
            "severity": "high", "used_partial_window": False, "detected_at": T0}


def test_incident_states_are_by_id_and_misfiled_anomalies_are_counted(store):
    store.upsert("incidents", [_incident("vault:errors:2", "vault"), _incident("ledger:errors:1", "ledger")])
    store.upsert("anomalies", [_anomaly("a1", "ledger", "ledger:errors:1")])
    assert list(views.incident_states(store).incident_id) == ["ledger:errors:1", "vault:errors:2"]
    assert views.misfiled_anomalies(store) == 0
    store.upsert("anomalies", [_anomaly("a2", "ledger", "vault:errors:2"),  # in another service's incident
                               _anomaly("a3", "ledger", "gone:errors:3")])  # in an incident that does not exist
    assert views.misfiled_anomalies(store) == 2


def test_recent_faults_are_the_newest_first(store):
    store.upsert("injected_incidents", [
        {"run_id": "r", "fault_id": f"f{i}", "scenario": "bank", "fault_type": "error_surge", "service": "vault",
         "start_time": T0 + timedelta(minutes=i)} for i in range(5)])
    assert list(views.recent_faults(store, limit=3).start_time) == [T0 + timedelta(minutes=i) for i in (4, 3, 2)]


def test_narratives_come_back_with_their_facts_parsed(store):
    facts = {"service": "vault", "error_rate_pct": 12.5}
    store.upsert("incident_summaries", [{
        "incident_id": "vault:errors:1", "facts_hash": "h", "facts": json.dumps(facts), "title": "Vault errors",
        "summary": "Vault failed 12.5% of requests.", "likely_causes": json.dumps(["a deploy"]), "impact": "payments",
        "suggested_actions": json.dumps(["roll back"]), "grounded": True, "backend": "template", "created_at": T0}])
    [(got_facts, narrative)] = views.narratives(store)
    assert got_facts == facts
    assert narrative == {"title": "Vault errors", "summary": "Vault failed 12.5% of requests.",
                         "likely_causes": ["a deploy"], "impact": "payments", "suggested_actions": ["roll back"]}


def test_database_size_reports_the_file_s_blocks(store):
    df = views.database_size(store)
    assert len(df) == 1 and df.total_blocks.iloc[0] >= df.free_blocks.iloc[0] >= 0

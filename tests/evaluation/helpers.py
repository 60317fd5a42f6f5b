"""Stores built by hand for the evaluation's tests: ground truth, incidents and their anomalies, as the
generator and the detector write them."""

from datetime import datetime, timedelta, timezone

from obslab.evaluation import Evaluation, match_incidents
from obslab.store import Store

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)
ALLOWANCE = timedelta(seconds=70)  # one 60 s window + one 5 s trigger + one 5 s poll


def at(minutes: float) -> datetime:
    return T0 + minutes * MINUTE


def fault(fault_id, fault_type, service, start, end, **kw) -> dict:
    """A ground-truth row, its start and end in minutes after T0."""
    return {"fault_id": fault_id, "fault_type": fault_type, "service": service, "start_time": at(start),
            "end_time": at(end), **kw}


def store_with(tmp_path, truth: list[dict], incidents: list[tuple], name: str = "e.duckdb") -> Store:
    """A store with ground truth and incidents; each incident (id, service, kind, first window, last
    anomaly end, detected at, origin), times in minutes, gets one anomaly, in its first window, detected then."""
    store = Store(tmp_path / name)
    store.migrate()
    store.upsert_many({
        "injected_incidents": [{"run_id": "r", "scenario": "s", "endpoint": None, "magnitude": 1.0, "benign": False,
                                "cause_fault_id": None, **row, "root_cause": row.get("root_cause", row["service"])}
                               for row in truth],
        "incidents": [{"incident_id": i, "service": svc, "kind": kind, "status": "resolved", "opened_at": at(a),
                       "last_anomaly_at": at(b), "resolved_at": at(b + 3), "severity": "high", "anomaly_count": 1,
                       "detectors": "error_surge", "endpoints": "", "updated_at": at(b), "origin_service": origin}
                      for i, svc, kind, a, b, _, origin in incidents],
        "anomalies": [{"anomaly_id": f"x|{i}", "incident_id": i, "detector": "error_surge", "service": svc,
                       "metric": "error_rate", "value": 0.3, "window_start": at(a), "window_end": at(a + 1),
                       "severity": "high", "used_partial_window": True, "detected_at": at(detected)}
                      for i, svc, _, a, _, detected, _ in incidents],
    })
    return store


def report_of(store, run_seconds=None) -> Evaluation:
    """The evaluation of a hand-built store: 60 s windows, 5 s trigger and poll (an allowance of 70 s)."""
    faults, incidents, benign, cascades = match_incidents(store, run_seconds, ALLOWANCE)
    return Evaluation("s", 1, 10.0, 3600, 0, 60, 5.0, 5.0, faults, incidents, None, 0.0, benign, cascades)

"""Ground truth (obslab.generator.truth): in the store and beside an events file, as the run loop writes it."""

import json
import math
from datetime import datetime, timedelta, timezone

import pytest

from obslab.generator.run import RunPlan, generate
from obslab.generator.scenario import load_scenario
from obslab.generator.truth import FileGroundTruth, GroundTruth, StoreGroundTruth, faults_file_for
from obslab.settings import load_settings
from obslab.lab import Lab

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def within(observed, expected, sd, z=3.29):
    """Inside a two-sided bound with a 1-in-1000 false-alarm chance."""
    return abs(observed - expected) <= z * sd



def test_ground_truth_in_the_store_matches_the_schedule(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="mixed")
    store = Lab(settings).store
    report, _ = generate(RunPlan(to_file=tmp_path / "e.jsonl", start=T0), settings, store=store)
    rows = store.query("SELECT fault_type, service, endpoint, start_time, end_time, magnitude, scenario, benign, "
                       "root_cause, cause_fault_id FROM injected_incidents WHERE run_id = ? ORDER BY fault_id",
                       [report.run_id])
    expected = [
        (f.type, f.service, f.effective_endpoint, T0 + timedelta(seconds=f.start_seconds),
         T0 + timedelta(seconds=f.start_seconds + f.duration_seconds), f.effective_magnitude, "mixed", False,
         f.service, None)
        for f in load_scenario("mixed").faults
    ]
    assert rows == expected  # every fault, with its service, endpoint, times and magnitude, and closed


def test_store_ground_truth_has_benign_events_cascades_and_the_service_catalog(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="cascade")
    store = Lab(settings).store
    report, _ = generate(RunPlan(to_file=tmp_path / "e.jsonl", start=T0, duration_s=600), settings, store=store)
    rows = store.query("SELECT fault_id, fault_type, service, start_time, benign, root_cause, cause_fault_id "
                       "FROM injected_incidents WHERE run_id = ? ORDER BY start_time, fault_id", [report.run_id])
    assert rows == [  # cascade.yaml: checkout calls payments (60 %, 5 s later); the first 10 minutes
        ("f000", "error_surge", "payments", T0 + timedelta(seconds=317), False, "payments", None),
        ("f000>checkout", "error_surge", "checkout", T0 + timedelta(seconds=322), False, "payments", "f000")]
    catalog = store.query("SELECT service, endpoints, sla_ms, slo_availability, calls, scenario FROM service_catalog "
                          "ORDER BY service")
    assert [(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5]) for r in catalog] == [
        ("checkout", ["/api/cart", "/api/checkout", "/api/cart/items"], 300.0, 0.99, "payments", "cascade"),
        ("payments", ["/api/payment/process", "/api/payment/validate", "/api/refund"], 400.0, 0.99, None, "cascade"),
        ("search", ["/api/search", "/api/autocomplete", "/api/filters"], 150.0, 0.99, None, "cascade")]

    crowd = settings.model_copy(update={"scenario": "flash_crowd"})
    report, _ = generate(RunPlan(to_file=tmp_path / "f.jsonl", start=T0), crowd, store=store)
    rows = store.query("SELECT fault_id, fault_type, benign, root_cause, end_time IS NOT NULL FROM injected_incidents "
                       "WHERE run_id = ? AND benign ORDER BY fault_id", [report.run_id])
    assert rows == [(f"b{i:03d}", b.type, True, b.service, True) for i, b in enumerate(load_scenario("flash_crowd").benign)]


def test_a_run_cut_short_closes_its_open_faults_at_the_stop(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="demo")
    store = Lab(settings).store
    report, _ = generate(RunPlan(to_file=tmp_path / "e.jsonl", start=T0, duration_s=90), settings, store=store)
    rows = store.query("SELECT fault_id, start_time, end_time FROM injected_incidents WHERE run_id = ?",
                       [report.run_id])
    # Only the fault that actually started (at 75 s) is ground truth, and it ended with the run at 90 s.
    assert rows == [("f000", T0 + timedelta(seconds=75), T0 + timedelta(seconds=90))]


def test_without_store_the_ground_truth_goes_beside_the_file(tmp_path):
    settings = load_settings(data_dir=tmp_path, scenario="demo")
    events = tmp_path / "demo.jsonl"
    report, _ = generate(RunPlan(to_file=events, store_truth=False, start=T0), settings)
    lines = [json.loads(line) for line in faults_file_for(events).read_text().splitlines()]
    assert [(r["fault_id"], r["end_time"] is None) for r in lines] == [
        ("f000", True), ("f000", False), ("f001", True), ("f001", False)]  # opened, then closed
    assert {(r["benign"], r["root_cause"], r["cause_fault_id"]) for r in lines} == {
        (False, "payments", None), (False, "checkout", None)}  # the store's fields
    assert not (tmp_path / "observability.duckdb").exists()
    assert sum(1 for _ in events.open()) == report.events_sent
    assert within(report.events_sent, 6000, math.sqrt(6000))  # Poisson, 10/s for the scenario's 600 s


def test_a_scenario_s_fourth_service_goes_end_to_end_into_a_file(tmp_path):
    scenario = tmp_path / "shop.yaml"
    scenario.write_text("""
name: shop
traffic: {events_per_second: 20}
services:
  - {name: checkout, calls: [{service: inventory, share: 0.5, lag_seconds: 3}]}
  - {name: payments}
  - {name: search}
  - name: inventory
    endpoints: [/api/stock, /api/reserve]
    latency_ms: 80
    sla_ms: 200
    slo_availability: 0.995
faults:
  - {type: endpoint_outage, service: inventory, endpoint: /api/reserve, start_seconds: 97, duration_seconds: 60}
""")
    settings = load_settings(data_dir=tmp_path, scenario=str(scenario))
    store = Lab(settings).store
    events = tmp_path / "shop.jsonl"
    report, _ = generate(RunPlan(to_file=events, start=T0, duration_s=300), settings, store=store)
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    inventory = [r for r in rows if r["service"] == "inventory"]
    assert {r["endpoint"] for r in inventory} == {"/api/stock", "/api/reserve"}
    outage = [r for r in inventory if r["endpoint"] == "/api/reserve" and "09:01:37" <= r["event_time"][11:19] < "09:02:37"]
    assert outage and all(r["status_code"] == 503 for r in outage)
    truth = store.query("SELECT fault_id, service, root_cause FROM injected_incidents WHERE run_id = ? ORDER BY 1",
                        [report.run_id])
    assert truth == [("f000", "inventory", "inventory"), ("f000>checkout", "checkout", "inventory")]
    assert store.query("SELECT calls FROM service_catalog WHERE service = 'checkout'") == [("inventory",)]
    assert store.query("SELECT sla_ms, slo_availability, endpoints FROM service_catalog WHERE service = 'inventory'") == [
        (200.0, 0.995, '["/api/stock", "/api/reserve"]')]


def test_both_ground_truths_are_ground_truths(tmp_path):
    store = Lab(load_settings(data_dir=tmp_path)).store
    assert isinstance(StoreGroundTruth(store, "run", "demo"), GroundTruth)
    assert isinstance(FileGroundTruth(tmp_path / "e.faults.jsonl", "run", "demo"), GroundTruth)


def test_the_file_s_fault_times_are_iso_text_of_the_same_instant(tmp_path):
    events = tmp_path / "demo.jsonl"
    generate(RunPlan(to_file=events, store_truth=False, start=T0, duration_s=90),
             load_settings(data_dir=tmp_path, scenario="demo"))
    opened, closed = [json.loads(line) for line in faults_file_for(events).read_text().splitlines()]
    # demo.yaml's first fault starts at 75 s; the run ends at 90 s and closes it there.
    assert opened["start_time"] == closed["start_time"] == "2026-03-01T09:01:15+00:00"
    assert (opened["end_time"], closed["end_time"]) == (None, "2026-03-01T09:01:30+00:00")


def test_a_held_store_keeps_a_faults_truth_waiting_not_the_traffic(tmp_path):
    import json as _json
    import subprocess
    import sys
    from pathlib import Path

    from obslab.errors import StoreLockedError
    from obslab.generator.events import Fault
    from obslab.store import Store

    store = Store(tmp_path / "observability.duckdb", lock_timeout_s=0.5)
    store.migrate()
    start = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
    fault = Fault("f000", "error_surge", "checkout", None, start, start + timedelta(minutes=5), 5.0)
    truth = StoreGroundTruth(store, "run", "demo")
    worker = Path(__file__).resolve().parents[1] / "store_worker.py"
    holder = subprocess.Popen([sys.executable, str(worker), "hold", str(store.path), "30"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert _json.loads(holder.stdout.readline())["holding"]
        truth.started(fault)  # no error: the row waits
        truth.ended(fault, start + timedelta(minutes=3))
        assert list(truth.pending) == ["f000"]
        with pytest.raises(StoreLockedError):  # the run's end waits a bounded time, then says so
            truth.FINAL_WAIT_S = 1.0
            truth.flush(final=True)
    finally:
        holder.kill()
        holder.wait()
    truth.flush()
    assert not truth.pending
    assert store.query("SELECT fault_id, end_time FROM injected_incidents") == [("f000", start + timedelta(minutes=3))]

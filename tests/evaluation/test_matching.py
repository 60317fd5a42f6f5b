"""Matching (obslab.evaluation.matching): the in-time rule, late, merged and missed faults, duplicates,
benign pages and cascades, on stores built by hand; and two faults through real detection runs."""

from datetime import timedelta

import pytest

from obslab.evaluation import default_allowance, pool
from obslab.evaluation.matching import in_time_allowance
from tests.evaluation.helpers import MINUTE, T0, at, fault, report_of, store_with

SECOND = timedelta(seconds=1)


def test_the_allowance_is_a_window_a_trigger_and_a_poll():
    assert in_time_allowance(60, 5.0, 5.0) == timedelta(seconds=70)
    assert default_allowance() == timedelta(seconds=70)  # the settings' defaults: 60 s, 5 s, 5 s


@pytest.mark.parametrize("detected, outcome, ttd, late", [
    # An error surge 09:05-09:09: in time while its first detection is before 09:09 + 70 s = 09:10:10.
    (at(6), "in_time", 60, None),  # a minute after it began
    (at(10) + 9 * SECOND, "in_time", 309, None),  # 1 s before the bound
    (at(10) + 10 * SECOND, "late", 310, 70),  # at the bound: not before it
    (at(10) + 11 * SECOND, "late", 311, 71),  # 71 s after the fault ended
    (at(14), "late", 540, 300),  # five minutes after it ended
])
def test_a_fault_is_in_time_only_when_first_detected_before_its_end_plus_the_allowance(
        tmp_path, detected, outcome, ttd, late):
    minutes = (detected - T0) / MINUTE
    store = store_with(tmp_path, [fault("f1", "error_surge", "payments", 5, 9)],
                       [("payments:errors:a", "payments", "errors", 5, 9, minutes, None)])
    report = report_of(store)
    (f,) = report.faults
    assert (f.outcome, f.detected, f.ttd_seconds, f.late_seconds) == (outcome, outcome == "in_time", ttd, late)
    assert f.incident_id == "payments:errors:a"
    assert report.recall == (1 if outcome == "in_time" else 0)
    assert report.precision == 1  # a late incident is still the fault's own: not a false one
    assert report.median_ttd_seconds == (ttd if outcome == "in_time" else None)  # TTD over in-time faults only


def test_the_detection_run_s_wall_time_can_make_a_fault_late(tmp_path):
    # Recorded at 09:10:09, 1 s before the bound; the run that recorded it took 2.5 s.
    store = store_with(tmp_path, [fault("f1", "error_surge", "payments", 5, 9)],
                       [("payments:errors:a", "payments", "errors", 5, 9, 10 + 9 / 60, None)])
    (f,) = report_of(store, {at(10) + 9 * SECOND: 2.5}).faults
    assert (f.outcome, f.ttd_seconds, f.late_seconds) == ("late", 311.5, 71.5)


def test_a_fault_whose_only_incident_is_credited_to_an_earlier_fault_is_merged(tmp_path):
    # Two error surges on payments, 09:05-09:07 and 09:10-09:12; one incident spans both (09:05-09:12),
    # first detected at 09:06. search's surge at 09:20-09:22 has no incident at all.
    store = store_with(tmp_path, [fault("f1", "error_surge", "payments", 5, 7),
                                  fault("f2", "error_surge", "payments", 10, 12),
                                  fault("f3", "error_surge", "search", 20, 22)],
                       [("payments:errors:a", "payments", "errors", 5, 12, 6, None)])
    report = report_of(store)
    assert [(f.fault_id, f.outcome, f.incident_id, f.merged_into) for f in report.faults] == [
        ("f1", "in_time", "payments:errors:a", None),
        ("f2", "merged", None, "f1"),  # its only incident is f1's
        ("f3", "missed", None, None),
    ]
    assert report.faults[1].incident_ids == ["payments:errors:a"]  # still reported with it
    (i,) = report.incidents
    assert (i.matched, i.fault_id, i.duplicate, i.cause) == (True, "f1", False, "fault")  # credited once
    assert report.recall == pytest.approx(1 / 3) and report.precision == 1
    surge = pool([report])["by_type"]["error_surge"]
    assert (surge["in_time"], surge["late"], surge["merged"], surge["missed"]) == (1, 0, 1, 1)


def test_a_later_fault_with_an_incident_of_its_own_is_credited_with_that_one(tmp_path):
    # As above, but the second surge also raised an incident of its own, first detected at 09:10:30:
    # the long incident stays f1's, the new one is f2's.
    store = store_with(tmp_path, [fault("f1", "error_surge", "payments", 5, 7),
                                  fault("f2", "error_surge", "payments", 10, 12)],
                       [("payments:errors:a", "payments", "errors", 5, 12, 6, None),
                        ("payments:errors:b", "payments", "errors", 10, 12, 10.5, None)])
    report = report_of(store)
    assert [(f.fault_id, f.outcome, f.incident_id, f.ttd_seconds) for f in report.faults] == [
        ("f1", "in_time", "payments:errors:a", 60), ("f2", "in_time", "payments:errors:b", 30)]
    assert [(i.incident_id, i.fault_id, i.cause) for i in report.incidents] == [
        ("payments:errors:a", "f1", "fault"), ("payments:errors:b", "f2", "fault")]


def test_a_second_incident_of_one_fault_is_a_false_incident_and_counts_as_fragmentation(tmp_path):
    # One error surge on payments, 09:05-09:09, raised two incidents (the first resolved in a lull,
    # a second opened); checkout's latency incident matches nothing.
    store = store_with(tmp_path, [fault("f1", "error_surge", "payments", 5, 9)], [
        ("payments:errors:a", "payments", "errors", 5, 7, 6, None),
        ("payments:errors:b", "payments", "errors", 8, 9, 8, None),
        ("checkout:latency:c", "checkout", "latency", 20, 21, 20, None)])
    report = report_of(store).as_dict()
    (f,) = report["faults"]
    assert f["incident_ids"] == ["payments:errors:a", "payments:errors:b"]  # both are reported with it
    assert f["outcome"] == "in_time" and f["ttd_seconds"] == 60  # by the first, a minute after it began
    assert [(i["incident_id"], i["matched"], i["duplicate"], i["cause"]) for i in report["incidents"]] == [
        ("payments:errors:a", True, False, "fault"),  # the fault's first incident
        ("payments:errors:b", False, True, "duplicate"),  # the same fault again: false
        ("checkout:latency:c", False, False, "spurious"),  # no fault at all: false
    ]
    assert report["false_incidents"] == 2 and report["precision"] == pytest.approx(1 / 3) and report["recall"] == 1
    surge = report["by_type"]["error_surge"]
    assert surge["incidents_per_fault"] == 2 and surge["duplicates"] == 1  # fragmentation: 2 incidents, 1 fault
    assert surge["precision"] == 0.5  # its first incident / (that + its duplicate); the latency one is not its kind


def test_benign_events_that_page_are_counted_and_a_fault_overlapping_one_still_matches(tmp_path):
    # search: a flash crowd 09:10-09:14 and, inside it, a latency spike 09:12-09:13; checkout: a deploy blip
    # 09:30-09:31; payments: a drift 09:40-10:00.
    store = store_with(tmp_path, [
        fault("b1", "flash_crowd", "search", 10, 14, benign=True),
        fault("f1", "latency_spike", "search", 12, 13),
        fault("b2", "deploy_blip", "checkout", 30, 31, benign=True),
        fault("b3", "drift", "payments", 40, 60, benign=True),
    ], [
        ("search:traffic:a", "search", "traffic", 10, 11, 11, None),  # during the crowd, no fault: a benign page
        ("search:latency:b", "search", "latency", 12, 13, 12.5, None),  # the spike: matched, not a page
        ("payments:errors:c", "payments", "errors", 30, 31, 30.5, None),  # another service than the blip's
    ])
    report = report_of(store)
    assert [(i.incident_id, i.cause) for i in report.incidents] == [
        ("search:traffic:a", "benign"), ("search:latency:b", "fault"), ("payments:errors:c", "spurious")]
    assert [(b.fault_id, b.paged, b.incident_ids) for b in report.benign] == [
        ("b1", True, ["search:traffic:a"]), ("b2", False, []), ("b3", False, [])]
    assert [f.fault_id for f in report.faults] == ["f1"]  # benign rows are not faults to detect
    assert report.recall == 1 and report.benign_paged == 1
    pooled = pool([report])
    assert pooled["benign_by_type"] == {"deploy_blip": {"events": 1, "paged": 0, "incidents": 0},
                                        "drift": {"events": 1, "paged": 0, "incidents": 0},
                                        "flash_crowd": {"events": 1, "paged": 1, "incidents": 1}}
    assert pooled["overall"]["false_by_cause"] == {"benign": 1, "spurious": 1}


def test_a_cascade_is_named_correctly_only_when_every_incident_of_it_names_the_root(tmp_path):
    # Three cascades from payments to checkout (effects 5 s later); search has a fault of its own.
    truth = [fault("c1", "error_surge", "payments", 5, 8),
             fault("c1e", "error_surge", "checkout", 5.1, 8.1, root_cause="payments", cause_fault_id="c1"),
             fault("c2", "latency_spike", "payments", 20, 23),
             fault("c2e", "latency_spike", "checkout", 20.1, 23.1, root_cause="payments", cause_fault_id="c2"),
             fault("c3", "endpoint_outage", "payments", 40, 43),
             fault("c3e", "endpoint_outage", "checkout", 40.1, 43.1, root_cause="payments", cause_fault_id="c3"),
             fault("s1", "error_surge", "search", 50, 52)]
    store = store_with(tmp_path, truth, [
        ("payments:errors:1", "payments", "errors", 5, 7, 6, "payments"),
        ("checkout:errors:1", "checkout", "errors", 5, 7, 6, "payments"),  # c1: both name payments
        ("payments:latency:2", "payments", "latency", 20, 22, 21, "payments"),
        ("checkout:latency:2", "checkout", "latency", 20, 22, 21, "checkout"),  # c2: the effect names itself
        # c3: nobody detected it
        ("search:errors:4", "search", "errors", 50, 51, 51, None),  # no cascade: not scored
    ])
    report = report_of(store)
    assert [(c.root_fault_id, c.root_cause, c.effect_fault_ids, c.correct) for c in report.cascades] == [
        ("c1", "payments", ["c1e"], True),
        ("c2", "payments", ["c2e"], False),  # one incident of it names the wrong origin
        ("c3", "payments", ["c3e"], False),  # not detected: the origin was not named
    ]
    assert report.cascades[1].origins == {"payments:latency:2": "payments", "checkout:latency:2": "checkout"}
    assert report.root_cause_accuracy == pytest.approx(1 / 3)
    by_type = pool([report])["by_type"]
    assert by_type["cascade_effect"]["faults"] == 3 and by_type["cascade_effect"]["in_time"] == 2
    assert by_type["error_surge"]["faults"] == 2  # c1 and s1: effects are reported apart


def test_time_to_detect_adds_the_wall_time_of_the_detection_run_that_raised_it(tmp_path):
    store = store_with(tmp_path, [fault("f1", "error_surge", "payments", 5, 9)],
                       [("payments:errors:a", "payments", "errors", 5, 7, 6, None)])
    assert report_of(store).faults[0].ttd_seconds == 60  # no run times known: the recorded time
    report = report_of(store, {at(6): 0.25, at(7): 9.0})  # the run dated 09:06 took 0.25 s
    assert report.faults[0].ttd_seconds == 60.25
    assert report.incidents[0].first_detected_at == at(6) + timedelta(seconds=0.25)


# ---------------------------------------------------------------- two faults through real detection runs


def _window(service, minute, final, errors=4):
    """A service window of 200 requests, 200 ms; 4 errors (2 %) unless told otherwise."""
    start = T0 + minute * MINUTE
    return {"service": service, "window_start": start, "window_end": start + MINUTE, "request_count": 200,
            "error_count": errors, "error_rate": errors / 200, "avg_latency_ms": 200.0, "p50_latency_ms": 200.0,
            "p95_latency_ms": 260.0, "p99_latency_ms": 300.0, "is_final": final, "updated_at": start + MINUTE}


def test_two_faults_five_minutes_apart_raise_two_incidents_each_in_time(tmp_path):
    from obslab.detect.run import run_detection
    from obslab.lab import Lab
    from obslab.settings import load_settings

    # payments fails 30 % of its requests in minutes 40-41 and again in 45-46 (faults 09:40-09:42 and
    # 09:45-09:47); three clean windows (42, 43, 44) lie between. Windows are final two minutes after
    # their end (the watermark), and detection runs once a minute, as the stream and detector would.
    settings = load_settings(data_dir=tmp_path)
    store = Lab(settings).store
    bad = {40, 41, 45, 46}
    with store.held():
        store.upsert("service_metrics", [_window(s, m, True) for s in ("payments", "search") for m in range(36)])
        for t in range(37, 56):
            store.upsert("service_metrics", [_window(s, m, final=m + 1 <= t - 2,
                                                     errors=60 if s == "payments" and m in bad else 4)
                                             for s in ("payments", "search") for m in range(t - 3, t)])
            run_detection(store, settings, now=T0 + t * MINUTE)
        store.upsert("injected_incidents", [
            {"run_id": "r", "scenario": "s", "endpoint": None, "magnitude": 0.3, "benign": False,
             "cause_fault_id": None, "root_cause": "payments", **fault(f, "error_surge", "payments", a, a + 2)}
            for f, a in (("f1", 40), ("f2", 45))])
    incidents = store.query("SELECT incident_id, opened_at, last_anomaly_at FROM incidents ORDER BY opened_at")
    assert [(opened, last) for _, opened, last in incidents] == [(at(40), at(42)), (at(45), at(47))]
    report = report_of(store)
    assert [(f.fault_id, f.outcome, f.incident_id) for f in report.faults] == [
        ("f1", "in_time", incidents[0][0]), ("f2", "in_time", incidents[1][0])]
    assert report.precision == 1 and report.recall == 1

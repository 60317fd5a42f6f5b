"""Results (obslab.evaluation.results): what a report says about each fault, and its JSON form."""

from obslab.evaluation import Evaluation, FaultResult, IncidentResult
from tests.evaluation.helpers import at


def _report() -> Evaluation:
    faults = [
        FaultResult("f1", "error_surge", "payments", None, at(5), at(7), outcome="in_time", detected=True,
                    ttd_seconds=60.0, incident_id="payments:errors:a", incident_ids=["payments:errors:a"]),
        FaultResult("f2", "error_surge", "payments", None, at(10), at(12), outcome="merged", merged_into="f1",
                    incident_ids=["payments:errors:a"]),
        FaultResult("f3", "traffic_drop", "search", "/search", at(20), at(22), outcome="late", ttd_seconds=240.0,
                    late_seconds=120.0, incident_id="search:traffic:b", incident_ids=["search:traffic:b"]),
        FaultResult("f4", "latency_spike", "checkout", None, at(30), at(32)),
    ]
    incidents = [IncidentResult("payments:errors:a", "payments", "errors", at(5), at(12), at(6), True,
                                matched=True, fault_id="f1", cause="fault"),
                 IncidentResult("search:traffic:b", "search", "traffic", at(20), at(22), at(24), False,
                                matched=True, fault_id="f3", cause="fault")]
    return Evaluation("s", 1, 10.0, 3600, 36_000, 60, 5.0, 5.0, faults, incidents, None, 0.0)


def test_each_fault_line_says_in_time_late_with_its_delay_merged_with_its_owner_or_missed():
    lines = _report().describe(each_fault=True).splitlines()
    assert lines[:4] == [
        "09:05:00  f1         error_surge          payments                   in time, detected after 60 s",
        "09:10:00  f2         error_surge          payments                   MERGED: payments:errors:a credited to f1",
        "09:20:00  f3         traffic_drop         search /search             LATE: first detected 120 s after it "
        "ended (search:traffic:b)",
        "09:30:00  f4         latency_spike        checkout                   MISSED",
    ]
    assert lines[-1].startswith("s (seed 1, 36,000 events, 60 min): recall in time 25 % (1 of 4; late 1, merged 1, "
                                "missed 1), precision 100 %, median time to detect 60 s, 0 false incidents")


def test_the_json_form_counts_the_outcomes_and_recall_is_in_time_only():
    d = _report().as_dict()
    assert (d["in_time"], d["late"], d["merged"], d["missed"], d["recall"]) == (1, 1, 1, 1, 0.25)
    assert d["median_ttd_seconds"] == 60.0 and d["p90_ttd_seconds"] == 60.0  # the late fault's 240 s is left out
    assert [(f["fault_id"], f["outcome"], f["late_seconds"], f["merged_into"]) for f in d["faults"]] == [
        ("f1", "in_time", None, None), ("f2", "merged", None, "f1"), ("f3", "late", 120.0, None),
        ("f4", "missed", None, None)]
    assert d["faults"][0]["start"] == "2026-01-05T09:05:00+00:00"

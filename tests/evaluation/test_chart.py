"""The timeline chart (obslab.evaluation.chart): a band per fault or benign event, a mark per incident."""

from obslab.evaluation import BenignResult, Evaluation, FaultResult, IncidentResult, timeline_chart
from tests.evaluation.helpers import at


def test_the_chart_has_a_band_per_fault_and_benign_event_and_a_mark_per_incident():
    report = Evaluation(
        "s", 1, 10.0, 3600, 0, 60, 5.0, 5.0,
        [FaultResult("f1", "error_surge", "payments", None, at(5), at(7), outcome="late", ttd_seconds=200.0)],
        [IncidentResult("payments:errors:a", "payments", "errors", at(5), at(6), at(10), False, matched=True),
         IncidentResult("search:latency:b", "search", "latency", at(20), at(21), at(20.5), True)],
        None, 0.0, [BenignResult("b1", "flash_crowd", "checkout", at(30), at(32), paged=False)])
    chart = timeline_chart(report).to_dict()
    bands, marks = (chart["datasets"][layer["data"]["name"]] for layer in chart["layer"])
    assert [(b["service"], b["fault"], b["outcome"]) for b in bands] == [
        ("payments", "error_surge", "late"), ("checkout", "benign: flash_crowd", "did not page")]
    assert [(m["incident"], m["result"]) for m in marks] == [
        ("payments:errors:a", "matched a fault"), ("search:latency:b", "false incident")]
    assert chart["layer"][0]["encoding"]["y"]["sort"] == ["checkout", "payments", "search"]

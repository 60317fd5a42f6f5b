"""Pooling (obslab.evaluation.pooling): per-type outcomes, nearest-rank quantiles, the warm-up split and
the table `obslab evaluate` prints."""

import pytest

from obslab.evaluation import pool, type_table, warmed_up
from tests.evaluation.helpers import MINUTE, T0, fault, report_of, store_with


@pytest.mark.parametrize("values, q, expected", [
    ([10, 20, 30, 40], 0.5, 20),  # nearest rank: rank ceil(2) = 2, never an average
    ([10, 20, 30, 40], 0.9, 40),  # rank ceil(3.6) = 4
    ([5], 0.9, 5),  # one value is every quantile
])
def test_pooled_ttd_quantiles_are_nearest_rank(tmp_path, values, q, expected):
    truth = [fault(f"f{n}", "latency_spike", "search", 10 * n, 10 * n + 5) for n in range(len(values))]
    incidents = [(f"search:latency:{n}", "search", "latency", 10 * n, 10 * n + 1, 10 * n + v / 60, None)
                 for n, v in enumerate(values)]
    pooled = pool([report_of(store_with(tmp_path, truth, incidents))])
    key = "median_ttd_seconds" if q == 0.5 else "p90_ttd_seconds"
    assert pooled["by_type"]["latency_spike"][key] == pytest.approx(expected)


def test_recall_after_the_warm_up_leaves_out_only_faults_that_began_before_a_baseline_could(tmp_path):
    # Windows of 60 s: the detectors' series have a calibrated baseline from minute 10 on (5 to
    # learn, 5 to calibrate). Of three faults, the one at minute 2 is missed; recall after the
    # warm-up counts the two that began at 10 and at 30, one found in time.
    truth = [fault("f0", "traffic_drop", "search", 2, 5), fault("f1", "traffic_drop", "search", 10, 13),
             fault("f2", "traffic_drop", "search", 30, 33)]
    incidents = [("search:traffic:1", "search", "traffic", 11, 12, 12.5, None)]
    overall = pool([report_of(store_with(tmp_path, truth, incidents))])["overall"]
    assert warmed_up(60) == T0 + 10 * MINUTE
    assert overall["recall"] == pytest.approx(1 / 3)
    assert (overall["faults_after_warm_up"], overall["recall_after_warm_up"]) == (2, pytest.approx(0.5))


def _four_outcomes(tmp_path):
    # payments: surges 09:05-09:07 (one incident 09:05-09:12, first detected 09:06: in time, TTD 60 s) and
    # 09:10-09:12 (only that incident matches it: merged); search: a surge 09:20-09:22 first detected at
    # 09:24, 120 s after it ended (late); checkout: a surge 09:30-09:32 nobody saw (missed).
    truth = [fault("f1", "error_surge", "payments", 5, 7), fault("f2", "error_surge", "payments", 10, 12),
             fault("f3", "error_surge", "search", 20, 22), fault("f4", "error_surge", "checkout", 30, 32)]
    return report_of(store_with(tmp_path, truth, [("payments:errors:a", "payments", "errors", 5, 12, 6, None),
                                                  ("search:errors:b", "search", "errors", 20, 22, 24, None)]))


def test_each_fault_type_counts_in_time_late_merged_and_missed(tmp_path):
    pooled = pool([_four_outcomes(tmp_path)])
    surge = pooled["by_type"]["error_surge"]
    assert {k: surge[k] for k in ("faults", "in_time", "late", "merged", "missed", "recall")} == {
        "faults": 4, "in_time": 1, "late": 1, "merged": 1, "missed": 1, "recall": 0.25}
    assert (surge["median_ttd_seconds"], surge["p90_ttd_seconds"]) == (60, 60)  # the in-time fault only
    assert surge["precision"] == 1  # both incidents are credited, each to one fault
    assert surge["incidents_per_fault"] == 1  # f1 and f3, one incident each
    overall = pooled["overall"]
    assert (overall["in_time"], overall["late"], overall["merged"], overall["missed"]) == (1, 1, 1, 1)
    assert (overall["incidents"], overall["false_incidents"], overall["precision"]) == (2, 0, 1)


def test_the_table_has_a_column_per_outcome(tmp_path):
    lines = type_table(pool([_four_outcomes(tmp_path)])).splitlines()
    assert lines[0] == ("| fault type | faults | in time | late | merged | missed | recall in time | TTD p50 | "
                        "TTD p90 | precision | incidents per fault | duplicates | false of its kind |")
    assert lines[1].count("|") == 14  # 13 columns
    assert lines[2] == "| error_surge | 4 | 1 | 1 | 1 | 1 | 25.0 % | 60.0 s | 60.0 s | 100.0 % | 1.00 | 0 | 0 |"
    assert lines[3] == "| **all** | 4 | 1 | 1 | 1 | 1 | 25.0 % | 60.0 s | 60.0 s | 100.0 % | | | 0 false |"
    assert lines[5].startswith("benign events that paged: 0 of 0 (none); false incidents by cause: none;")

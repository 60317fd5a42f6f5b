"""baseline_shift (obslab.detect.shift): both halves, latency above its usual level and traffic below its
forecast. Each half's own tests are in test_latency.py and test_traffic.py."""

from obslab.detect.shift import baseline_shift
from tests.detect.helpers import CFG, windows


def test_baseline_shift_catches_latency_creep_and_traffic_drops():
    creep = windows(at={m: {"latency": 200 * (1 + 0.1 * (m - 29))} for m in range(30, 40)})
    hits = baseline_shift(creep, CFG)
    assert hits and all(a.metric == "avg_latency_ms" for a in hits)
    assert hits[0].window_start.minute <= 32  # caught at about +30 %, long before 2 x SLA
    drop = windows(at={m: {"count": 60} for m in range(30, 35)})
    hits = baseline_shift(drop, CFG)
    assert [a.window_start.minute for a in hits] == [30, 31, 32, 33, 34] and hits[0].kind == "traffic"
    # An open window has fewer requests by nature: it is never called a traffic drop.
    assert baseline_shift(windows(at={39: {"count": 60, "final": False}}), CFG) == []


def test_a_latency_shift_in_the_warm_up_is_found_once_the_series_has_a_history():
    # Six windows of history and no calibrated noise yet: the history's own spread stands in for
    # it, so a degradation to 3 x is found on its first window; the same series without it is quiet.
    slow = windows(n=12, at={m: {"latency": 600.0} for m in range(6, 10)})
    hits = [a for a in baseline_shift(slow, CFG) if a.metric == "avg_latency_ms"]
    assert hits and hits[0].window_start.minute == 6
    for seed in range(5):
        assert baseline_shift(windows(n=12, seed=seed), CFG) == []

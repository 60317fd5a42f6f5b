from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from obslab.detect.detectors import (DetectorConfig, Window, baseline_shift, burn_rate, detect_series, error_surge,
                                     latency_spike, severity, wilson_lower)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
CFG = DetectorConfig()


def windows(n=40, service="payments", count=200, error_rate=0.02, latency=200.0, seed=1, final=True, at=None):
    """A clean series with binomial errors and noisy latency; `at` = {minute: dict of overrides}."""
    rng = np.random.default_rng(seed)
    at = at or {}
    out = []
    for m in range(n):
        o = at.get(m, {})
        c = o.get("count", count)
        errors = o.get("errors", int(rng.binomial(c, o.get("error_rate", error_rate))))
        lat = o.get("latency", latency) * (1 + rng.normal(0, 0.2) / np.sqrt(max(c, 1)))
        out.append(Window(service, None, T0 + timedelta(minutes=m), T0 + timedelta(minutes=m + 1), c, errors,
                          lat, lat * 1.5, o.get("final", final)))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_clean_traffic_is_quiet(seed):
    assert detect_series(windows(n=60, seed=seed), CFG) == []  # no detector fires on normal traffic


def test_error_surge_fires_with_evidence():
    found = error_surge(windows(at={30: {"error_rate": 0.3}, 31: {"error_rate": 0.3}}), CFG)
    assert [a.window_start for a in found] == [T0 + timedelta(minutes=30), T0 + timedelta(minutes=31)]
    a = found[0]
    assert a.detector == "error_surge" and a.metric == "error_rate" and a.kind == "errors"
    assert a.baseline == pytest.approx(0.02, abs=0.01)  # the pooled rate of clean history
    assert a.threshold == pytest.approx(3 * a.baseline)
    assert a.request_count == 200 and a.severity in ("high", "critical") and not a.used_partial_window


def test_small_windows_do_not_fire_on_noise():
    # 2 errors in 10 requests is 20 %, ten times the usual 2 %, but the Wilson lower bound at z=3
    # (3.5 %) stays under 3 x 2 %: ten requests cannot tell a surge from bad luck.
    assert error_surge(windows(at={30: {"count": 10, "errors": 2}}), CFG) == []
    assert wilson_lower(2, 10, 3.0) < 0.06 < wilson_lower(60, 200, 3.0)
    # An open window with few requests is not judged at all yet.
    assert error_surge(windows(at={30: {"count": 12, "errors": 12, "final": False}}), CFG) == []


def test_a_sparse_series_with_mostly_error_free_windows_is_quiet():
    # An endpoint with 35 requests a window at ~2 % errors: 16 of 30 windows have no error, so the
    # median window rate is 0. A baseline built from that median made 3 errors in 34 requests
    # look like a surge (seen on the live pipeline); the pooled rate (18 / 1050) does not.
    errors = [0] * 16 + [1] * 10 + [2] * 4
    at = {m: {"errors": e} for m, e in enumerate(errors)}
    series = windows(n=31, count=35, at={**at, 30: {"count": 34, "errors": 3}})
    assert error_surge(series, CFG) == []
    assert error_surge(windows(n=31, count=35, at={**at, 30: {"count": 34, "errors": 12}}), CFG)


def test_baseline_excludes_anomalous_windows():
    surge = {m: {"error_rate": 0.3} for m in range(10, 40)}  # a long surge
    found = error_surge(windows(n=40, at=surge), CFG)
    assert len(found) == 30  # still anomalous at the end: the surge never became the baseline


def test_latency_spike_needs_avg_and_p99_above_twice_the_sla():
    series = windows(at={20: {"latency": 1400.0}})  # 7x the 200 ms baseline, 3.5x the 400 ms SLA
    found = latency_spike(series, CFG)
    assert [(a.window_start.minute, a.threshold, a.baseline) for a in found] == [(20, 800.0, 400.0)]
    assert latency_spike(windows(at={20: {"latency": 700.0}}), CFG) == []  # under 2 x SLA: not a spike


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


def test_burn_rate_needs_both_windows_burning():
    sustained = windows(n=120, at={m: {"error_rate": 0.25} for m in range(40, 120)})
    found = burn_rate(sustained, CFG)
    first = (found[0].window_start - T0) / timedelta(minutes=1)
    assert 40 < first < 120  # the long window needs time to catch up
    short = windows(n=120, at={m: {"error_rate": 0.25} for m in range(100, 103)})
    assert burn_rate(short, CFG) == []  # a three-minute blip does not burn the hour's budget


@pytest.mark.parametrize("ratio, level", [(1.2, "medium"), (2.0, "high"), (3.0, "critical"), (10, "critical")])
def test_severity_rule(ratio, level):
    assert severity(ratio) == level


def test_thresholds_come_from_the_config():
    series = windows(at={30: {"errors": 30}})  # 15 % of 200: a surge at k = 3, not at k = 8
    assert [a.window_start.minute for a in error_surge(series, CFG)] == [30]
    assert error_surge(series, DetectorConfig(error_surge_factor=8)) == []


# Services come from the data: one that no setting names is still watched by every detector.

@pytest.mark.parametrize("seed", range(10))
def test_clean_traffic_of_an_unconfigured_service_is_quiet(seed):
    assert detect_series(windows(n=60, service="inventory", seed=seed), CFG) == []


@pytest.mark.parametrize("latency, spike_minutes", [
    (1400.0, [30]),  # 7 x the ~200 ms average: far above twice its usual p99 (~300 ms)
    (500.0, []),     # 2.5 x the average, p99 750 ms: above its usual p99 but avg under twice it (600 ms)
])
def test_an_unconfigured_service_is_held_to_its_own_p99(latency, spike_minutes):
    found = latency_spike(windows(service="inventory", at={30: {"latency": latency}}), CFG)
    assert [a.window_start.minute for a in found] == spike_minutes
    for a in found:
        # windows() gives every window a p99 of 1.5 x its average of ~200 ms: the SLA it is held to.
        assert a.baseline == pytest.approx(300, rel=0.05) and a.threshold == pytest.approx(2 * a.baseline)


def test_an_unconfigured_service_has_no_latency_sla_before_it_has_a_history():
    # Its first four windows give no usual p99 yet (MIN_HISTORY is 5): a spike there is not judged.
    assert latency_spike(windows(n=4, service="inventory", at={3: {"latency": 5000.0}}), CFG) == []


@pytest.mark.parametrize("default_slo, burns", [
    (0.99, True),   # 25 % errors spend a 1 % budget 25 times as fast as allowed: above 14.4
    (0.9, False),   # the same errors against a 10 % budget burn 2.5: below 14.4
])
def test_burn_rate_holds_an_unconfigured_service_to_the_default_slo(default_slo, burns):
    sustained = windows(n=120, service="inventory", at={m: {"error_rate": 0.25} for m in range(40, 120)})
    found = burn_rate(sustained, DetectorConfig(default_slo_availability=default_slo))
    assert bool(found) == burns

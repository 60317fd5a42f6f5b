"""latency_spike (obslab.detect.latency): average and p99 above m x the SLA, or a service's own usual p99."""

import pytest

from obslab.detect.latency import latency_spike
from tests.detect.helpers import CFG, CFG_SLA, Traffic, anomalies_while_polled, windows


def test_latency_spike_needs_avg_and_p99_above_twice_the_sla():
    series = windows(at={20: {"latency": 1400.0}})  # 7x the 200 ms baseline, 3.5x the 400 ms SLA
    found = latency_spike(series, CFG_SLA)
    assert [(a.window_start.minute, a.threshold, a.baseline) for a in found] == [(20, 800.0, 400.0)]
    assert latency_spike(windows(at={20: {"latency": 700.0}}), CFG_SLA) == []  # under 2 x SLA: not a spike


# Services come from the data: one that no setting names is held to its own usual p99.

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


@pytest.mark.parametrize("mean, seed", [(30, 6), (30, 7), (300, 8)])
def test_open_windows_with_heavy_tailed_latency_are_quiet(mean, seed):
    # Lognormal latency with sigma 0.8 (p99 6 x the median): an open window's average of a few
    # dozen requests swings far more than a minute's, and it is judged as what it is.
    traffic = Traffic(mean, seed=seed, spread=0.8, lognormal=True)
    assert anomalies_while_polled(traffic) == []

"""detect_series and the detector registry (obslab.detect.detectors): all detectors over a series, quiet on
clean traffic and early on faults. Each detector's own tests are in the test file of its module."""

import pytest

from obslab.detect.detectors import DETECTORS, Detector, detect_series
from tests.detect.helpers import CFG, Traffic, anomalies_while_polled, first_detection, windows


@pytest.mark.parametrize("seed", range(20))
def test_clean_traffic_is_quiet(seed):
    assert detect_series(windows(n=60, seed=seed), CFG) == []  # no detector fires on normal traffic


# Services come from the data: one that no setting names is still watched by every detector.

@pytest.mark.parametrize("seed", range(10))
def test_clean_traffic_of_an_unconfigured_service_is_quiet(seed):
    assert detect_series(windows(n=60, service="inventory", seed=seed), CFG) == []


@pytest.mark.parametrize("mean, seed", [(20, 1), (20, 2), (20, 3), (200, 4), (60_000, 5)])
def test_clean_poisson_traffic_is_quiet_on_every_poll(mean, seed):
    # Poisson arrivals, 2 % errors, normal latency with a 30 % spread: from 20 requests a window
    # (where one window's average latency moves by 7 % and its error count is 0.4 +- 0.6) to
    # 60,000; every open window judged on every poll, 10 s apart.
    traffic = Traffic(mean, windows=90 if mean > 1000 else 120, seed=seed)
    assert anomalies_while_polled(traffic, step=1 / 3 if mean > 1000 else 1 / 6) == []


@pytest.mark.parametrize("mean, what, size, kind, within", [
    # an error surge from 2 % to 30 %: at 200 a window (3.3 a second) 25 s of it is 80 requests,
    # 24 failing, against 5 expected: far beyond chance, and found on the open window
    (200, "errors", 0.3, "errors", 0.5),
    # every request of an endpoint failing (an outage): found within the first 10 s of requests
    (60, "errors", 1.0, "errors", 0.34),
    # latency x 6 (a spike): the average of a dozen requests is beyond the noise of a dozen
    (200, "latency", 6.0, "latency", 0.34),
    (20_000, "errors", 0.2, "errors", 0.34),
])
def test_faults_are_found_early_on_the_open_window(mean, what, size, kind, within):
    start = 60.4  # 24 s into a window: not on a boundary
    traffic = Traffic(mean, windows=64, seed=13, faults=[(start, start + 3, what, size)])
    found = first_detection(traffic, start=55, kind=kind)
    assert found is not None
    at, anomaly = found
    assert anomaly.used_partial_window  # before its window was final
    assert at - start <= within  # in windows of 60 s: 0.5 = 30 s of event time


def test_every_detector_says_whether_open_windows_teach_it():
    from obslab.detect.run import config_from
    from obslab.settings import load_settings

    cfg = config_from(load_settings())
    for name, detector in DETECTORS.items():
        assert isinstance(detector(cfg), Detector) and detector(cfg).name == name, name
    assert DETECTORS["error_surge"](cfg).learns_from_open()  # nothing learned yet: open windows stand in for history
    assert DETECTORS["burn_rate"](cfg).learns_from_open()  # an open window counts in the spans after it
    assert not any(DETECTORS[n](cfg).learns_from_open() for n in ("latency_spike", "baseline_shift"))  # finals only

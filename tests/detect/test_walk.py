import json
from datetime import timedelta

import numpy as np
import pytest

from obslab.detect.detectors import DETECTORS, Window, detect_series
from obslab.detect.walk import SeriesMemory, walk
from tests.detect.helpers import CFG, CFG_SLA, SEASONAL_SERIES, T0, Traffic

# A rhythm with a fault of each kind: every detector has learned something by the middle.
FAULTY = Traffic(120, windows=150, seed=31, amplitude=0.5, period=30, lognormal=True,
                 faults=[(62.3, 66, "errors", 0.25), (88.5, 92, "latency", 2.5), (118.2, 122, "drop", 0.7)])


def seasonal(name):
    return [Window("svc", None, T0 + timedelta(minutes=k), T0 + timedelta(minutes=k + 1), n, max(n // 50, 0), 100.0,
                   150.0, True) for k, n in enumerate(SEASONAL_SERIES[name])]


@pytest.mark.parametrize("name", sorted(DETECTORS))
@pytest.mark.parametrize("series, half", [(FAULTY.finals(), 75), (FAULTY.finals(), 120), (FAULTY.seen_at(100.5), 90),
                                          (seasonal("cart, seed 594865952"), 30)])
def test_a_detector_rebuilt_from_its_snapshot_walks_on_as_if_never_stopped(name, series, half):
    # walk half, write the state down as JSON, read it back, walk the rest: as walking it whole
    whole = walk(DETECTORS[name](CFG_SLA), series)
    first = DETECTORS[name](CFG_SLA)
    found = [a for w in series[:half] for a in first.see(w, complete=True)]
    data = json.loads(json.dumps(first.snapshot(), allow_nan=False))  # plain JSON
    rebuilt = DETECTORS[name].from_snapshot(CFG_SLA, data)
    assert rebuilt.snapshot() == first.snapshot()
    rest = series[half:]
    found += [a for i, w in enumerate(rest) for a in rebuilt.see(w, complete=i + 1 < len(rest))]
    assert found == whole


def test_a_memory_is_the_callers_and_changes_no_result():
    # one memory per detection loop: polled views of a series give what walking each from scratch gives
    memory = SeriesMemory()
    for now in range(40, 150, 7):
        view = FAULTY.seen_at(now + 0.5)
        assert detect_series(view, CFG, memory=memory) == detect_series(view, CFG)
    assert len(memory) == 1
    assert len(SeriesMemory()) == 0  # nothing is kept per process


def test_remembering_the_walk_changes_no_result():
    # A detection loop's memory keeps what the detectors learned from a series' final windows
    # between runs; walking every view from scratch gives the same anomalies.
    traffic = Traffic(200, windows=50, seed=14, faults=[(40.4, 43, "errors", 0.3)])
    memory = SeriesMemory()
    for now in np.arange(30, 47, 1 / 6):
        view = traffic.seen_at(now)
        remembered = detect_series(view, CFG, memory=memory)
        assert detect_series(view, CFG) == remembered
    assert len(memory) == 1  # one series

"""Traffic drops judged on open windows whose time has passed (obslab.detect.traffic)."""

from datetime import timedelta

import numpy as np
import pytest

from obslab.detect.detectors import SeriesMemory, detect_series
from obslab.detect.run import run_detection
from tests.detect.test_detectors import CFG, T0, Traffic, anomalies_while_polled, first_detection
from tests.detect.test_run import MINUTE, incidents_of, lab, window
from tests.detect.test_run import T0 as RUN_T0

# A poll sees the last two windows open (the watermark) and the newest one filling up, so a drop
# judged on final windows only is found 2-3 windows after its first full window.


@pytest.mark.parametrize("mean, size, seed", [
    (200, 0.7, 31),  # 200 a window falling to 60: beyond doubt in one complete window
    (200, 0.5, 32),  # to 100
    (1000, 0.4, 33),  # to 600 of 1,000
])
def test_a_drop_is_found_on_its_complete_open_window_before_any_of_it_is_final(mean, size, seed):
    start = 60.4  # 24 s into a window
    traffic = Traffic(mean, windows=70, seed=seed, faults=[(start, start + 4, "drop", size)])
    found = first_detection(traffic, start=55, kind="traffic")
    assert found is not None
    at, anomaly = found
    assert anomaly.used_partial_window  # judged before the window was final
    # the first full window of the drop (61) has passed at 62: found by then, a trigger or two later
    assert at <= 62.2, at


@pytest.mark.parametrize("amplitude, seed", [(0.0, 41), (0.5, 42), (0.5, 43)])
def test_clean_traffic_pages_no_drop_on_any_poll(amplitude, seed):
    # every complete open window judged on every poll, 10 s apart, for an hour and a half
    traffic = Traffic(300, windows=100, seed=seed, amplitude=amplitude, period=30)
    assert [a for a in anomalies_while_polled(traffic, start=30) if a.kind == "traffic"] == []


def test_judging_open_windows_teaches_the_model_nothing():
    # The memory walks every poll's open windows on the detectors it keeps; what they learned
    # from the final windows must be what a walk of the final windows alone teaches.
    traffic = Traffic(200, windows=60, seed=44, faults=[(50.4, 53, "drop", 0.7)])
    memory = SeriesMemory()
    polls = np.arange(40, 57, 1 / 6)
    for now in polls:
        detect_series(traffic.seen_at(now), CFG, memory=memory)
    finals = [w for w in traffic.seen_at(polls[-1]) if w.is_final]
    alone = SeriesMemory()
    detect_series(finals, CFG, memory=alone)
    (kept,), (walked,) = memory._walked.values(), alone._walked.values()

    def traffic(detectors):
        (shift,) = [d for d in detectors if d.name == "baseline_shift"]
        learned = shift.traffic.snapshot()["model"]
        learned.pop("open_lows")  # the open low windows it saw last, no lesson
        return learned

    assert traffic(kept.detectors) == traffic(walked.detectors)


def test_a_service_gone_silent_is_an_outage_before_its_windows_are_final(tmp_path):
    settings, store = lab(tmp_path)
    history = [window(s, m) for s in ("checkout", "payments", "search") for m in range(40)]
    # minutes 40-42 are open (the watermark); search sent nothing in them, the others did
    others = [window(s, m, final=False) for s in ("checkout", "payments") for m in (40, 41, 42)]
    store.upsert("service_metrics", history + others)
    run_detection(store, settings, now=RUN_T0 + 42 * MINUTE + timedelta(seconds=30))
    (_, service, kind, status, opened, *_), = incidents_of(store, "search")
    assert (kind, status, opened) == ("traffic", "open", RUN_T0 + 40 * MINUTE)
    assert store.query("SELECT bool_and(used_partial_window) FROM anomalies WHERE service = 'search'") == [(True,)]

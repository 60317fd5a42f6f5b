"""Traffic drops (obslab.detect.traffic, the request-count half of baseline_shift): judged on open windows
whose time has passed, and counts against forecasts of rhythms, through flash crowds and silences."""

from datetime import timedelta

import numpy as np
import pytest

from obslab.detect.detectors import SeriesMemory, detect_series
from obslab.detect.run import run_detection
from obslab.detect.shift import BaselineShift, baseline_shift
from obslab.detect.traffic import TrafficModel
from obslab.detect.window import Window, step_of
from tests.detect.helpers import CFG, SEASONAL_SERIES, T0, Traffic, anomalies_while_polled, first_detection
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


# Counts against forecasts, on final windows: rhythms, flash crowds, noise and silences.


@pytest.mark.parametrize("mean, amplitude", [(200, 0.5), (20_000, 0.5), (20_000, 0.3)])
def test_a_daily_rhythm_is_not_a_traffic_drop(mean, amplitude):
    # A day compressed to 60 windows with traffic +-50 %: at its steepest the rate falls 5 % of
    # the mean per window, 35 Poisson standard deviations at 20,000 a window.
    traffic = Traffic(mean, windows=180, seed=9, amplitude=amplitude)
    assert [a for a in detect_series(traffic.finals(), CFG) if a.kind == "traffic"] == []


def test_a_flash_crowd_pages_nothing():
    # Traffic x3 for five windows with normal errors and latency, then back to normal: neither the
    # crowd nor the return to the usual level is an incident.
    traffic = Traffic(300, seed=10, rate={k: 3.0 for k in range(60, 65)})
    assert anomalies_while_polled(traffic, start=55) == []


@pytest.mark.parametrize("mean, flagged", [
    (20, False),      # 30 % of 20 is 6 requests: 1.3 Poisson standard deviations
    (20_000, True),   # 30 % of 20,000 is 6,000 requests: 42 Poisson standard deviations
])
def test_a_30_percent_drop_is_judged_by_the_count(mean, flagged):
    traffic = Traffic(mean, windows=80, seed=11, faults=[(60, 61, "drop", 0.3)])
    drops = [a for a in detect_series(traffic.finals(), CFG) if a.kind == "traffic"]
    assert [(a.window_start - T0) / timedelta(minutes=1) for a in drops] == ([60] if flagged else [])


@pytest.mark.parametrize("mean, size, at_least", [(60, 0.6, 6), (60, 0.5, 5), (200, 0.5, 7)])
def test_a_drop_on_a_rhythm_seen_twice_is_found(mean, size, at_least):
    # Traffic +-50 % on a 30-window cycle, Poisson arrivals, and half or more of it gone for three
    # windows, starting within a window, at various phases, after three cycles. The forecasts
    # that follow only the last dozen windows miss by several Poisson deviations at every turn,
    # so the noise they calibrate hides the drop (before the rhythm forecast: 1, 0 and 5 of 10
    # found); the rhythm forecast is off by about the Poisson noise alone. Not all are found: a
    # drop of half of 30 requests a window at the cycle's low is near what chance allows.
    found = 0
    for seed in range(10):
        start = 95.3 + 0.7 * seed
        traffic = Traffic(mean, windows=110, seed=100 + seed, amplitude=0.5, period=30,
                          faults=[(start, start + 3, "drop", size)])
        drops = [(a.window_start - T0) / timedelta(minutes=1) for a in detect_series(traffic.finals(), CFG)
                 if a.kind == "traffic"]
        assert all(start - 1 < t < start + 4 for t in drops)  # the drop's windows (and a low one just after it)
        found += bool(drops)
    assert found >= at_least


def test_the_noise_of_a_rhythm_is_that_of_the_forecast_that_follows_it():
    # Poisson arrivals on a 30-window cycle, five cycles: the rhythm forecast misses by about the
    # Poisson noise alone (phi near 1). The errors made before the rhythm was seen (a dozen times
    # the Poisson variance) do not count against it once it has a history of its own errors.
    traffic = Traffic(60, windows=150, seed=200, amplitude=0.5, period=30)
    walker = BaselineShift(CFG)
    for w in traffic.finals():
        walker.see(w)
    traffic = walker.traffic.model
    assert traffic.trend.chosen() == "rhythm"
    assert traffic.dispersion.estimate < 1.8 and traffic.dispersions["flat"].estimate > 5


@pytest.mark.parametrize("name", sorted(SEASONAL_SERIES))
def test_the_way_down_a_rhythm_after_a_restarted_forecast_is_not_a_drop(name):
    # After a restart the forecast comes from a few points, and so must its noise: the errors of
    # the forecast before it (with a long history) understate how far it misses. And a forecast
    # that does not follow the cycle, held over a gap, may be off by as much as the level moves in
    # that many windows (or by what its own forecasts from that far back missed, if more): one
    # calibrated at a peak holds while the level falls. (Before: each of these paged.)
    series = [Window("svc", None, T0 + timedelta(minutes=k), T0 + timedelta(minutes=k + 1), n, 0,
                     100.0, 150.0, True) for k, n in enumerate(SEASONAL_SERIES[name])]
    assert [a for a in baseline_shift(series, CFG) if a.metric == "request_count"] == []


def test_a_return_to_the_usual_level_is_no_flash_crowd_when_a_forecast_fell_below_it():
    # payments in the benchmark's `random` scenario (seed 2081890664): about 200 a minute, a drop at
    # minute 12, then the usual level again. The parabola, fitted through the drop, forecast 102,
    # then 80 and 55; 223 was 1.5 x that, so it was taken for a crowd, and so were the next four
    # windows, and the forecast and its noise started again (its noise, from 4 errors, then hid a
    # drop of 55 % for 4 minutes at minute 28). A crowd is 1.5 x the usual level, not x a forecast.
    counts = [181, 209, 197, 205, 218, 208, 212, 198, 181, 178, 189, 166, 96, 149, 223, 201, 197, 187, 207, 212]
    model = TrafficModel(CFG)
    for k, n in enumerate(counts):
        start = T0 + timedelta(minutes=k)
        model.judge(Window("payments", None, start, start + timedelta(minutes=1), n, 0, 100.0, 150.0, True), 1e-7)
        assert model.held_kind != "surge", k


def test_a_low_window_that_was_only_noise_joins_the_baseline_once_a_later_one_clears_it():
    # A window 3.5 Poisson deviations low is kept out while it might be the start of a drop; the
    # next window is normal, so it was noise, and the baseline keeps its low tail (left out, the
    # baseline would drift up and its noise shrink, and the next chance dip would page).
    counts = [400 + (7 if k % 2 else -7) for k in range(30)]
    model = TrafficModel(CFG)
    for k, n in enumerate(counts + [330, 402]):
        start = T0 + timedelta(minutes=k)
        model.judge(Window("payments", None, start, start + timedelta(minutes=1), n, 0, 100.0, 150.0, True), 1e-7)
        if k == 30:
            assert model.held and model.trend.last == step_of(Window(
                "payments", None, start - timedelta(minutes=1), start, 0, 0, 0.0, 0.0, True))
    assert 330 in [y for _, y in model.learned]
    # ... but a window that is low itself does not clear it: the second window of a drop that is a
    # little less low than the first taught the forecast the first (the drop hid itself)
    model = TrafficModel(CFG)
    for k, n in enumerate(counts + [330, 370]):  # 370: 1.5 deviations low
        start = T0 + timedelta(minutes=k)
        model.judge(Window("payments", None, start, start + timedelta(minutes=1), n, 0, 100.0, 150.0, True), 1e-7)
    assert 330 not in [y for _, y in model.learned]


def over_dispersed(seed, windows, mean, amplitude, period, cv, drop):
    """Requests per window: a rhythm, a gamma rate multiplier per window (coefficient of variation cv),
    Poisson arrivals, and a drop (start, windows, fraction gone) that may start inside a window."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi)
    start, length, size = drop
    out = []
    for k in range(windows):
        rate = mean * (1 + amplitude * np.sin(2 * np.pi * (k + 0.5) / period + phase)) * rng.gamma(1 / cv ** 2, cv ** 2)
        rate *= 1 - size * max(0.0, min(k + 1, start + length) - max(k, start))
        out.append(Window("svc", None, T0 + timedelta(minutes=k), T0 + timedelta(minutes=k + 1), int(rng.poisson(rate)),
                          0, 100.0, 150.0, True))
    return out


def test_a_drop_in_the_second_cycle_of_an_over_dispersed_rhythm_is_often_found():
    # 400 a window +-50 % on a 30-window cycle, the rate wandering 15 % from window to window (the
    # shipped `seasonal` traffic), and 60 % of it gone for 4 windows, 38-45 windows in: the rhythm
    # has been seen about once. Even a perfect forecast sees each window of it at 3-4 standard
    # deviations only, so not all are found; the drop's windows (and the one after) are the only
    # ones flagged. Before the rhythm was scored as it is now: none of 20.
    found = 0
    for seed in range(300, 320):
        start = 38.3 + seed % 7
        series = over_dispersed(seed, 60, 400, 0.5, 30, 0.15, (start, 4, 0.6))
        drops = [(a.window_start - T0) / timedelta(minutes=1) for a in baseline_shift(series, CFG)
                 if a.metric == "request_count"]
        assert all(start - 1 < t < start + 5 for t in drops)
        found += bool(drops)
    assert found >= 5


# Requests per minute of payments in evaluation runs of the shipped `seasonal` scenario (dev seeds):
# 60 % of its traffic is gone from 39:49 for 4 minutes, just past the second peak. Every one was
# missed before: the climbs out of the first trough were taken for flash crowds, and the forecast
# and its noise started again each time.
SEASONAL_DROPS = {
    65464049: [391, 517, 475, 483, 667, 565, 515, 504, 610, 478, 549, 622, 640, 396, 404, 424, 368, 288, 167, 237,
               218, 158, 185, 151, 174, 182, 272, 451, 429, 318, 430, 549, 366, 565, 492, 550, 718, 614, 579, 509,
               230, 153, 231, 179, 513, 351, 297, 385, 235, 223, 261, 183, 198, 176, 163, 267, 255, 256, 259, 459],
    144733215: [397, 398, 579, 481, 496, 403, 714, 602, 626, 587, 486, 588, 576, 545, 358, 286, 294, 282, 260, 189,
                184, 177, 216, 219, 201, 268, 256, 378, 392, 344, 398, 434, 548, 474, 522, 446, 486, 442, 613, 649,
                192, 194, 170, 275, 367, 362, 247, 272, 206, 259, 281, 148, 192, 222, 170, 247, 194, 428, 365, 372],
    203322465: [451, 425, 463, 505, 679, 592, 676, 508, 483, 834, 754, 489, 493, 373, 410, 555, 294, 373, 252, 264,
                268, 185, 161, 191, 181, 267, 249, 370, 330, 364, 463, 419, 497, 507, 535, 597, 706, 498, 651, 465,
                251, 175, 247, 224, 315, 380, 324, 326, 218, 269, 230, 234, 222, 226, 229, 187, 285, 314, 352, 418],
}


@pytest.mark.parametrize("seed", sorted(SEASONAL_DROPS))
def test_the_seasonal_scenarios_payments_drop_is_found(seed):
    series = [Window("payments", None, T0 + timedelta(minutes=k), T0 + timedelta(minutes=k + 1), n, 0, 100.0, 150.0,
                     True) for k, n in enumerate(SEASONAL_DROPS[seed])]
    drops = [(a.window_start - T0) / timedelta(minutes=1) for a in baseline_shift(series, CFG)
             if a.metric == "request_count"]
    assert drops and all(39 <= t <= 44 for t in drops)


@pytest.mark.parametrize("mean", [10, 20])
def test_a_quiet_service_that_goes_silent_is_an_outage_within_three_windows(mean):
    # One silent window of a 10-a-window service happens by chance once in e^10 = 22,000 windows:
    # too often to page on alone; two or three in a row do not.
    traffic = Traffic(mean, windows=80, seed=12, faults=[(60, 70, "drop", 1.0)])
    drops = [a for a in detect_series(traffic.finals(), CFG) if a.kind == "traffic"]
    assert drops and 60 <= (drops[0].window_start - T0) / timedelta(minutes=1) <= 62


# The warm-up: once a series has `min_history` windows, and before its forecasts have made errors
# enough to calibrate its noise, the spread of those windows about their level stands in for it.

@pytest.mark.slow
@pytest.mark.parametrize("mean, size, at_least", [(150, 0.8, 9), (400, 0.5, 8), (150, 0.6, 3)])  # of 12
def test_a_drop_in_the_warm_up_is_often_found_before_it_ends(mean, size, at_least):
    # Six windows of history, none of the forecasts' errors calibrated yet: the detectors before
    # the warm-up judgement found none of these. Six Poisson windows often look like a slope, and a
    # level that may be a slope is uncertain, so not every drop is sure; a deep one mostly is.
    start, found = 6.3, 0
    for seed in range(100, 112):
        traffic = Traffic(mean, windows=16, seed=seed, faults=[(start, start + 3, "drop", size)])
        model = TrafficModel(CFG)
        for w in traffic.finals()[:6]:
            model.judge(w, 1e-7)
        assert len(model.in_use) < CFG.min_calibration  # the warm-up: no errors of its own yet
        first = first_detection(traffic, start=1, kind="traffic")
        found += first is not None and first[0] < start + 3
    assert found >= at_least, found


@pytest.mark.parametrize("mean, amplitude, seed", [(30, 0.0, 61), (150, 0.0, 62), (1000, 0.0, 63),
                                                   (300, 0.5, 64), (300, 0.8, 65)])
def test_clean_traffic_pages_no_drop_from_its_first_window(mean, amplitude, seed):
    # polled every 10 s from the first window, rhythms of 30 windows among them (the warm-up on a
    # slope of the cycle: a flat level of six windows knows no slope, and must not call it a drop)
    traffic = Traffic(mean, windows=40, seed=seed, amplitude=amplitude, period=30)
    assert [a for a in anomalies_while_polled(traffic, start=1) if a.kind == "traffic"] == []


def test_low_windows_in_the_warm_up_that_are_no_sure_drop_join_the_history():
    # Before the noise is calibrated, low windows that add up to no sure drop are held for at most a
    # run (`drop_run`), then join the history: a level of a handful of windows is too little known
    # to hold a rhythm's way down back from it (which then looks like a drop that never ends).
    counts = [700, 580, 690, 520, 640, 610, 590, 400, 380, 360, 350]
    model = TrafficModel(CFG)
    for k, n in enumerate(counts):
        found = model.judge(Window("payments", None, T0 + timedelta(minutes=k), T0 + timedelta(minutes=k + 1), n, 0,
                                   100.0, 150.0, True), 1e-7)
        assert found == [] and len(model.held) < CFG.drop_run
    assert model.held == [] and [y for _, y in model.trend.points][-4:] == [400, 380, 360, 350]

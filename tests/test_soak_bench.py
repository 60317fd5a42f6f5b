"""The soak's decisions (bench/soak_plan.py): its seeded fault schedule, the scenario a restarted
generator continues with, the count check and a fault's recovery time. The soak itself runs for half
an hour (bench/soak.py); these run in milliseconds."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from soak_plan import FAULTS, continued_scenario, count_check, fault_schedule, generator_deaths, recovery_seconds  # noqa: E402,E501


def test_schedule_has_every_fault_once_apart_and_inside_the_soak():
    schedule = fault_schedule(seed=7, seconds=1800)
    assert sorted(f.kind for f in schedule) == sorted(FAULTS)  # each kind once
    assert schedule[0].at_s >= 240  # after the warm-up
    assert schedule[-1].end_s <= 1800 - 240  # before the tail
    for before, after in zip(schedule, schedule[1:]):
        assert after.at_s - before.end_s >= 60  # never two faults at once, a minute to settle between


def test_schedule_is_the_seeds():
    assert fault_schedule(seed=3, seconds=1800) == fault_schedule(seed=3, seconds=1800)
    assert fault_schedule(seed=3, seconds=1800) != fault_schedule(seed=4, seconds=1800)


@pytest.mark.parametrize("kinds, seconds, message", [
    (["kill:stream", "no_such_fault"], 1800, "unknown fault kind"),  # a typo in --faults
    (None, 600, "make it longer"),  # ten faults do not fit in 10 minutes
])
def test_schedule_refuses_what_it_cannot_do(kinds, seconds, message):
    with pytest.raises(ValueError, match=message):
        fault_schedule(seed=1, seconds=seconds, kinds=kinds)


def test_restarted_generator_keeps_the_faults_still_to_come_at_their_moments():
    scenario = {"name": "soak", "duration_seconds": 2000, "faults": [
        {"type": "error_surge", "service": "payments", "start_seconds": 150, "duration_seconds": 120},
        {"type": "latency_spike", "service": "checkout", "start_seconds": 450, "duration_seconds": 120},
        {"type": "error_surge", "service": "checkout", "start_seconds": 750, "duration_seconds": 120}]}
    rest = continued_scenario(scenario, elapsed_s=200, name="soak-1")
    # the surge under way at 200 s is not resumed; 450 s and 750 s come 250 s and 550 s after the restart
    assert [(f["service"], f["start_seconds"]) for f in rest["faults"]] == [("checkout", 250), ("checkout", 550)]
    assert rest["duration_seconds"] == 1800
    assert scenario["faults"][1]["start_seconds"] == 450  # the original is left as it was


@pytest.mark.parametrize("acked, requests, dead, lost, double, ok", [
    (1000, 990, 10, 0, 0, True),  # every event in a window or a dead letter
    (1000, 980, 10, 10, 0, False),  # ten acknowledged events counted nowhere
    (1000, 1000, 5, 0, 5, False),  # five counted twice
])
def test_count_check(acked, requests, dead, lost, double, ok):
    check = count_check(acked, requests, dead)
    assert (check["lost"], check["double"], check["ok"]) == (lost, double, ok)


def test_recovery_needs_newer_fresh_windows_and_the_stage_back_with_a_new_pid():
    # t - freshness_s is the newest window end a sample saw
    samples = [
        {"t": 100.0, "freshness_s": 10.0, "pids": {"stream": 11}},  # before the fault: newest end 90
        {"t": 105.0, "freshness_s": 15.0, "pids": {"stream": None}},  # killed: still 90
        {"t": 110.0, "freshness_s": None, "pids": {"stream": 12}},  # store busy: no reading
        {"t": 115.0, "freshness_s": 25.0, "pids": {"stream": 12}},  # back, but no newer window (90)
        {"t": 120.0, "freshness_s": 300.0, "pids": {"stream": 12}},  # a reading far too stale
        {"t": 125.0, "freshness_s": -20.0, "pids": {"stream": 12}},  # a new (open) window ending at 145
    ]
    assert recovery_seconds(samples, since=104.0, bound_s=60, stage="stream", old_pid=11) == 21.0
    assert recovery_seconds(samples, since=104.0, bound_s=60, stage="stream", old_pid=12) is None  # never a new pid
    assert recovery_seconds(samples, since=104.0, bound_s=-30) is None  # never that fresh


def test_generator_deaths_are_where_its_pid_goes_or_changes():
    pids = [None, 5, 5, None, None, 6, 7]  # started, killed, restarted, replaced
    samples = [{"t": float(i), "pids": {"generate": p}} for i, p in enumerate(pids)]
    assert generator_deaths(samples) == [3.0, 6.0]

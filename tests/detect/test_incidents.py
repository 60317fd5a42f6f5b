from dataclasses import replace
from datetime import timedelta

import pytest

from obslab.detect.detectors import Anomaly, DetectorConfig, detect_series
from obslab.detect.incidents import Incident, assign_incidents, build_incidents
from tests.detect.test_detectors import T0, windows

CFG = DetectorConfig()


def anomalies(series):
    return detect_series(series, CFG)


def test_adjacent_anomalous_windows_form_one_incident_that_resolves():
    series = windows(n=50, at={m: {"error_rate": 0.3} for m in range(20, 24)})
    found = anomalies(series)
    incidents, membership = build_incidents(found, series[-1].window_end, 60, 3)
    assert len(incidents) == 1
    i = incidents[0]
    assert (i.service, i.kind, i.status) == ("payments", "errors", "resolved")
    assert i.opened_at == T0 + timedelta(minutes=20) and i.last_anomaly_at == T0 + timedelta(minutes=24)
    assert i.resolved_at == T0 + timedelta(minutes=27)  # after three clean windows
    assert set(membership.values()) == {i.incident_id} and len(membership) == len(found)


def test_an_incident_stays_open_until_enough_clean_windows_have_passed():
    series = windows(n=26, at={m: {"error_rate": 0.3} for m in range(20, 24)})
    incidents, _ = build_incidents(anomalies(series), series[-1].window_end, 60, 3)
    assert [i.status for i in incidents] == ["open"]  # only two clean windows so far


def test_separate_bursts_are_separate_incidents_and_kinds_do_not_mix():
    surge = {m: {"error_rate": 0.3} for m in (10, 11, 30, 31)}
    surge[45] = {"latency": 2000.0}
    series = windows(n=60, at=surge)
    incidents, _ = build_incidents(anomalies(series), series[-1].window_end, 60, 3)
    assert [(i.kind, i.opened_at.minute) for i in incidents] == [("errors", 10), ("errors", 30), ("latency", 45)]


def test_rebuilding_gives_the_same_incidents():
    series = windows(n=60, at={m: {"error_rate": 0.3} for m in range(20, 30)})
    first = build_incidents(anomalies(series), series[-1].window_end, 60, 3)
    assert build_incidents(anomalies(series), series[-1].window_end, 60, 3) == first


# Incidents are stored state: what the store already holds decides where a new anomaly goes.

MINUTE = timedelta(minutes=1)


def error_anomaly(minute, severity="high"):
    start = T0 + minute * MINUTE
    return Anomaly("error_surge", "payments", None, "error_rate", 0.3, 0.02, 0.06, start, start + MINUTE, 200,
                   severity, False)


def stored(opened, last, count, status="open"):
    """A payments error incident as the store holds it, its first and last window given in minutes."""
    return Incident(f"payments:errors:opened-{opened}", "payments", "errors", status, T0 + opened * MINUTE,
                    T0 + last * MINUTE, T0 + (last + 3) * MINUTE if status == "resolved" else None, "high", count,
                    "error_surge", "")


@pytest.mark.parametrize("known, minute, latest_final, joins, expected", [
    # open since minute 0 with 100 anomalies, their windows long gone from any lookback: the next
    # window's anomaly joins it, and the count goes on from 100
    (stored(0, 200, 100), 200, 199, True, dict(opened=0, last=201, count=101, status="open")),
    # an anomaly raised late (its window fired only once final), one window before the first one
    (stored(41, 42, 1), 40, 41, True, dict(opened=40, last=42, count=2, status="open")),
    # open, last anomaly at minute 10, windows up to 12 final: the clean tail has not passed, so a
    # new anomaly at minute 14 (on an open window) still belongs to it
    (stored(5, 10, 5), 14, 12, True, dict(opened=5, last=15, count=6, status="open")),
    # resolved at minute 13 (3 clean final windows after 10); a late anomaly at 12, in that tail,
    # reopens it
    (stored(5, 10, 5, "resolved"), 12, 14, True, dict(opened=5, last=13, count=6, status="open")),
    # resolved, and the anomaly comes after its tail: a new incident
    (stored(5, 10, 5, "resolved"), 20, 21, False, dict(opened=20, last=21, count=1, status="open")),
])
def test_a_new_anomaly_finds_its_incident(known, minute, latest_final, joins, expected):
    a = error_anomaly(minute)
    incidents, membership = assign_incidents([a], {}, [known], T0 + latest_final * MINUTE, 60, 3)
    home = next(i for i in incidents if i.incident_id == membership[a.anomaly_id])
    assert (home.incident_id == known.incident_id) == joins
    assert len(incidents) == (1 if joins else 2)
    assert (home.opened_at, home.last_anomaly_at, home.anomaly_count, home.status) == (
        T0 + expected["opened"] * MINUTE, T0 + expected["last"] * MINUTE, expected["count"], expected["status"])


def test_an_anomaly_already_in_an_incident_is_not_counted_again_and_updates_its_severity():
    known = stored(0, 5, 5)
    a = error_anomaly(4, severity="critical")  # re-found with stronger evidence as its window filled
    incidents, _ = assign_incidents([a], {a.anomaly_id: known.incident_id}, [known], T0 + 4 * MINUTE, 60, 3)
    assert incidents == [replace(known, severity="critical")]


def test_an_open_incident_resolves_without_new_anomalies_once_its_tail_is_final():
    # Nothing in the lookback any more, but the store knows it is open: it resolves by the same rule.
    incidents, _ = assign_incidents([], {}, [stored(0, 10, 3)], T0 + 13 * MINUTE, 60, 3)
    assert [(i.status, i.resolved_at) for i in incidents] == [("resolved", T0 + 13 * MINUTE)]

from datetime import timedelta

from obslab.detect.detectors import DetectorConfig, detect_series
from obslab.detect.incidents import build_incidents
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

from dataclasses import replace
from datetime import timedelta

import pytest

from obslab.detect.detectors import Anomaly, DetectorConfig, detect_series
from obslab.detect.incidents import Incident, assign_incidents, build_incidents, relate_incidents
from tests.detect.helpers import T0, windows

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
    # open, last anomaly window ending at minute 10, windows up to 12 final: an anomaly at minute 12
    # (two clean windows after it) still belongs to it
    (stored(5, 10, 5), 12, 12, True, dict(opened=5, last=13, count=6, status="open")),
    # ... but one at minute 13 comes after three clean windows, the resolve gap: a new incident, although
    # the tail is not final yet (the service was back to normal; this is another fault)
    (stored(5, 10, 5), 13, 12, False, dict(opened=13, last=14, count=1, status="open")),
    # ... and so does one at minute 14, on an open window
    (stored(5, 10, 5), 14, 12, False, dict(opened=14, last=15, count=1, status="open")),
    # a late anomaly just before the incident's first window (within the gap) joins it
    (stored(41, 45, 4), 38, 44, True, dict(opened=38, last=45, count=5, status="open")),
    # ... but one a whole gap before it (window 37-38, three clean windows before 41) does not
    (stored(41, 45, 4), 37, 44, False, dict(opened=37, last=38, count=1, status="resolved")),
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


# Cascades: incidents on different services that overlap and opened close together.

def incident(service, kind, opened, last, status="resolved"):
    """An incident of `service` whose first window starts at minute `opened` and whose last ends at `last`."""
    resolved = T0 + (last + 3) * MINUTE if status == "resolved" else None
    return Incident(f"{service}:{kind}:{opened}", service, kind, status, T0 + opened * MINUTE, T0 + last * MINUTE,
                    resolved, "high", last - opened, "error_surge", "")


def related(incidents):
    return {i.incident_id: (i.origin_service, i.origin_reason, i.related_incidents) for i in incidents}


def test_a_declared_callee_that_deviated_with_its_caller_is_the_origin():
    payments, checkout = incident("payments", "errors", 10, 14), incident("checkout", "errors", 10, 13)
    out = relate_incidents([checkout, payments], {"checkout": {"payments"}}, 60, 2)
    assert related(out) == {
        checkout.incident_id: ("payments", "checkout calls payments", payments.incident_id),
        payments.incident_id: ("payments", "checkout calls payments", checkout.incident_id)}


def test_the_callee_is_the_origin_even_when_its_caller_was_detected_first():
    # checkout's incident opened a window before payments' (the effect crossed into checkout's
    # window first): the callee deviated within a window after its caller, so it is the origin.
    out = relate_incidents([incident("checkout", "latency", 9, 13), incident("payments", "latency", 10, 13)],
                           {"checkout": {"payments"}}, 60, 2)
    assert {i.origin_service for i in out} == {"payments"}


def test_services_the_catalogue_does_not_link_are_never_related():
    # Two overlapping incidents that opened in the same window, with no declared call between them
    # (or no catalogue at all): two independent faults as far as anyone knows; neither names an origin.
    for calls in ({}, {"checkout": {"payments"}}):
        out = relate_incidents([incident("search", "latency", 10, 14), incident("checkout", "errors", 10, 14)],
                               calls, 60, 2)
        assert all((i.origin_service, i.related_incidents) == (None, None) for i in out)


def test_a_callee_that_deviated_more_than_a_window_after_its_caller_did_not_start_it():
    late = relate_incidents([incident("checkout", "errors", 10, 16), incident("payments", "errors", 12, 16)],
                            {"checkout": {"payments"}}, 60, 2)
    assert {(i.origin_service, i.origin_reason) for i in late} == {("checkout", "first to deviate")}


def test_first_detection_breaks_a_tie_in_the_same_window():
    # checkout and search both call payments, which deviated two windows after them: not the origin.
    # checkout and search deviated in the same window; checkout was detected first.
    a, b = incident("search", "errors", 10, 13), incident("checkout", "errors", 10, 13)
    c = incident("payments", "errors", 12, 15)
    calls = {"checkout": {"payments"}, "search": {"payments"}}
    seen = {a.incident_id: T0 + 10 * MINUTE + timedelta(seconds=40),  # search detected 40 s into the window
            b.incident_id: T0 + 10 * MINUTE + timedelta(seconds=25)}  # checkout 25 s into it
    assert {(i.origin_service, i.origin_reason) for i in relate_incidents([a, b, c], calls, 60, 2, seen)} == {
        ("checkout", "first to deviate")}
    seen[a.incident_id] -= timedelta(seconds=20)  # now search was detected first
    assert {i.origin_service for i in relate_incidents([a, b, c], calls, 60, 2, seen)} == {"search"}


def test_dependencies_are_followed_through_services_in_between():
    # search calls checkout, which calls payments; only search and payments have incidents
    out = relate_incidents([incident("search", "errors", 10, 13), incident("payments", "errors", 10, 13)],
                           {"search": {"checkout"}, "checkout": {"payments"}}, 60, 2)
    assert {(i.origin_service, i.origin_reason) for i in out} == {
        ("payments", "search calls checkout, which calls payments")}


@pytest.mark.parametrize("incidents", [
    [incident("payments", "errors", 10, 14)],  # alone
    [incident("payments", "errors", 10, 14), incident("payments", "latency", 10, 14)],  # one service, two kinds
    [incident("payments", "errors", 10, 20), incident("checkout", "errors", 14, 20)],  # opened 4 windows apart
    [incident("payments", "errors", 10, 12), incident("checkout", "errors", 12, 14)],  # one ended as the other began
])
def test_an_incident_that_stands_alone_has_no_origin(incidents):
    out = relate_incidents(incidents, {"checkout": {"payments"}}, 60, 2)
    assert all((i.origin_service, i.origin_reason, i.related_incidents) == (None, None, None) for i in out)


def test_the_cascade_grows_and_every_member_is_updated():
    payments, checkout = incident("payments", "errors", 10, 14, "open"), incident("checkout", "errors", 10, 14, "open")
    first = relate_incidents([payments, checkout], {"checkout": {"payments"}, "search": {"checkout"}}, 60, 2)
    search = incident("search", "errors", 11, 14, "open")
    grown = relate_incidents(first + [search], {"checkout": {"payments"}, "search": {"checkout"}}, 60, 2)
    ids = {i.incident_id for i in grown}
    for i in grown:
        assert i.origin_service == "payments"
        assert set(i.related_incidents.split(",")) == ids - {i.incident_id}
    # assign_incidents keeps what relate_incidents stored: a new anomaly of payments changes only
    # its counts, not its cascade.
    home, _ = assign_incidents([error_anomaly(14)], {}, grown, T0 + 14 * MINUTE, 60, 3)
    stored = next(i for i in home if i.service == "payments")
    assert (stored.origin_service, stored.related_incidents) == ("payments", next(
        i.related_incidents for i in grown if i.service == "payments"))


def test_a_cascade_with_members_out_of_play_keeps_what_is_stored():
    # checkout's incident was related to one that has left the detector's lookback: it cannot be
    # recomputed whole, so it keeps its stored origin instead of being called alone.
    checkout = replace(incident("checkout", "errors", 10, 200, "open"), origin_service="payments",
                       origin_reason="checkout calls payments", related_incidents="payments:errors:10")
    assert relate_incidents([checkout], {"checkout": {"payments"}}, 60, 2) == [checkout]

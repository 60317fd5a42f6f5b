"""The built-in services a scenario without `services:` runs, and the codes of normal responses."""

from obslab.generator.profiles import BUILT_IN, ERROR_CODES, LATENCY_FLOOR_MS, OK_CODES


def test_the_three_built_in_services_are_the_lab_s():
    assert sorted(BUILT_IN) == ["checkout", "payments", "search"]
    for name, profile in BUILT_IN.items():
        assert profile.name == name
        assert len(profile.endpoints) == 3 and all(e.startswith("/api/") for e in profile.endpoints)
        assert profile.latency_ms > LATENCY_FLOOR_MS  # the floor clips only the fast tail
        assert profile.sla_ms > profile.latency_ms  # a normal request meets its SLA
        assert 0 < profile.error_rate < 1 and 0 < profile.slo_availability < 1
    endpoints = [e for p in BUILT_IN.values() for e in p.endpoints]
    assert len(endpoints) == len(set(endpoints))  # each endpoint belongs to one service


def test_payments_fails_most_and_search_least():
    # a third party's card network fails more than a cached read-only search
    rates = {name: p.error_rate for name, p in BUILT_IN.items()}
    assert rates["search"] < rates["checkout"] < rates["payments"]


def test_response_codes_are_errors_or_successes_never_both():
    assert all(code >= 400 for code in ERROR_CODES) and all(200 <= code < 300 for code in OK_CODES)

"""The dashboard and its URL's query parameters (issue 26, item 2): the app reads none (no st.query_params; its
filters are widgets), so a hostile URL (?services=<script>, ?refresh=-1, huge or unicode values, repeated keys)
changes nothing: the app runs without exception and shows what it shows without them."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from streamlit.testing.v1 import AppTest

from obslab.store import Store
from tests.fuzzing import examples

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
# The widgets' keys, the names a URL would most likely try, and any other name.
KEYS = st.sampled_from(["services", "range", "metric", "refresh", "service", "since", "tab", "store", "duckdb_path"]) \
    | st.text(min_size=1, max_size=20)
VALUES = st.sampled_from(["", "-1", "0", "1e308", "NaN", "<script>alert(1)</script>", "**bold**", "checkout",
                          "everything", "../../etc/passwd", "'; DROP TABLE service_metrics; --", "é" * 10_000]) \
    | st.text(max_size=50)


def test_the_dashboard_reads_no_query_parameters():
    # If it starts to, each one it reads needs its check here (a clear message for a bad value, no traceback).
    assert "query_params" not in APP.read_text() and "experimental_get_query" not in APP.read_text()


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("dash") / "s.duckdb")
    store.migrate()
    store.upsert("service_metrics", [
        {"service": service, "window_start": T0 + timedelta(minutes=m), "window_end": T0 + timedelta(minutes=m + 1),
         "request_count": 60, "error_count": 0, "error_rate": 0.0, "avg_latency_ms": 50.0, "p50_latency_ms": 40.0,
         "p95_latency_ms": 90.0, "p99_latency_ms": 120.0, "is_final": m == 0, "updated_at": T0}
        for service in ("checkout", "search") for m in range(2)])
    return store


def _shown(at) -> list:
    """The services' metrics (not "Data freshness": it follows the clock)."""
    return sorted((m.label, m.value) for m in at.metric if " · " in m.label)


@pytest.fixture(scope="module")
def plain(small_store):
    """What the app shows on the store without query parameters."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DUCKDB_PATH", str(small_store.path))
        mp.setenv("STORE_LOCK_TIMEOUT_SECONDS", "1")
        at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert [label for label, _ in _shown(at)] == ["checkout · healthy", "search · healthy"]
    return _shown(at)


@pytest.mark.fuzz
@settings(max_examples=examples(4), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
@given(params=st.dictionaries(KEYS, VALUES | st.lists(VALUES, min_size=2, max_size=3), min_size=1, max_size=4))
def test_hostile_query_parameters_change_nothing(small_store, plain, monkeypatch, params):
    monkeypatch.setenv("DUCKDB_PATH", str(small_store.path))
    monkeypatch.setenv("STORE_LOCK_TIMEOUT_SECONDS", "1")
    hostile = AppTest.from_file(str(APP), default_timeout=60)
    hostile.query_params.update(params)
    hostile.run()
    assert not hostile.exception, hostile.exception
    assert _shown(hostile) == plain  # the same services and numbers

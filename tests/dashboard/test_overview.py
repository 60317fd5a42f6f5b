"""views.overview: requests per second over the time a window has covered (a real DuckDB file)."""

from datetime import datetime, timedelta, timezone

import pytest

from obslab import views
from obslab.store import Store

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def _window(service: str, minute: int, requests: int, final: bool) -> dict:
    start = T0 + timedelta(minutes=minute)
    return {"service": service, "window_start": start, "window_end": start + timedelta(minutes=1),
            "request_count": requests, "error_count": 0, "error_rate": 0.0, "avg_latency_ms": 50.0,
            "p50_latency_ms": 40.0, "p95_latency_ms": 90.0, "p99_latency_ms": 120.0, "is_final": final,
            "updated_at": T0}


@pytest.mark.parametrize(
    "seen, windows, rate, minute, basis",
    [
        # a final window covered its whole 60 s: 120 / 60
        (timedelta(minutes=7), [(5, 120, True)], 2.0, 5, "final window: 120 requests over its 60 s"),
        # the stream has seen 20 s of the open window: 100 / 20 (it was 100 / 60 = 1.7 before)
        (timedelta(minutes=5, seconds=20), [(4, 240, True), (5, 100, False)], 5.0, 5,
         "open window: 100 requests over the 20 s of its 60 s seen so far"),
        # not final yet (the watermark lags), but events past its end were seen: all 60 s covered, 300 / 60
        (timedelta(minutes=6, seconds=30), [(5, 300, False)], 5.0, 5, "open window, its whole 60 s seen"),
        # half a second of the newest window is too little for a rate: the one before, 240 / 60
        (timedelta(minutes=5, milliseconds=500), [(4, 240, False), (5, 3, False)], 4.0, 4,
         "open window, its whole 60 s seen"),
        # no stream progress in the store (not written by the stream): the whole length, and it says so
        (None, [(5, 120, False)], 2.0, 5, "(the time it covered is not recorded)"),
    ],
)
def test_requests_per_second_divide_by_the_time_the_window_covered(tmp_path, seen, windows, rate, minute, basis):
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    store.upsert("service_metrics", [_window("checkout", m, n, final) for m, n, final in windows])
    if seen is not None:
        store.upsert("stream_state", [{"query_id": "q", "max_event_time": T0 + seen, "watermark": T0,
                                       "window_seconds": 60, "updated_at": T0}])
    [row] = views.overview(store, ["checkout"]).itertuples()
    assert row.requests_per_second == pytest.approx(rate)
    assert row.window_start == T0 + timedelta(minutes=minute)
    assert basis in row.rate_basis


def test_the_services_are_the_store_s(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    assert views.services(store) == []
    store.upsert("service_metrics", [_window("inventory", 0, 10, True), _window("checkout", 0, 10, True)])
    store.upsert("injected_incidents", [{"run_id": "r", "fault_id": "f1", "scenario": "s", "fault_type": "traffic_drop",
                                         "service": "ledger", "start_time": T0, "magnitude": 1.0}])
    # windows and ground truth name services; a silent service with a fault still gets a filter entry
    assert views.services(store) == ["checkout", "inventory", "ledger"]

"""A fault in the real shop, end to end: the shop's services under Locust's load -> OTLP -> the built
Collector -> the real broker -> the stream (STREAM_SOURCE=spans) -> windows in DuckDB -> detection
-> an incident on payment -> the narrator's summary, with the fault's ground truth in the store.

Ten-second windows (watermark 20 s) keep it to a few minutes: the detectors count in windows, so six
clean windows of history are a minute here instead of six. The stream runs `available_now` in a
loop between the other steps, as one process would run them one after the other."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import timedelta

import pytest

from conftest import free_port
from obslab.broker import LocalBroker
from obslab.demo_otel import load_command, warmed_up
from obslab.detect.detectors import SeriesMemory
from obslab.detect.run import run_detection
from obslab.lab import Lab
from obslab.narrate.run import narrate_pending
from obslab.otel.collector import LocalCollector, build
from obslab.shop.faults import switch_on
from obslab.shop.run import Shop
from obslab.shop.topology import SERVICES
from obslab.stream.job import run_stream_job
from tests.otel.test_collector import _collector_lab

WINDOW_S = 10
SURGE = 0.5  # half of payment's charges answer 500 (and the frontend's checkouts 502)
FAULT_S = 90  # the surge lasts this long
WARM_UP_BOUND_S = 420  # bounds on a busy machine, not measurements
DETECT_BOUND_S = 300
INCIDENT_COLUMNS = "incident_id, service, kind, opened_at, detectors, origin_service, related_incidents"


def _ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(SERVICES):
        ports = {s: free_port() for s in SERVICES}
    return ports


def _until(done, bound_s: float, what: str, step) -> None:
    """Run `step()` until `done()` holds; fail saying `what()` once `bound_s` has passed."""
    deadline = time.monotonic() + bound_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(what())
        step()


@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.slow
def test_a_payment_surge_in_the_shop_becomes_a_narrated_incident_on_payment(broker, spark, lab_settings, tmp_path):
    settings = _collector_lab(lab_settings, tmp_path, "shop_incident_spans").model_copy(update={
        "stream_source": "spans", "duckdb_path": tmp_path / "observability.duckdb", "checkpoint_name": "shop-incident",
        "window_seconds": WINDOW_S, "watermark_seconds": 2 * WINDOW_S, "future_tolerance_seconds": 2 * WINDOW_S,
        "trigger_seconds": 2.0, "narrator_backend": "template"})
    LocalBroker(settings).ensure_topics()
    collector = LocalCollector(settings, binary=build(settings))  # cached after `make otelcol`
    store = Lab(settings).store
    shop = Shop(settings, _ports())
    load = None
    try:
        collector.start()
        run_id = shop.start(store).run_id
        with (settings.logs_dir / "shop-locust.log").open("ab") as out:  # 10 requests/s until stopped
            load = subprocess.Popen(load_command(shop), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        memory = SeriesMemory()  # one detection loop, as `obslab detect` runs it

        def step() -> None:
            run_stream_job(settings, available_now=True, spark=spark, store=store)
            run_detection(store, settings, memory=memory)

        def counted() -> str:
            return str(store.query("SELECT service, count(*), sum(request_count), sum(error_count) "
                                   "FROM service_metrics WHERE is_final GROUP BY 1 ORDER BY 1"))

        # Clean history first: WARM_UP_WINDOWS final windows of every service, as `make demo-otel` waits for.
        _until(lambda: warmed_up(store), WARM_UP_BOUND_S,
               lambda: f"no warm-up within {WARM_UP_BOUND_S} s; final windows so far: {counted()}", step)
        clean = store.query(f"SELECT {INCIDENT_COLUMNS} FROM incidents")
        fault = switch_on(shop.flags, store, "payment", "error_surge", FAULT_S, size=SURGE)
        found: list[tuple] = []

        def detect() -> None:
            step()
            found[:] = store.query(f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE service = 'payment' "
                                   "AND kind = 'errors' AND opened_at >= ?", [fault.start - timedelta(seconds=WINDOW_S)])

        _until(lambda: bool(found), DETECT_BOUND_S,
               lambda: f"no errors incident on payment within {DETECT_BOUND_S} s of the surge; windows: {counted()}; "
                       f"incidents: {store.query(f'SELECT {INCIDENT_COLUMNS} FROM incidents')}", detect)
        narrated = narrate_pending(store, Lab(settings).narrator, settings)
    finally:
        if load is not None:
            os.killpg(load.pid, signal.SIGTERM)
            load.wait(timeout=60)
        shop.stop()
        collector.stop()

    print(f"\nbefore the surge: {clean}\nsurge at {fault.start:%H:%M:%S}: {found}")
    assert not [i for i in clean if i[1] == "payment" and i[2] == "errors"]  # the shop makes no errors of its own
    [(incident_id, _, _, _, detectors, origin, related)] = found
    assert "error_surge" in detectors.split(","), detectors
    assert origin in (None, "payment")  # alone, or the origin of a cascade
    # The other incidents of its cascade (the frontend's failed checkouts) name payment, which it calls, the origin.
    cascade = store.query("SELECT service, origin_service FROM incidents WHERE list_contains(string_split(?, ','), "
                          "incident_id)", [related or ""])
    assert all(other_origin == "payment" for _, other_origin in cascade), cascade

    [(title, summary, grounded, backend)] = store.query(
        "SELECT title, summary, grounded, backend FROM incident_summaries WHERE incident_id = ?", [incident_id])
    assert incident_id in {n.row["incident_id"] for n in narrated}
    assert grounded and backend == "template" and "payment" in f"{title} {summary}", (title, summary)

    truth = store.query("SELECT run_id, fault_id, scenario, fault_type, service, magnitude, root_cause, start_time "
                        "FROM injected_incidents")
    assert truth == [(run_id, fault.fault_id, "shop", "error_surge", "payment", SURGE, "payment", fault.start)]

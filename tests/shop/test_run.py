"""The shop's processes: refused starts and stale pid files (fast), and the whole shop as real
processes under Locust's load with a fault switched on (slow)."""

from __future__ import annotations

import os
import socket

import httpx
import psutil
import pytest

from conftest import free_port
from obslab.errors import PortInUseError
from obslab.processes import process_alive
from obslab.settings import load_settings
from obslab.shop.faults import switch_on
from obslab.shop.run import Shop, ShopError, _load_result, otlp_traces_url
from obslab.shop.topology import DEFAULT_PORTS, SERVICES
from obslab.store import Store

CHECKOUTS = 120  # under a 0.5 surge the failed share is 0.5 +- 0.046 (one sd): the bounds are 4 sd wide
SURGE = 0.5


@pytest.fixture()
def settings(tmp_path):
    # A port nothing listens on: no Collector, so the services' exporters fail (quietly) to send.
    return load_settings(data_dir=tmp_path, duckdb_path=tmp_path / "observability.duckdb",
                         otlp_http_port=free_port())


@pytest.fixture()
def store(settings):
    store = Store.from_settings(settings)
    store.migrate()
    return store


def _free_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(SERVICES):
        ports = {s: free_port() for s in SERVICES}
    return ports


def test_a_shop_never_started_is_not_running(settings):
    shop = Shop(settings)
    status = shop.status()
    assert not status.running and status.run_id is None
    assert [s.pid for s in status.services] == [None, None, None]
    assert shop.stop() == "the shop is not running"


def test_a_taken_port_refuses_the_start_before_anything_runs(settings, store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        shop = Shop(settings, {**_free_ports(), "cart": port})
        with pytest.raises(PortInUseError, match="--cart-port"):
            shop.start(store)
    assert not shop.dir.exists() or not list(shop.dir.glob("*.pid"))
    assert store.count("service_catalog") == 0  # no run began


def test_a_pid_file_of_another_process_is_stale(settings):
    shop = Shop(settings)
    shop.dir.mkdir(parents=True)
    (shop.dir / "cart.pid").write_text(f"{os.getpid()}\n")  # this test process: alive, not a shop service
    assert shop.pid("cart") is None


def test_ports_given_win_over_those_of_the_running_shop_which_win_over_the_defaults(settings):
    shop = Shop(settings)
    assert shop.ports == DEFAULT_PORTS
    shop.dir.mkdir(parents=True)
    shop.ports_file.write_text('{"frontend": 9001, "cart": 9002, "payment": 9003}')
    assert Shop(settings).ports == {"frontend": 9001, "cart": 9002, "payment": 9003}
    assert Shop(settings, {"cart": 9100}).url("cart") == "http://127.0.0.1:9100"


def test_spans_go_to_the_collectors_otlp_http_port(tmp_path):
    settings = load_settings(data_dir=tmp_path, otel_host="127.0.0.1", otlp_http_port=4999)
    assert otlp_traces_url(settings) == "http://127.0.0.1:4999/v1/traces"


def test_locusts_final_stats_count_requests_and_failures_per_route():
    entries = [{"name": "/browse", "method": "GET", "num_requests": 30, "num_failures": 0},
               {"name": "/checkout", "method": "GET", "num_requests": 10, "num_failures": 4}]
    result = _load_result(entries)
    assert (result.total, result.failed) == (40, 4)
    assert result.failures == {"/browse": 0, "/checkout": 4}


def test_a_load_without_users_is_refused(settings):
    with pytest.raises(ShopError, match="at least 1 user"):
        Shop(settings).load(users=0, rate=1.0, seconds=5)


@pytest.mark.slow
def test_the_shop_serves_a_load_and_a_payment_surge_fails_checkouts_at_its_share(settings, store):
    shop = Shop(settings, _free_ports())
    pids = []
    try:
        started = shop.start(store)
        assert started.running, started.message
        pids = [s.pid for s in started.services]
        load = shop.load(users=2, rate=4.0, seconds=10)
        assert load.requests.get("/browse", 0) > 0 and load.requests.get("/checkout", 0) > 0
        assert load.failed == 0

        fault = switch_on(shop.flags, store, "payment", "error_surge", 600, size=SURGE)
        frontend = shop.url("frontend")
        with httpx.Client(timeout=30) as client:
            codes = [client.get(f"{frontend}/checkout").status_code for _ in range(CHECKOUTS)]
            browsed = {client.get(f"{frontend}/browse").status_code for _ in range(10)}
        assert set(codes) <= {200, 502}  # payment's 500 is the frontend's 502
        assert 0.3 < codes.count(502) / CHECKOUTS < 0.7
        assert browsed == {200}  # /browse never calls payment
        truth = store.query("SELECT run_id, fault_id, scenario, fault_type, service, magnitude, benign, root_cause "
                            "FROM injected_incidents")
        assert truth == [(started.run_id, fault.fault_id, "shop", "error_surge", "payment", SURGE, False, "payment")]
    finally:
        shop.stop()
    assert pids and not any(process_alive(p) for p in pids)
    assert not [p for p in psutil.process_iter(["cmdline"]) if "obslab.shop.services" in (p.info["cmdline"] or [])
                and str(shop.flags.path) in p.info["cmdline"]]
    assert not shop.status().services[0].pid and not list(shop.dir.glob("*.pid"))

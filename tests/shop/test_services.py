"""The shop's apps over real HTTP (uvicorn in threads), their spans captured in memory."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from conftest import free_port
from obslab.errors import ConfigError
from obslab.generator.events import Fault
from obslab.shop.faults import FaultSwitch, FlagFile, FlagState
from obslab.shop.services import build_app, extra_latency_s, failure, tracer_provider
from obslab.shop.topology import SERVICES
from tests.shop.helpers import served

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


@pytest.fixture()
def shop(tmp_path):
    """The three services served from threads, all spans into one in-memory exporter; yields
    (frontend URL, exporter, flag file)."""
    spans = InMemorySpanExporter()
    flags = FlagFile(tmp_path / "faults.json")
    ports = {s: free_port() for s in SERVICES}
    peers = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}

    def app(service):
        provider = tracer_provider(service, SimpleSpanProcessor(spans))
        return build_app(service, provider, FaultSwitch(flags.path, service), peers, random.Random(7))

    with served(app("cart"), ports["cart"]), served(app("payment"), ports["payment"]), \
            served(app("frontend"), ports["frontend"]) as frontend:
        yield frontend, spans, flags


def _server_span(spans, service):
    found = [s for s in spans.get_finished_spans()
             if s.kind == SpanKind.SERVER and s.resource.attributes["service.name"] == service]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


def test_each_service_makes_a_server_span_with_the_stable_http_names(shop):
    frontend, spans, _ = shop
    assert httpx.get(f"{frontend}/checkout").json() == {"items": 2, "charged": True}
    for service, route in (("frontend", "/checkout"), ("cart", "/cart/items"), ("payment", "/payment/charge")):
        attributes = _server_span(spans, service).attributes
        assert attributes["http.route"] == route
        assert attributes["http.response.status_code"] == 200
        assert "http.status_code" not in attributes  # the old name is not emitted as well


def test_the_frontends_call_joins_the_trace_of_carts_server_span(shop):
    frontend, spans, _ = shop
    httpx.get(f"{frontend}/browse").raise_for_status()
    cart = _server_span(spans, "cart")
    calls = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT
             and s.resource.attributes["service.name"] == "frontend"]
    assert len(calls) == 1  # /browse calls cart only
    assert calls[0].context.trace_id == cart.context.trace_id
    assert cart.parent.span_id == calls[0].context.span_id  # cart's span is the call's child
    assert calls[0].attributes["http.response.status_code"] == 200


def test_an_outage_switched_in_the_flag_file_fails_the_service_and_the_frontend(shop):
    frontend, spans, flags = shop
    now = datetime.now(timezone.utc)
    outage = Fault("001-endpoint_outage-cart", "endpoint_outage", "cart", None, now - timedelta(seconds=1),
                   now + timedelta(minutes=5), 1.0)
    flags.write(FlagState("shop-test", [outage]))
    assert httpx.get(f"{frontend}/browse").status_code == 502  # the frontend's answer to cart's failure
    assert _server_span(spans, "cart").attributes["http.response.status_code"] == 503
    assert _server_span(spans, "cart").attributes["http.route"] == "/cart/items"


def test_health_probes_are_not_traced(shop):
    frontend, spans, _ = shop
    assert httpx.get(f"{frontend}/healthz").json() == {"service": "frontend"}
    assert spans.get_finished_spans() == ()


def _fault(kind: str, magnitude: float) -> Fault:
    return Fault(f"f-{kind}", kind, "payment", None, NOW, NOW + timedelta(minutes=1), magnitude)


@pytest.mark.parametrize("faults, expected", [
    ([], 0.0),  # no fault, no extra work
    ([_fault("latency_spike", 5.0)], 0.16),  # payment's own 40 ms x 5: 160 ms more
    ([_fault("error_surge", 0.9)], 0.0),  # an error surge does not slow a request
])
def test_a_latency_spike_multiplies_the_services_own_work(faults, expected):
    assert extra_latency_s(faults, "payment") == pytest.approx(expected)


@pytest.mark.parametrize("faults, draw, expected", [
    ([], 0.0, None),  # nothing switched on
    ([_fault("error_surge", 0.3)], 0.29, 500),  # inside the surge's share
    ([_fault("error_surge", 0.3)], 0.31, None),  # outside it
    ([_fault("endpoint_outage", 1.0)], 0.99, 503),  # a full outage fails every request
    ([_fault("latency_spike", 7.0)], 0.0, None),  # a spike is slow, not failed
])
def test_failures_answer_the_status_of_their_fault(faults, draw, expected):
    assert failure(faults, lambda: draw) == expected



def test_the_frontend_needs_the_addresses_of_its_callees(tmp_path):
    provider = tracer_provider("frontend", SimpleSpanProcessor(InMemorySpanExporter()))
    with pytest.raises(ConfigError, match="cart, payment"):
        build_app("frontend", provider, FaultSwitch(tmp_path / "faults.json", "frontend"), peers={})

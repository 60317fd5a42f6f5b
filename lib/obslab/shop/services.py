"""The shop's three services as FastAPI apps, traced with OpenTelemetry, and the process that runs one.

Each app gets a tracer provider of its own (resource `service.name` = the service). The FastAPI
instrumentation makes a SERVER span per request, with `http.route` and `http.response.status_code`;
the frontend's httpx client makes a CLIENT span per call to cart or payment and sends the trace
context along, so cart's and payment's SERVER spans join the frontend's trace. A process exports
its spans in batches over OTLP/HTTP to the Collector:

    python -m obslab.shop.services payment --port 8703 --faults data/shop/faults.json \
        --otlp-endpoint http://127.0.0.1:4318/v1/traces
    python -m obslab.shop.services frontend --port 8701 --faults data/shop/faults.json \
        --peer cart=http://127.0.0.1:8702 --peer payment=http://127.0.0.1:8703 ...

Every route first passes the fault gate, which applies the faults the flag file switches on.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from obslab.errors import ConfigError
from obslab.generator.events import Fault
from obslab.shop.faults import FaultSwitch
from obslab.shop.topology import CART, FRONTEND, PAYMENT, PROFILES, SERVICES, callees

# A Collector that is down costs the export thread this long per batch (one logged error), never a request.
EXPORT_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 5.0  # the frontend's calls to cart and payment
WORK_JITTER = 0.5  # a handler's own work lasts its service's latency x uniform(1 - this, 1 + this)
UNTRACED_URLS = "healthz"  # readiness probes stay out of the traces
# The instrumentation's own spans for each ASGI receive and send: two more spans per request, no signal.
UNTRACED_INTERNALS = ["receive", "send"]
SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"


def tracer_provider(service: str, processor: SpanProcessor) -> TracerProvider:
    """A tracer provider whose spans name `service` and go to `processor`."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(processor)
    return provider


def otlp_processor(endpoint: str) -> BatchSpanProcessor:
    """Batches of spans, sent over OTLP/HTTP to `endpoint` with a short timeout."""
    return BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_S))


def use_stable_http_names() -> None:
    """Make the HTTP instrumentations name attributes by the stable conventions
    (`http.response.status_code`, not `http.status_code`), which they do only when asked.
    They read the variable once per process, so call this before instrumenting anything."""
    asked = [s.strip() for s in os.environ.get(SEMCONV_OPT_IN, "").split(",") if s.strip()]
    if "http" not in asked and "http/dup" not in asked:
        os.environ[SEMCONV_OPT_IN] = ",".join([*asked, "http"])


def extra_latency_s(faults: list[Fault], service: str) -> float:
    """Extra sleep of a request under these faults: a latency spike of x N makes the service's own
    work N times as long."""
    own = PROFILES[service].latency_ms / 1000
    return sum(own * (f.magnitude - 1) for f in faults if f.type == "latency_spike")


def failure(faults: list[Fault], draw: Callable[[], float]) -> int | None:
    """The status a request answers with under these faults, or None: an outage fails its share of
    requests with 503, an error surge its share with 500."""
    for fault in faults:
        if fault.type == "endpoint_outage" and draw() < fault.magnitude:
            return 503
        if fault.type == "error_surge" and draw() < fault.magnitude:
            return 500
    return None


class FaultGate:
    """The dependency every business route runs first: applies the faults on this service (and route)."""

    def __init__(self, service: str, switch: FaultSwitch, rng: random.Random):
        self.service, self.switch, self.rng = service, switch, rng

    async def __call__(self, request: Request) -> None:
        route = request.scope["route"].path
        faults = [f for f in self.switch.active(datetime.now(timezone.utc)) if f.endpoint in (None, route)]
        if delay := extra_latency_s(faults, self.service):
            await asyncio.sleep(delay)
        if (status := failure(faults, self.rng.random)) is not None:
            raise HTTPException(status, detail=f"{self.service}: fault switched on")


async def _work(service: str, rng: random.Random) -> None:
    """The handler's own work: a sleep around the service's latency."""
    await asyncio.sleep(PROFILES[service].latency_ms / 1000 * rng.uniform(1 - WORK_JITTER, 1 + WORK_JITTER))


async def _call(client: httpx.AsyncClient, method: str, url: str) -> dict:
    """A call to another shop service; its failure is the frontend's 502."""
    try:
        response = await client.request(method, url)
    except httpx.HTTPError as err:
        raise HTTPException(502, detail=f"{url}: {type(err).__name__}") from None
    if response.is_error:
        raise HTTPException(502, detail=f"{url} answered {response.status_code}")
    return response.json()


def _frontend_routes(router: APIRouter, client: httpx.AsyncClient, peers: dict[str, str], rng: random.Random):
    @router.get("/checkout")
    async def checkout() -> dict:
        await _work(FRONTEND, rng)
        cart = await _call(client, "GET", f"{peers[CART]}/cart/items")
        charge = await _call(client, "POST", f"{peers[PAYMENT]}/payment/charge")
        return {"items": len(cart["items"]), "charged": charge["charged"]}

    @router.get("/browse")
    async def browse() -> dict:
        await _work(FRONTEND, rng)
        cart = await _call(client, "GET", f"{peers[CART]}/cart/items")
        return {"items": len(cart["items"])}


def _cart_routes(router: APIRouter, rng: random.Random):
    @router.get("/cart/items")
    async def items() -> dict:
        await _work(CART, rng)
        return {"items": [{"sku": "tea-001", "quantity": 2}, {"sku": "mug-014", "quantity": 1}]}


def _payment_routes(router: APIRouter, rng: random.Random):
    @router.post("/payment/charge")
    async def charge() -> dict:
        await _work(PAYMENT, rng)
        return {"charged": True}


def build_app(service: str, provider: TracerProvider, switch: FaultSwitch, peers: dict[str, str] | None = None,
              rng: random.Random | None = None) -> FastAPI:
    """One shop service, traced through `provider`; `peers` maps each callee to its base URL."""
    use_stable_http_names()
    rng = rng or random.Random()
    missing = [c for c in callees(service) if c not in (peers or {})]
    if missing:
        raise ConfigError(f"{service} calls {', '.join(missing)}: give their base URLs (--peer NAME=URL)")
    client = httpx.AsyncClient(timeout=CALL_TIMEOUT_S)
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await client.aclose()

    app = FastAPI(title=f"shop: {service}", lifespan=lifespan)
    router = APIRouter(dependencies=[Depends(FaultGate(service, switch, rng))])
    if service == FRONTEND:
        _frontend_routes(router, client, peers, rng)
    elif service == CART:
        _cart_routes(router, rng)
    else:
        _payment_routes(router, rng)
    app.include_router(router)
    app.add_api_route("/healthz", lambda: {"service": service}, methods=["GET"])
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=UNTRACED_URLS,
                                       exclude_spans=UNTRACED_INTERNALS)
    return app


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m obslab.shop.services", description="Run one shop service.")
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--faults", type=Path, required=True, help="the flag file (DATA_DIR/shop/faults.json)")
    parser.add_argument("--otlp-endpoint", required=True, help="the Collector's OTLP/HTTP traces URL")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=URL", help="a callee's base URL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve one shop service on 127.0.0.1 until SIGTERM or Ctrl-C; spans are flushed on the way out."""
    import uvicorn

    args = _arguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # While the Collector is down: one line per failed batch (every few seconds), not one per retry too.
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.ERROR)
    provider = tracer_provider(args.service, otlp_processor(args.otlp_endpoint))
    peers = dict(p.split("=", 1) for p in args.peer)
    app = build_app(args.service, provider, FaultSwitch(args.faults, args.service), peers)
    try:
        # No access log: under load it would be a line per request.
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()

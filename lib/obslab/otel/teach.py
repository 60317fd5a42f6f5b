"""The shop's traces built offline with the OpenTelemetry SDK, for notebook 09: no services, no Collector, no broker.

Each request to the shop is one trace, shaped as the running shop's instrumentation makes it
(obslab.shop.services), on a clock of its own instead of the wall clock:

    frontend  SERVER "GET /checkout"        http.route /checkout, http.response.status_code 200 | 502
      frontend  CLIENT "GET"                  -> cart
        cart      SERVER "GET /cart/items"
      frontend  CLIENT "POST"                 -> payment (only /checkout calls it)
        payment   SERVER "POST /payment/charge" 200, or 500 when the fault gate fails it
          payment   INTERNAL "authorize"        (only with internal=True: a span a service's own code makes)

Whether payment fails is decided by the shop's own fault gate (`obslab.shop.services.failure`)
from the faults a flag file switches on, so a fault means here what it means in the live shop.
`export_requests` encodes the spans as the Collector's Kafka exporter writes them (OTLP JSON, one
export request per record) and `kafka_rows` gives them the shape of the stream's Kafka rows.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
from datetime import datetime, timedelta, timezone

import pandas as pd
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from obslab.settings import Settings
from obslab.shop.faults import FaultSwitch
from obslab.shop.services import WORK_JITTER, failure, tracer_provider
from obslab.shop.topology import CART, CHECKOUT_SHARE, DEFAULT_PORTS, FRONTEND, PAYMENT, PROFILES, SERVICES

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)  # fixed, so a seed always gives the same traffic
HOP_MS = 1.0  # one call's way between two shop services on loopback (each direction)
BATCH_SECONDS = 0.2  # the Collector's batch processor sends what it holds every 200 ms (its default timeout)
FAULT_SIZE = 0.4  # notebook 09's fault: the share of payment's requests an error_surge fails
FAILED_CALL = 502  # what the frontend answers when a callee failed (obslab.shop.services._call)


class ShopTracer:
    """One tracer provider per shop service (its `service.name`), every span into one in-memory exporter."""

    def __init__(self, seed: int = 42):
        self.exporter = InMemorySpanExporter()
        self.tracers = {s: tracer_provider(s, SimpleSpanProcessor(self.exporter)).get_tracer("obslab.teach")
                        for s in SERVICES}
        self.rng = random.Random(seed)

    def spans(self) -> list[ReadableSpan]:
        """Every span finished so far."""
        return list(self.exporter.get_finished_spans())

    def request(self, route: str, at: datetime, payment_status: int | None = None, internal: bool = False) -> None:
        """One request to the frontend's `route` at `at`, as a trace; `payment_status` (500, 503)
        fails payment's answer, which the frontend turns into a 502."""
        ms = self._ms
        front = self._server(FRONTEND, "GET", route, at)
        t = at + ms(self._work(FRONTEND))
        t, _ = self._call(front, "GET", CART, "/cart/items", t, None, False)
        status = 200
        if route == "/checkout":
            t, paid = self._call(front, "POST", PAYMENT, "/payment/charge", t, payment_status, internal)
            status = FAILED_CALL if paid >= 400 else 200
        self._end(front, status, t + ms(HOP_MS))

    def _call(self, parent, method: str, service: str, route: str, at: datetime, fail: int | None,
              internal: bool) -> tuple[datetime, int]:
        """A CLIENT span of the frontend and the callee's SERVER span inside it; (when it ended, status)."""
        ms = self._ms
        port = DEFAULT_PORTS[service]
        client = self.tracers[FRONTEND].start_span(
            method, context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT, start_time=_nanos(at),
            attributes={"http.request.method": method, "url.full": f"http://127.0.0.1:{port}{route}",
                        "server.address": "127.0.0.1", "server.port": port})
        server = self._server(service, method, route, at + ms(HOP_MS), parent=client)
        t = at + ms(HOP_MS)
        if fail is None:  # the fault gate runs before the handler: a failed request does no work
            work = self._work(service)
            if internal:
                step = self.tracers[service].start_span("authorize", context=trace.set_span_in_context(server),
                                                        kind=SpanKind.INTERNAL, start_time=_nanos(t))
                step.end(end_time=_nanos(t + ms(work / 2)))
            t += ms(work)
        status = fail or 200
        self._end(server, status, t)
        t += ms(HOP_MS)
        self._end(client, status, t)
        return t, status

    def _server(self, service: str, method: str, route: str, at: datetime, parent=None):
        context = trace.set_span_in_context(parent) if parent is not None else None
        return self.tracers[service].start_span(
            f"{method} {route}", context=context, kind=SpanKind.SERVER, start_time=_nanos(at),
            attributes={"http.request.method": method, "url.path": route, "http.route": route})

    @staticmethod
    def _end(span, status: int, at: datetime) -> None:
        span.set_attribute("http.response.status_code", status)
        if status >= 500 or (status >= 400 and span.kind == SpanKind.CLIENT):
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=_nanos(at))

    def _work(self, service: str) -> float:
        """A handler's own work in ms, as the shop sleeps it."""
        return PROFILES[service].latency_ms * self.rng.uniform(1 - WORK_JITTER, 1 + WORK_JITTER)

    @staticmethod
    def _ms(value: float) -> timedelta:
        return timedelta(milliseconds=value)


def example_spans(start: datetime = START, seed: int = 42) -> list[ReadableSpan]:
    """Two /checkout traces a second apart, payment's INTERNAL step included; in the second payment answers 500."""
    shop = ShopTracer(seed)
    shop.request("/checkout", start, internal=True)
    shop.request("/checkout", start + timedelta(seconds=1), payment_status=500, internal=True)
    return shop.spans()


def shop_spans(start: datetime, seconds: float, per_second: float, switch: FaultSwitch | None = None,
               seed: int = 42) -> list[ReadableSpan]:
    """`seconds` of the shop's traffic from `start`: requests arrive as a Poisson process of
    `per_second`, a share CHECKOUT_SHARE of them /checkout (as the shop's load); payment fails as
    `switch` (payment's view of a flag file) decides."""
    shop = ShopTracer(seed)
    draw = random.Random(seed + 1)
    t = start + timedelta(seconds=draw.expovariate(per_second))
    while t < start + timedelta(seconds=seconds):
        route = "/checkout" if draw.random() < CHECKOUT_SHARE else "/browse"
        faults = switch.active(t) if switch is not None else []
        shop.request(route, t, payment_status=failure(faults, draw.random) if route == "/checkout" else None)
        t += timedelta(seconds=draw.expovariate(per_second))
    return shop.spans()


def export_request(spans: list[ReadableSpan]) -> dict:
    """One OTLP export request in OTLP JSON, as the Collector's otlp_json writes it: resourceSpans ->
    scopeSpans -> spans, enums as numbers, 64-bit integers as strings, ids in hex."""
    request = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    # protobuf's JSON mapping writes bytes in base64; OTLP JSON writes trace and span ids in hex
    for resource in request.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return request


def export_requests(spans: list[ReadableSpan], seconds: float = BATCH_SECONDS) -> list[str]:
    """The spans as the Collector's Kafka exporter writes them: one OTLP JSON export request per
    record, a record for the spans that ended in each `seconds` (the batch processor's timeout)."""
    batches: dict[int, list[ReadableSpan]] = {}  # batch number -> the spans that ended in it
    for span in sorted(spans, key=lambda s: s.end_time):
        batches.setdefault(int(span.end_time // (seconds * 1e9)), []).append(span)
    return [json.dumps(export_request(batch)) for batch in batches.values()]


def kafka_rows(spark, values: list[str], topic: str, first_offset: int = 0):
    """Kafka-shaped rows (topic, partition, offset, value) of one partition, as `aggregate_static` reads them."""
    return spark.createDataFrame([(topic, 0, first_offset + i, v) for i, v in enumerate(values)],
                                 "topic STRING, partition INT, offset LONG, value STRING")


def span_table(spans: list[ReadableSpan]) -> pd.DataFrame:
    """One row per span, trace by trace in time order: trace (its id's start), service, kind, name,
    route, HTTP status, OTel status, start and duration."""
    table = pd.DataFrame([{
        "trace": f"{s.context.trace_id:032x}"[:8], "service": s.resource.attributes.get("service.name"),
        "kind": s.kind.name, "name": s.name, "route": s.attributes.get("http.route"),
        "http_status": s.attributes.get("http.response.status_code"), "status": s.status.status_code.name,
        "start": _EPOCH + timedelta(microseconds=s.start_time // 1000),
        "ms": round((s.end_time - s.start_time) / 1e6, 1)} for s in spans])
    began = table.groupby("trace")["start"].transform("min")
    return table.astype({"http_status": "Int64"}).assign(began=began).sort_values(["began", "start"], ignore_index=True).drop(columns="began")


def server_counts(spans: list[ReadableSpan]) -> pd.DataFrame:
    """Per service, the requests its SERVER spans answered and how many failed (status >= 400): what
    the stream must count."""
    table = span_table(spans)
    server = table[table.kind == "SERVER"]
    return (server.assign(failed=server.http_status >= 400).groupby("service")
                  .agg(requests=("name", "size"), errors=("failed", "sum")).astype("int64"))


def workdir_settings(base: Settings, name: str) -> Settings:
    """Settings of a scratch lab in DATA_DIR/runs/<name>, emptied first, whose stream counts spans."""
    workdir = base.data_dir / "runs" / name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return base.model_copy(update={"data_dir": workdir, "duckdb_path": workdir / "telemetry.duckdb",
                                   "stream_source": "spans"})


def _nanos(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1) * 1000

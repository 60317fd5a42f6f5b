"""OpenTelemetry spans as request events (obslab.stream.spans): OTLP JSON as the SDK encodes it,
parsed by Spark into the same windows, with skipped and dead-lettered spans accounted for."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from obslab.lab import Lab
from obslab.settings import load_settings
from obslab.stream.job import aggregate_static, parser_for
from obslab.stream.start import checkpoint_path
from obslab.stream.spans import OTLP_TRACES, parse_spans

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


def _nanos(t: datetime) -> int:
    return int(t.timestamp() * 1e9)


def recorded(service: str, spans: list[tuple]) -> list:
    """Finished SDK spans of `service`: (name, kind, start offset s, duration ms, attributes, error)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service} if service else {}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("obslab-tests")
    for name, kind, offset, ms, attributes, error in spans:
        start = T0 + timedelta(seconds=offset)
        span = tracer.start_span(name, kind=kind, start_time=_nanos(start), attributes=attributes)
        if error:
            span.set_status(Status(StatusCode.ERROR, "failed"))
        span.end(end_time=_nanos(start + timedelta(milliseconds=ms)))
    return list(exporter.get_finished_spans())


def otlp_json(spans: list) -> str:
    """One export request as OTLP JSON (camelCase names, enums as numbers, like the Collector's otlp_json)."""
    return json.dumps(MessageToDict(encode_spans(spans), use_integers_for_enums=True))


def test_the_schema_reads_the_fields_the_sdk_writes():
    request = json.loads(otlp_json(recorded("cart", [("GET /cart", SpanKind.SERVER, 0, 12,
                                                      {"http.route": "/cart", "http.response.status_code": 200},
                                                      False)])))
    span = request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    for name in ("traceId", "spanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano", "attributes"):
        assert name in span and name in OTLP_TRACES
    assert span["kind"] == 2 and {"key", "value"} <= set(span["attributes"][0])
    assert "service.name" in {a["key"] for a in request["resourceSpans"][0]["resource"]["attributes"]}


def test_the_source_picks_the_parser_and_its_own_checkpoint(tmp_path):
    events, spans = load_settings(data_dir=tmp_path), load_settings(data_dir=tmp_path, stream_source="spans")
    assert parser_for(spans) is parse_spans and parser_for(events) is not parse_spans
    assert spans.stream_topic == "otlp_spans" and events.stream_topic == "raw_events"
    assert checkpoint_path(spans) != checkpoint_path(events)  # each keeps its own Spark offsets


@pytest.mark.spark
def test_server_spans_become_requests_and_the_rest_is_skipped_or_dead_lettered(spark, tmp_path):
    server, client, internal = SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL
    ok = {"http.route": "/cart/items", "http.response.status_code": 200}
    cart = recorded("cart", [("GET /cart/items", server, k, 20 + k, ok, False) for k in range(5)]
                    + [("GET /cart/items", server, 7, 30, {**ok, "http.response.status_code": 503}, False)])
    payment = recorded("payment", [
        ("POST /payment/charge", server, 1, 80, {"http.route": "/payment/charge", "http.status_code": 201}, False),
        ("charge", server, 2, 90, {}, True),  # no route, no HTTP code, status ERROR: an error on /charge
        ("SELECT", client, 2, 5, {}, False), ("validate", internal, 3, 1, {}, False)])
    frontend = recorded("frontend", [("GET /checkout", server, 0, 150,
                                      {"http.route": "/checkout", "http.response.status_code": 200}, False),
                                     ("GET", client, 0, 40, {}, False), ("POST", client, 0, 90, {}, False)])
    nameless = recorded("", [("GET /x", server, 4, 3, {"http.route": "/x", "http.response.status_code": 200}, False)])
    for span in nameless:  # the SDK fills in service.name; a span from elsewhere may lack it
        span._resource = Resource({})
    backwards = recorded("cart", [("GET /cart/items", server, 5, 10, ok, False)])
    backwards[0]._end_time = backwards[0].start_time - 1_000_000
    with_empty_scope = json.loads(otlp_json(cart[:1]))
    with_empty_scope["resourceSpans"][0]["scopeSpans"].append({"spans": []})  # legal, and nothing to count
    values = [otlp_json(cart[1:]), otlp_json(payment), otlp_json(frontend), "{not json", otlp_json(nameless),
              otlp_json(backwards), json.dumps({"resourceSpans": []}), json.dumps(with_empty_scope),
              otlp_json(cart[1:]) + "\n" + otlp_json(payment)]  # two payloads in one record: neither counted
    raw = spark.createDataFrame([("otlp_spans", 0, i, v) for i, v in enumerate(values)],
                                "topic STRING, partition INT, offset LONG, value STRING")
    settings = load_settings(data_dir=tmp_path, stream_source="spans")
    store = Lab(settings).store
    counters = aggregate_static(spark, raw, settings, store)
    windows = store.query("SELECT service, endpoint, sum(request_count), sum(error_count) FROM endpoint_metrics "
                          "GROUP BY ALL ORDER BY 1, 2")
    assert windows == [("cart", "/cart/items", 6, 1), ("frontend", "/checkout", 1, 0),
                       ("payment", "/charge", 1, 1), ("payment", "/payment/charge", 1, 0)]
    latency = store.query("SELECT avg_latency_ms FROM endpoint_metrics WHERE service = 'frontend'")[0][0]
    assert latency == pytest.approx(150.0)
    assert counters.events == 9 and counters.skipped_spans == 4  # 1 client + 1 internal, 2 client
    dead = dict(store.query("SELECT kafka_offset, reason FROM dead_letter_events ORDER BY 1"))
    assert dead == {3: "malformed_json", 4: "missing_field:service.name", 5: "out_of_range:latency_ms", 6: "no_spans",
                    8: "malformed_json"}
    assert counters.dead_letters == 5
    assert store.query("SELECT sum(skipped_spans) FROM stream_batches")[0][0] == 4


@pytest.mark.spark
def test_records_of_many_spans_are_counted_without_carrying_the_record_on_every_span(spark, tmp_path):
    # The Collector batches up to thousands of spans into one record (~1 MB here). Each span row
    # once carried its record's text and parse: 4 records x 1,500 spans ran a 1 GB driver out of memory.
    server = SpanKind.SERVER
    values = [otlp_json(recorded("cart", [("GET /cart/items", server, k % 50, 10, {"http.route": "/cart/items",
                                                                                   "http.response.status_code": 200},
                                           False) for k in range(1500)])) for _ in range(4)]
    assert min(len(v) for v in values) > 500_000
    raw = spark.createDataFrame([("otlp_spans", 0, i, v) for i, v in enumerate(values)],
                                "topic STRING, partition INT, offset LONG, value STRING")
    settings = load_settings(data_dir=tmp_path, stream_source="spans")
    counters = aggregate_static(spark, raw, settings, Lab(settings).store)
    assert counters.events == 6000 and counters.dead_letters == 0

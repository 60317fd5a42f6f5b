"""Spans end to end: the OpenTelemetry SDK -> the built Collector -> the real broker -> the stream
(STREAM_SOURCE spans) -> windows in DuckDB, every SERVER span counted once, the rest skipped or
dead-lettered."""

from __future__ import annotations

from collections import Counter

import pytest
from opentelemetry.trace import SpanKind

from obslab.broker import LocalBroker, producer
from obslab.lab import Lab
from obslab.otel.collector import LocalCollector, build
from obslab.settings import Settings
from obslab.stream.job import run_stream_job
from tests.otel.test_collector import _collector_lab, _received, exporting_provider

# (service, route, status code, requests): the shop's shape, errors included
REQUESTS = [("frontend", "/checkout", 200, 40), ("frontend", "/checkout", 502, 3), ("frontend", "/browse", 200, 25),
            ("cart", "/cart/items", 200, 68), ("payment", "/payment/charge", 200, 37),
            ("payment", "/payment/charge", 500, 6)]


def _send(settings: Settings) -> Counter:
    """Each request a SERVER span with a CLIENT child (its call onward) and an INTERNAL one; returns
    the spans sent by kind."""
    kinds: Counter = Counter()
    for service in sorted({s for s, *_ in REQUESTS}):
        provider = exporting_provider(settings, service)
        tracer = provider.get_tracer("obslab-tests")
        for _, route, status, n in (r for r in REQUESTS if r[0] == service):
            for _ in range(n):
                attributes = {"http.route": route, "http.response.status_code": status}
                with tracer.start_as_current_span(f"GET {route}", kind=SpanKind.SERVER, attributes=attributes):
                    with tracer.start_as_current_span("call", kind=SpanKind.CLIENT):
                        pass
                    with tracer.start_as_current_span("work", kind=SpanKind.INTERNAL):
                        pass
                kinds.update({"server": 1, "client": 1, "internal": 1})
        assert provider.force_flush(timeout_millis=120_000)  # the Collector took them (HTTP 200)
        provider.shutdown()
    return kinds


@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.slow
def test_every_server_span_is_counted_once_in_the_windows(broker, spark, lab_settings, tmp_path):
    settings = _collector_lab(lab_settings, tmp_path, "otel_pipeline_spans").model_copy(
        update={"stream_source": "spans", "duckdb_path": tmp_path / "observability.duckdb"})
    LocalBroker(settings).ensure_topics()
    lab = LocalCollector(settings, binary=build(settings))
    lab.start()
    try:
        kinds = _send(settings)
        _received(settings, sum(kinds.values()))  # all on the topic before the stream reads it
    finally:
        lab.stop()
    bad = producer(settings)
    bad.send(settings.topic_otlp_spans, value=b'{"resourceSpans": [oops')
    bad.flush()
    bad.close()
    with Lab(settings, spark=spark) as lab_:
        report = run_stream_job(settings, available_now=True, spark=spark, store=lab_.store)
        counted = lab_.store.query("SELECT service, endpoint, sum(request_count), sum(error_count) "
                                   "FROM endpoint_metrics GROUP BY ALL ORDER BY 1, 2")
        dead = lab_.store.query("SELECT reason, count(*) FROM dead_letter_events GROUP BY 1")
        again = run_stream_job(settings, available_now=True, spark=spark, store=lab_.store)
        recounted = lab_.store.query("SELECT sum(request_count) FROM endpoint_metrics")[0][0]
    sent = Counter()
    for service, route, status, n in REQUESTS:
        sent[(service, route, "requests")] += n
        sent[(service, route, "errors")] += n if status >= 400 else 0
    assert counted == sorted((s, r, sent[(s, r, "requests")], sent[(s, r, "errors")])
                             for s, r in {(s, r) for s, r, *_ in REQUESTS})
    assert report.counters.events == kinds["server"]
    assert report.counters.skipped_spans == kinds["client"] + kinds["internal"]
    assert dead == [("malformed_json", 1)] and report.counters.dead_letters == 1
    assert again.counters.events == 0 and recounted == kinds["server"]  # nothing counted twice

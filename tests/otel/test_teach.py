"""The shop's traces built offline (obslab.otel.teach): shaped as the live shop's, failed by its fault
gate, encoded as the Collector writes them; and (Spark) counted by the stream as the spans say."""

from __future__ import annotations

import json
import string
from collections import Counter
from datetime import timedelta

import pytest

from obslab.lab import Lab
from obslab.otel.teach import (START, example_spans, export_request, export_requests, kafka_rows, server_counts,
                               shop_spans, span_table, workdir_settings)
from obslab.settings import load_settings
from obslab.shop.faults import FaultSwitch, FlagFile, switch_on
from obslab.stream.job import aggregate_static


def test_a_checkout_trace_has_the_live_shops_spans_and_a_failed_payment_fails_the_frontend():
    table = span_table(example_spans())
    first, second = (table[table.trace == t] for t in table.trace.unique())
    # (service, kind, name) of a checkout: the frontend's SERVER span, its two CLIENT calls, the callees' SERVER
    # spans, and payment's INTERNAL step (example only)
    assert Counter(zip(first.service, first.kind, first.name)) == Counter({
        ("frontend", "SERVER", "GET /checkout"): 1, ("frontend", "CLIENT", "GET"): 1,
        ("frontend", "CLIENT", "POST"): 1, ("cart", "SERVER", "GET /cart/items"): 1,
        ("payment", "SERVER", "POST /payment/charge"): 1, ("payment", "INTERNAL", "authorize"): 1})
    assert set(first.http_status.dropna()) == {200} and set(first.status) == {"UNSET"}
    # payment answers 500 before any work (no INTERNAL span); the frontend answers 502; both are errors
    failed = second[second.status == "ERROR"]
    assert sorted(zip(failed.service, failed.kind, failed.http_status)) == [
        ("frontend", "CLIENT", 500), ("frontend", "SERVER", 502), ("payment", "SERVER", 500)]
    assert "INTERNAL" not in set(second.kind)
    # a trace begins with the frontend's SERVER span: the request that started it
    assert first.iloc[0].kind == "SERVER" and first.iloc[0].service == "frontend"


def test_the_export_request_is_otlp_json_as_the_collector_writes_it():
    request = export_request(example_spans())
    services = [{a["key"]: a["value"].get("stringValue") for a in r["resource"]["attributes"]}["service.name"]
                for r in request["resourceSpans"]]
    assert sorted(services) == ["cart", "frontend", "payment"]
    spans = [s for r in request["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]]
    assert len(spans) == 11  # 6 in the good checkout, 5 in the failed one
    for span in spans:
        # ids in hex (32 and 16 digits), not protobuf's base64; enums as numbers; nanoseconds as strings
        assert len(span["traceId"]) == 32 and set(span["traceId"]) <= set(string.hexdigits)
        assert len(span["spanId"]) == 16 and set(span["spanId"]) <= set(string.hexdigits)
        assert isinstance(span["kind"], int) and isinstance(span["startTimeUnixNano"], str)
    assert {s["kind"] for s in spans} == {1, 2, 3}  # INTERNAL, SERVER, CLIENT


def test_records_group_spans_by_the_batch_timeout_and_lose_none():
    spans = shop_spans(START, 20, per_second=3.0, seed=1)
    records = export_requests(spans, seconds=0.2)
    inside = [s for r in records for rs in json.loads(r)["resourceSpans"] for sc in rs["scopeSpans"]
              for s in sc["spans"]]
    assert len(inside) == len(spans) and len({s["spanId"] for s in inside}) == len(spans)
    assert 1 < len(records) <= len(spans)


def test_traffic_follows_the_rate_and_the_shops_mix_and_the_same_seed_gives_the_same_requests():
    spans = shop_spans(START, 600, per_second=2.0, seed=3)
    counts = server_counts(spans)
    # every request reaches the frontend and cart; a quarter (the load's checkout share) reaches payment
    assert counts.loc["frontend", "requests"] == counts.loc["cart", "requests"]
    assert 1000 < counts.loc["frontend", "requests"] < 1400  # 1200 expected, Poisson spread ~35
    assert 0.18 < counts.loc["payment", "requests"] / counts.loc["frontend", "requests"] < 0.32
    assert counts.errors.sum() == 0  # the shop adds no errors of its own
    again = server_counts(shop_spans(START, 600, per_second=2.0, seed=3))
    assert again.equals(counts)


def test_payment_fails_as_the_shops_fault_gate_decides(tmp_path):
    flags = FlagFile(tmp_path / "faults.json")
    store = Lab(load_settings(data_dir=tmp_path)).store
    fault = switch_on(flags, store, "payment", "error_surge", 60, size=0.4, now=START + timedelta(minutes=1))
    spans = shop_spans(START, 180, per_second=4.0, switch=FaultSwitch(flags.path, "payment"), seed=5)
    table = span_table(spans)
    server = table[table.kind == "SERVER"]
    during = server[(server.start >= fault.start) & (server.start < fault.end)]
    outside = server[(server.start < fault.start) | (server.start >= fault.end)]
    assert (outside.http_status == 200).all()  # no fault, no error
    paid = during[during.service == "payment"]
    assert 0.2 < (paid.http_status == 500).mean() < 0.6  # 40 % of ~60 payments
    # every failed payment is a failed checkout, and cart never fails
    assert (during.http_status == 502).sum() == (paid.http_status == 500).sum()
    assert not (during[during.service == "cart"].http_status != 200).any()


def test_the_workdir_is_emptied_and_counts_spans(tmp_path):
    base = load_settings(data_dir=tmp_path)
    (tmp_path / "runs" / "nb" / "old").mkdir(parents=True)
    settings = workdir_settings(base, "nb")
    assert settings.data_dir == tmp_path / "runs" / "nb" and list(settings.data_dir.iterdir()) == []
    assert settings.stream_source == "spans" and settings.duckdb_path.parent == settings.data_dir


@pytest.mark.spark
def test_the_stream_counts_every_server_span_and_skips_the_rest(spark, tmp_path):
    settings = workdir_settings(load_settings(data_dir=tmp_path), "teach")
    store = Lab(settings).store
    spans = example_spans() + shop_spans(START + timedelta(seconds=5), 120, per_second=2.0, seed=9)
    counted = aggregate_static(spark, kafka_rows(spark, export_requests(spans), settings.topic_otlp_spans),
                               settings, store)
    got = store.query_df("SELECT service, sum(request_count)::BIGINT AS requests, sum(error_count)::BIGINT AS errors "
                         "FROM service_metrics GROUP BY 1 ORDER BY 1").set_index("service")
    assert got.equals(server_counts(spans))
    table = span_table(spans)
    assert counted.skipped_spans == (table.kind != "SERVER").sum() and counted.dead_letters == 0

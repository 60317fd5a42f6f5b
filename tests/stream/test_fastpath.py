"""The stream's fast path (obslab.stream.fastpath): which records it adds up, which it refers to the full
transform, and what it adds up to. DuckDB only here; tests/stream/test_fastpath_spark.py holds it against
Spark's own parse, record by record, and runs it inside a real stream."""

from __future__ import annotations

import calendar
import math
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from obslab.stream.fastpath import partials_fn

T = datetime(2026, 3, 1, 12, 0, 30, 250_000, tzinfo=timezone.utc)
T_US = 1_772_366_430_250_000  # T as epoch microseconds (checked below against Python's own arithmetic)
MINUTE_US = 60_000_000


def record(event_time="2026-03-01T12:00:30.250Z", latency="12.5", status="200", service="checkout",
           endpoint="/api/cart", event_id="e-1") -> str:
    return (f'{{"event_id":"{event_id}","event_time":"{event_time}","service":"{service}",'
            f'"endpoint":"{endpoint}","latency_ms":{latency},"status_code":{status}}}')


def run(values, offsets=None, partition=0, next_offsets=None, future_after_us=T_US + 10**12, watermark_us=0,
        endpoint_max_length=128, batch_rows=None):
    """partials_of over the records -> (partial rows as dicts, referred offsets)."""
    offsets = list(range(len(values))) if offsets is None else offsets
    table = pa.table({"partition": pa.array([partition] * len(values), pa.int32()),
                      "offset": pa.array(offsets, pa.int64()),
                      "value": pa.array([v.encode() if isinstance(v, str) else v for v in values], pa.binary())})
    fn = partials_fn(window_seconds=60, endpoint_max_length=endpoint_max_length, next_offsets=next_offsets or {},
                     future_after_us=future_after_us, watermark_us=watermark_us)
    out = pa.Table.from_batches(list(fn(iter(table.to_batches(max_chunksize=batch_rows)))), schema=None) \
        if values else None
    rows = out.to_pylist() if out is not None else []
    partials = [r for r in rows if r["referred_offset"] is None]
    referred = sorted(r["referred_offset"] for r in rows if r["referred_offset"] is not None)
    return partials, referred


def test_the_epoch_of_the_test_time():
    assert T_US == calendar.timegm(T.timetuple()) * 1_000_000 + T.microsecond


def test_an_event_in_the_generator_s_form_is_added_up():
    partials, referred = run([record(), record(latency="7.5", status="503"), record(latency="0")])
    assert referred == []
    by_code = {p["error_code"]: p for p in partials if p["error_code"] is not None}
    assert sum(p["count"] for p in partials) == 3
    assert sum(p["errors"] for p in partials) == 1 and by_code[503]["count"] == 1
    assert sum(p["latency_sum"] for p in partials) == pytest.approx(20.0)
    for p in partials:
        assert p["window_start_us"] == 1_772_366_400_000_000  # 12:00:00, the minute the events fall in
        assert p["max_event_us"] == T_US
        assert (p["service"], p["endpoint"]) == ("checkout", "/api/cart")
    # the bucket of 12.5 ms holds it: GAMMA^b < 12.5 <= GAMMA^(b+1)
    b = next(p["bucket"] for p in partials if p["error_code"] is None and p["latency_sum"] == 12.5)
    assert 1.02 ** b < 12.5 <= 1.02 ** (b + 1)
    zero = next(p for p in partials if p["latency_sum"] == 0)
    assert 1.02 ** zero["bucket"] < 0.001 <= 1.02 ** (zero["bucket"] + 1)  # 0 ms: the lowest bucket


@pytest.mark.parametrize("value", [
    None, "", "not json", "{}", "[]",
    record().replace(",", ", "),  # white space: valid JSON, not the generator's form
    record().replace('"service":"checkout","endpoint":"/api/cart"', '"endpoint":"/api/cart","service":"checkout"'),
    record() + " ", record() + record(), record()[:-1],
    record(service=" checkout"), record(service=""), record(event_id=""), record(service="caf\\u00e9"),
    record(service="café"), record(endpoint="/ä"), record(service="caf\udcff").encode("utf-8", "surrogateescape"), record(endpoint="api/cart"), record(endpoint="/a b"),
    record(endpoint="/" + "a" * 128),  # 129 characters: over ENDPOINT_MAX_LENGTH
    record(event_time="2026-02-29T12:00:30.250Z"),  # no such day in 2026
    record(event_time="2026-03-01T24:00:00.000Z"), record(event_time="2026-03-01T12:00:60.000Z"),
    record(event_time="2026-03-01T12:00:30.2500001Z"),  # below a microsecond
    record(event_time="2026-03-01T12:00:30.250+00:00"), record(event_time="2026-03-01 12:00:30.250Z"),
    record(event_time="2026-03-01T12:00:30.250"), record(event_time="1969-12-31T23:59:59.000Z"),
    record(latency="-1"), record(latency="1e3"), record(latency="012"), record(latency="1."), record(latency="NaN"),
    record(latency='"12"'), record(latency="86400000.001"), record(latency="0.1234567891"),
    record(status="600"), record(status="099"), record(status="200.0"), record(status='"200"'), record(status="99"),
])
def test_anything_else_is_referred(value):
    partials, referred = run([record(), value])
    assert referred == [1], value
    assert sum(p["count"] for p in partials) == 1


@pytest.mark.parametrize("value", [
    record(latency="86400000"), record(latency="86400000.000"), record(status="100"), record(status="599"),
    record(endpoint="/"), record(endpoint="/" + "a" * 127), record(endpoint="/x;y=1:@!$&'()*+,%20~"),
    record(event_time="2024-02-29T23:59:59.999999Z"), record(event_time="2026-03-01T12:00:30Z"),
    record(service="svc 9"), record(event_id="x"),
])
def test_edges_that_are_good_are_added_up(value):
    partials, referred = run([value])
    assert referred == [] and sum(p["count"] for p in partials) == 1, value


def test_the_endpoint_bound_is_the_setting():
    _, referred = run([record(endpoint="/abcd")], endpoint_max_length=4)
    assert referred == [0]
    partials, referred = run([record(endpoint="/abc")], endpoint_max_length=4)
    assert referred == [] and partials[0]["count"] == 1


def test_future_and_late_events_are_referred():
    _, referred = run([record()], future_after_us=T_US - 1)
    assert referred == [0]
    partials, referred = run([record()], future_after_us=T_US)  # at the bound: not ahead of it
    assert referred == [] and partials
    window_end = 1_772_366_460_000_000
    _, referred = run([record()], watermark_us=window_end)  # its window is final
    assert referred == [0]
    partials, referred = run([record()], watermark_us=window_end - 1)
    assert referred == [] and partials


def test_records_the_store_has_counted_are_dropped():
    partials, referred = run([record(), "junk", record(), "junk"], offsets=[10, 11, 12, 13], partition=2,
                             next_offsets={2: 12, 0: 99})
    assert sum(p["count"] for p in partials) == 1 and referred == [13]


def test_chunks_add_up_to_one_row_per_key(monkeypatch):
    import obslab.stream.fastpath as fastpath

    monkeypatch.setattr(fastpath, "CHUNK_RECORDS", 7)
    values = [record(latency="10", status=str(s)) for s in [200] * 20 + [500] * 5] + ["junk"] * 3
    partials, referred = run(values, batch_rows=3)
    assert referred == [25, 26, 27]
    assert sorted((p["error_code"] or 0, p["count"], p["errors"]) for p in partials) == [(0, 20, 0), (500, 5, 5)]
    assert sum(p["latency_sum"] for p in partials) == 250.0
    assert not any(math.isnan(p["latency_sum"]) for p in partials)


def test_no_records_yield_nothing():
    fn = partials_fn(window_seconds=60, endpoint_max_length=128, next_offsets={}, future_after_us=0, watermark_us=0)
    assert list(fn(iter([]))) == []

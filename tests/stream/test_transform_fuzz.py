"""The stream's parse step faced with hostile Kafka payloads (hypothesis, real Spark): every record comes out
once, either counted with sane fields or set aside with a reason; a well-formed event is never set aside
(issue 26, item 2). Each example is one Spark job over a few hundred payloads."""

import json
import math
import re
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from obslab.schema import ENDPOINT_PATTERN
from obslab.stream.transform import parse_events
from tests.fuzzing import examples

MAX_ENDPOINT = 128
GOOD = st.fixed_dictionaries({
    "event_id": st.uuids().map(str),
    "event_time": st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))
                    .map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"),
    "service": st.sampled_from(["checkout", "payments", "search", "svc-9"]),
    "endpoint": st.sampled_from(["/api/cart", "/api/pay", "/", "/a/b_c-d.e"]),
    "latency_ms": st.floats(min_value=0, max_value=1e7, allow_nan=False),
    "status_code": st.integers(min_value=100, max_value=599),
})
JUNK_VALUE = st.one_of(
    st.none(), st.booleans(), st.text(max_size=20), st.integers(min_value=-10**20, max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False), st.just([1, 2]), st.just({"deep": {"er": [{}]}}),
    st.just("x" * 100_000), st.just("/api/" + "é" * 300),
)


@st.composite
def hostile(draw) -> tuple[str, bool]:
    """(payload, whether it is a well-formed event as built)."""
    event = draw(GOOD)
    how = draw(st.sampled_from(["good", "good", "replace", "drop", "text", "nan", "deep", "array", "joined"]))
    if how == "good":
        return json.dumps(event), True
    if how == "joined":  # a second event or text after the first: nothing of it may be counted as one event
        tail = draw(st.one_of(GOOD.map(json.dumps), st.text(min_size=1, max_size=20)))
        rest = draw(st.sampled_from(["", " ", "\n", ","])) + tail
        return json.dumps(event) + rest, not rest.strip(" \t\n\r")  # JSON's white space only
    if how == "replace":
        event[draw(st.sampled_from(sorted(event)))] = draw(JUNK_VALUE)
    elif how == "drop":
        del event[draw(st.sampled_from(sorted(event)))]
    elif how == "text":
        return draw(st.text(max_size=60)), False
    elif how == "nan":
        return json.dumps(event).replace(json.dumps(event["latency_ms"]), draw(st.sampled_from(["NaN", "Infinity",
                                                                                              "-Infinity"]))), False
    elif how == "deep":
        return json.dumps({**event, "extra": json.loads("[" * 200 + "]" * 200)}), False
    else:
        return json.dumps([event]), False
    return json.dumps(event), False


@pytest.mark.spark
@pytest.mark.fuzz
@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(hostile(), min_size=1, max_size=250))
def test_every_payload_is_counted_or_set_aside_with_a_reason(spark, batch):
    rows = [("raw_events", 0, i, payload) for i, (payload, _) in enumerate(batch)]
    raw = spark.createDataFrame(rows, "topic STRING, partition INT, offset LONG, value STRING")
    out = {r.kafka_offset: r for r in parse_events(raw, MAX_ENDPOINT).collect()}
    assert sorted(out) == list(range(len(batch)))  # every record once, none lost, none made up
    for offset, (payload, well_formed) in enumerate(batch):
        row = out[offset]
        assert row.raw_payload == payload  # a dead letter keeps what arrived
        if well_formed:
            assert row.reason is None, (payload, row.reason)  # nothing good is set aside
        if row.reason is None:  # what is counted is sane
            assert row.event_id and row.service and row.event_time is not None
            assert math.isfinite(row.latency_ms) and row.latency_ms >= 0, payload
            assert 100 <= row.status_code <= 599, payload
            assert len(row.endpoint) <= MAX_ENDPOINT and re.fullmatch(ENDPOINT_PATTERN, row.endpoint), payload
        else:
            assert re.fullmatch(r"[a-z_]+(:[a-z_]+)?", row.reason), row.reason  # a reason from the documented set

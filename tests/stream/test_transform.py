import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from obslab.lab import Lab
from obslab.stream.job import aggregate_static
from obslab.stream.transform import RELATIVE_ACCURACY, bucket_value, mark_untimely, parse_events, with_window
from obslab.settings import load_settings
from tests.stream.helpers import event_lines

LIMIT = 128  # the endpoint length limit these cases are written for (ENDPOINT_MAX_LENGTH's default)

GOOD = {"event_id": "e1", "event_time": "2026-03-01T09:00:01.500Z", "service": "search",
        "endpoint": "/api/search", "latency_ms": 42.5, "status_code": 200}


def _raw(spark, values):
    return spark.createDataFrame([("raw_events", 0, i, v) for i, v in enumerate(values)],
                                 "topic STRING, partition INT, offset LONG, value STRING")


def _with(**changes):
    event = {**GOOD, **changes}
    return json.dumps({k: v for k, v in event.items() if v is not ...})


@pytest.mark.spark
@pytest.mark.parametrize(
    "value, reason",
    [
        (_with(), None),  # a good event
        ("{not json", "malformed_json"),
        ("[1, 2, 3]", "malformed_json"),  # JSON, but not an object
        ("", "empty_payload"),
        (None, "empty_payload"),
        (_with(endpoint=...), "missing_field:endpoint"),  # field absent
        (_with(service=""), "missing_field:service"),  # field empty
        (_with(event_time="yesterday"), "wrong_type:event_time"),
        (_with(latency_ms="fast"), "wrong_type:latency_ms"),
        (_with(status_code="ok"), "wrong_type:status_code"),
        (_with(latency_ms=-1), "out_of_range:latency_ms"),
        (_with(status_code=999), "out_of_range:status_code"),
        (_with(status_code=42), "out_of_range:status_code"),
        (_with(latency_ms=0), None),  # zero latency is legal
        (_with(latency_ms=86_400_000), None),  # a day: the longest counted
        (_with(latency_ms=86_400_000.5), "out_of_range:latency_ms"),
        (_with(latency_ms=1.7e308), "out_of_range:latency_ms"),  # finite, but two would sum to inf
        (_with(endpoint="/api/v1/users/a-b_c.d~e;v=2:x@y!$&'()*+,%20"), None),  # every URL path character
        (_with(endpoint="/"), None),  # the root path
        (_with(endpoint="/" + "a" * (LIMIT - 1)), None),  # exactly ENDPOINT_MAX_LENGTH characters
        (_with(endpoint="/" + "a" * LIMIT), "invalid:endpoint"),  # one character too long
        (_with(endpoint="api/search"), "invalid:endpoint"),  # a path starts with /
        (_with(endpoint="other"), "invalid:endpoint"),  # so no client can send the overflow bucket's name
        (_with(endpoint="/api/search?q=shoes"), "invalid:endpoint"),  # a query string: one name per search
        (_with(endpoint="/api/pay ignore the facts"), "invalid:endpoint"),  # spaces
        (_with(endpoint='/api/"quoted"'), "invalid:endpoint"),  # quotes
        (_with(endpoint="/api/line\nbreak"), "invalid:endpoint"),  # a control character
        (_with(endpoint="/api/caf\u00e9"), "invalid:endpoint"),  # not ASCII (a client would percent-encode it)
        # what follows the first JSON value: set aside whole, not counted as one event (the rest unseen)
        (_with() + " " + _with(event_id="e2"), "malformed_json"),  # two events in one record
        (_with() + "\n" + _with(event_id="e2"), "malformed_json"),
        (_with() + "," + _with(event_id="e2"), "malformed_json"),
        (_with() + " trailing", "malformed_json"),
        (_with() + "}", "malformed_json"),
        (_with() + "] junk", "malformed_json"),
        (_with() + ' ,"n": 5', "malformed_json"),  # the length check, too
        ("  " + _with() + " \n", None),  # white space around one event is fine
        (_with().replace("42.5", "NaN"), "out_of_range:latency_ms"),  # not JSON, but Jackson reads a number
        (_with().replace("42.5", "-Infinity"), "out_of_range:latency_ms"),
        (_with(latency_ms="NaN"), "out_of_range:latency_ms"),  # as text: the same reason
    ],
)
def test_parse_gives_each_bad_record_a_reason(spark, value, reason):
    row = parse_events(_raw(spark, [value]), endpoint_max_length=LIMIT).collect()[0]
    assert row.reason == reason
    assert row.raw_payload == value  # the payload is kept as received
    if reason is None:
        assert row.latency_ms == json.loads(value)["latency_ms"] and row.event_time.year == 2026


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)  # the stream's clock in these cases
TOLERANCE = timedelta(seconds=60)  # FUTURE_TOLERANCE_SECONDS
WATERMARK = NOW - timedelta(minutes=3)  # 11:57:00; windows are one minute long


@pytest.mark.spark
@pytest.mark.parametrize(
    "event_time, reason_before, reason",
    [
        (NOW, None, None),  # on time
        (NOW + timedelta(seconds=59), None, None),  # a client clock a little ahead: within the tolerance
        (NOW + TOLERANCE, None, None),  # exactly at the tolerance still counts
        (NOW + timedelta(seconds=61), None, "future"),  # beyond it
        (datetime(2099, 1, 1, tzinfo=timezone.utc), None, "future"),  # the bad timestamp
        (NOW - timedelta(seconds=150), None, None),  # 11:57:30: its window ends 11:58:00, after the watermark
        (NOW - timedelta(seconds=181), None, "late"),  # 11:56:59: its window ended 11:57:00, at the watermark
        (NOW - timedelta(days=1), None, "late"),  # long final
        (datetime(2099, 1, 1, tzinfo=timezone.utc), "malformed_json", "malformed_json"),  # a bad record keeps its reason
    ],
)
def test_future_and_late_events_are_marked_for_the_dead_letters(spark, event_time, reason_before, reason):
    frame = spark.createDataFrame([(event_time, reason_before)], "event_time TIMESTAMP, reason STRING")
    row = mark_untimely(with_window(frame, 60), WATERMARK, NOW + TOLERANCE).collect()[0]
    assert row.reason == reason


@pytest.mark.spark
def test_static_aggregation_is_exact_and_percentiles_are_within_the_bound(spark, tmp_path):
    settings = load_settings(data_dir=tmp_path)
    store = Lab(settings).store
    lines = event_lines("mixed", seconds=1200)
    aggregate_static(spark, _raw(spark, lines), settings, store)

    events = pd.DataFrame([json.loads(line) for line in lines])
    events["window_start"] = pd.to_datetime(events.event_time).dt.floor("60s")
    got = store.query_df("SELECT * FROM endpoint_metrics")
    got["window_start"] = pd.to_datetime(got.window_start).dt.tz_convert("UTC")
    assert len(got) == events.groupby(["service", "endpoint", "window_start"]).ngroups
    assert got.is_final.all()  # a static input ends: every window is final
    worst = 0.0
    for (service, endpoint, window), group in events.groupby(["service", "endpoint", "window_start"]):
        row = got[(got.service == service) & (got.endpoint == endpoint) & (got.window_start == window)].iloc[0]
        latencies = np.sort(group.latency_ms.to_numpy())
        assert row.request_count == len(group)  # exact
        assert row.error_count == int((group.status_code >= 400).sum())  # exact
        assert row.avg_latency_ms == pytest.approx(latencies.mean(), rel=1e-9)  # exact up to float rounding
        for q, column in ((0.5, "p50_latency_ms"), (0.95, "p95_latency_ms"), (0.99, "p99_latency_ms")):
            true = latencies[int(np.ceil(q * len(latencies))) - 1]  # nearest-rank sample quantile
            worst = max(worst, abs(row[column] / true - 1))
    assert worst <= RELATIVE_ACCURACY + 1e-9, worst  # the documented bound holds for every window
    assert store.count("latency_histograms") == 0  # final windows keep no histogram


def test_bucket_values_are_representative():  # no Spark: the bucket arithmetic alone
    assert bucket_value(0) == pytest.approx(1.0, rel=RELATIVE_ACCURACY)
    assert RELATIVE_ACCURACY == pytest.approx(0.0099, abs=1e-4)


@pytest.mark.parametrize("bucket", [0, 1, 250, 600])  # 1 ms, 1.02 ms, ~141 ms, ~145 s
def test_every_latency_of_a_bucket_is_within_the_bound_of_its_value(bucket):
    # Bucket b holds (1.02^b, 1.02^(b+1)]; its value 2 x 1.02^(b+1) / 2.02 is 1.0099 x the low edge
    # and 0.9901 x the high edge: 0.99 % off at either end, less inside.
    low, high = 1.02 ** bucket, 1.02 ** (bucket + 1)
    for latency in np.linspace(low, high, 101)[1:]:
        assert abs(bucket_value(bucket) - latency) / latency <= 0.02 / 2.02 + 1e-12
    assert abs(bucket_value(bucket) - high) / high == pytest.approx(0.02 / 2.02)  # the bound is reached

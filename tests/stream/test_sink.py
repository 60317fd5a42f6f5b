"""The sink's merge on real DuckDB, fed Arrow partials shaped like `batch_outcome`'s (no Spark needed)."""

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from obslab.errors import OffsetsMismatchError
from obslab.lab import Lab
from obslab.settings import load_settings
from obslab.stream.merge import OTHER_ENDPOINT
from obslab.stream.sink import OffsetAdvance, StreamSink

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)

_PARTIALS = pa.schema([("service", pa.string()), ("endpoint", pa.string()),
                       ("window_start", pa.timestamp("us", tz="UTC")), ("window_end", pa.timestamp("us", tz="UTC")),
                       ("bucket", pa.int32()), ("error_code", pa.int32()), ("count", pa.int64()),
                       ("errors", pa.int64()), ("latency_sum", pa.float64()),
                       ("max_event_time", pa.timestamp("us", tz="UTC"))])
_DEAD = pa.schema([("topic", pa.string()), ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
                   ("raw_payload", pa.string()), ("reason", pa.string())])


def _partials(rows: list[tuple[str, str, int, int]]) -> pa.Table:
    """(service, endpoint, events, failed of them) -> partial rows in the 09:00 window, as `batch_outcome`
    gives them: the successes in one row, the failures (status 500) in another."""
    data = []
    for service, endpoint, n, failed in rows:
        for count, code in ((n - failed, None), (failed, 500)):
            if count:
                data.append({"service": service, "endpoint": endpoint, "window_start": T0,
                             "window_end": T0 + timedelta(minutes=1), "bucket": 250, "error_code": code,
                             "count": count, "errors": count if code else 0, "latency_sum": 100.0 * count,
                             "max_event_time": T0 + timedelta(seconds=30)})
    return pa.Table.from_pylist(data, schema=_PARTIALS)


NO_DEAD = _DEAD.empty_table()


def _sink(tmp_path, **overrides):
    settings = load_settings(data_dir=tmp_path, **overrides)
    store = Lab(settings).store
    return StreamSink(store, settings, "q"), store


def test_endpoint_names_beyond_the_cap_are_counted_as_other(tmp_path):
    sink, store = _sink(tmp_path, endpoint_max_per_service=2)
    # Batch 0: checkout sends three names, search one. The two busiest checkout names are kept.
    sink.merge(0, _partials([("checkout", "/cart", 5, 1), ("checkout", "/pay", 3, 0), ("checkout", "/rare", 1, 1),
                             ("search", "/q", 4, 0)]), NO_DEAD)
    # Batch 1: checkout is full, so a new name goes to `other` however busy it is; search still has room.
    sink.merge(1, _partials([("checkout", "/flood", 50, 2), ("checkout", "/cart", 1, 0), ("search", "/suggest", 2, 0)]),
               NO_DEAD)
    sink.merge(2, _partials([("checkout", "/flood", 4, 0), ("checkout", "/pay", 1, 0)]), NO_DEAD)  # still `other`
    sink.merge(3, _partials([("search", "/q", 1, 0)]), NO_DEAD)  # only kept names: merged as they are
    rows = store.query("SELECT service, endpoint, request_count, error_count FROM endpoint_metrics ORDER BY 1, 2")
    assert rows == [
        ("checkout", "/cart", 6, 1),  # kept in batch 0: 5 + 1 events
        ("checkout", "/pay", 4, 0),  # kept in batch 0: 3 + 1
        ("checkout", OTHER_ENDPOINT, 55, 3),  # /rare 1 (one failed), then /flood 50 (two failed) and 4
        ("search", "/q", 5, 0),  # 4 + 1
        ("search", "/suggest", 2, 0),  # search's second name: within the cap of 2
    ]
    # The service totals still count every event: 65 for checkout, 7 for search.
    assert store.query("SELECT service, request_count, error_count FROM service_metrics ORDER BY 1") == [
        ("checkout", 65, 4), ("search", 7, 0)]
    # The error mix follows the endpoint: the failed /rare and /flood requests are `other`'s.
    assert store.query("SELECT endpoint, count FROM status_counts WHERE service = 'checkout' ORDER BY 1") == [
        ("/cart", 1), (OTHER_ENDPOINT, 3)]
    assert store.query("SELECT batch_id, endpoint_overflow FROM stream_batches ORDER BY 1") == [
        (0, 1), (1, 50), (2, 4), (3, 0)]
    assert sink.counters.endpoint_overflow == 55
    assert store.query("SELECT service, count(*) FROM stream_endpoints GROUP BY 1 ORDER BY 1") == [
        ("checkout", 2), ("search", 2)]


def test_the_store_records_each_batchs_offsets_and_refuses_a_second_writer(tmp_path):
    sink, store = _sink(tmp_path)
    topic = sink.settings.topic_raw_events
    sink.merge(0, _partials([("search", "/q", 10, 0)]), NO_DEAD, offsets=OffsetAdvance(topic, "id-1", {}, {0: 6, 1: 4}))
    sink.merge(1, _partials([("search", "/q", 5, 0)]), NO_DEAD,
               offsets=OffsetAdvance(topic, "id-1", {0: 6, 1: 4}, {0: 9, 1: 6}))
    assert store.query("SELECT kafka_partition, next_offset, topic_id FROM stream_offsets ORDER BY 1") == [
        (0, 9, "id-1"), (1, 6, "id-1")]
    # Each batch's range per partition, [from, to); the first batch had no position to start from.
    assert [r[0] for r in store.query("SELECT offsets FROM stream_batches ORDER BY batch_id")] == [
        f'{{"{topic}": {{"0": [null, 6], "1": [null, 4]}}}}', f'{{"{topic}": {{"0": [6, 9], "1": [4, 6]}}}}']
    # Another sink read the position before batch 1 moved it: its batch is refused and writes nothing.
    other = StreamSink(store, sink.settings, "other-query")
    with pytest.raises(OffsetsMismatchError, match="partition 0 from 6 to 9.*two streams count into one store"):
        other.merge(0, _partials([("search", "/q", 5, 0)]), NO_DEAD,
                    offsets=OffsetAdvance(topic, "id-1", {0: 6, 1: 4}, {0: 9, 1: 6}))
    assert store.query("SELECT sum(request_count) FROM service_metrics")[0][0] == 15  # 10 + 5, nothing more
    # A checkpoint behind the store never moves the position back.
    sink.merge(2, _partials([]), NO_DEAD, offsets=OffsetAdvance(topic, "id-1", {0: 9, 1: 6}, {0: 7, 1: 6}))
    assert dict(store.query("SELECT kafka_partition, next_offset FROM stream_offsets")) == {0: 9, 1: 6}


def test_a_replayed_batch_counts_neither_its_events_nor_its_referred_records_again(tmp_path):
    sink, store = _sink(tmp_path)
    sink.merge(0, _partials([("search", "/q", 10, 0)]), NO_DEAD, referred=3)
    # The same batch again (a crash between the store's commit and Spark's): skipped, so nothing is counted.
    assert sink.merge(0, _partials([("search", "/q", 10, 0)]), NO_DEAD, referred=3) == []
    sink.merge(1, _partials([("search", "/q", 2, 0)]), NO_DEAD, referred=4)
    assert (sink.counters.batches, sink.counters.skipped_replays, sink.counters.events) == (2, 1, 12)
    assert sink.counters.referred == 7  # batches 0 and 1, not the replay of 0
    assert store.query("SELECT sum(request_count) FROM service_metrics")[0][0] == 12


@pytest.mark.spark
def test_a_batch_waits_for_a_store_another_process_holds_instead_of_ending_the_stream(spark, tmp_path, caplog):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from obslab.stream.transform import parse_events
    from tests.stream.helpers import event_lines

    sink, store = _sink(tmp_path, store_lock_timeout_seconds=1.0)
    lines = event_lines(seconds=60)
    raw = spark.createDataFrame([("raw_events", 0, i, v) for i, v in enumerate(lines)],
                                "topic STRING, partition INT, offset LONG, value STRING")
    worker = Path(__file__).resolve().parents[1] / "store_worker.py"
    holder = subprocess.Popen([sys.executable, str(worker), "hold", str(store.path), "6"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert json.loads(holder.stdout.readline())["holding"]  # held before the batch arrives
        with caplog.at_level("WARNING", logger="obslab.stream.sink"):
            sink(parse_events(raw, 128), 0)  # waits while the other process holds the file
    finally:
        holder.kill()
        holder.wait()
    assert any("waits for the store" in r.getMessage() and f"PID {holder.pid}" in r.getMessage()
               for r in caplog.records)  # it did meet the lock, and said who held it
    assert store.query("SELECT sum(request_count) FROM service_metrics")[0][0] == len(lines)

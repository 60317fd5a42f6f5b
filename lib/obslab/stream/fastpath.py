"""The stream's fast path: the partials of plainly good events, computed by DuckDB in Spark's Python workers.

Spark's JSON reader parses every record with a general parser (Jackson, one record at a time), and that
parse is about a third of the stream's CPU. Nearly every record on `raw_events` is written one way, the
generator's: compact JSON, the six fields in schema order, printable ASCII, the time in UTC with a `Z`:

    {"event_id":"…","event_time":"2026-12-06T04:52:33.123Z","service":"checkout","endpoint":"/cart",
     "latency_ms":12.345,"status_code":200}

A record in exactly that form needs no general parser: one regular expression (`CANONICAL`, Arrow's RE2
over a whole Arrow batch at a time) tells it apart, and DuckDB's JSON reader takes out and casts its values,
which no escape can change. So each micro-batch goes through `mapInArrow` with `partials_of`, which, per
Spark task:

    drops the records the store has counted already (below its Kafka position, as `transform.unseen`);
    takes a record as a good event only when ALL of these hold: it matches `CANONICAL` in full; its time is
        a real date and time; its latency is at most MAX_LATENCY_MS; its endpoint at most
        ENDPOINT_MAX_LENGTH long; it is not dated after the future bound; its window is not final yet;
    adds the good events up into the transform's partials (keys and sums as `transform.batch_outcome`);
    and *refers* every other record (its partition and offset) back to the sink.

The sink runs the referred records through the full transform (`obslab.stream.transform`), as every record
went before. So the fast path decides nothing the transform would decide otherwise: a record it takes is
one the transform finds good with the same field values (the regular expression admits a subset of what
the transform accepts: no escapes, no white space, no exponents, no leading zeros, UTC only), and every
dead letter, with its reason, still comes from the transform. A producer that writes events another way
(other key order, spaces, time zones) is counted exactly the same, only at the transform's speed.

Times travel as epoch microseconds (int64), so no time zone setting of Spark or Arrow touches them.
"""

from __future__ import annotations

import math
from functools import partial

from obslab.schema import ENDPOINT_CHARS, MAX_LATENCY_MS
from obslab.stream.buckets import GAMMA, MIN_LATENCY_MS

_TEXT = r'[!#-\[\]-~][ !#-\[\]-~]*'  # printable ASCII but `"` and `\`, not starting with a space: never blank
# from 1970 on (windows are whole divisions of positive epoch microseconds); a real date is checked by the cast
_TIME = (r'(?:19[7-9][0-9]|2[0-9]{3})-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])'
         r'T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?Z')
CANONICAL = (rf'^\{{"event_id":"({_TEXT})","event_time":"({_TIME})","service":"({_TEXT})",'
             rf'"endpoint":"(/{ENDPOINT_CHARS}*)","latency_ms":((?:0|[1-9][0-9]{{0,8}})(?:\.[0-9]{{1,9}})?),'
             r'"status_code":([1-5][0-9][0-9])\}$')

# What `partials_of` yields: the transform's partial keys and sums (times as epoch microseconds), or a
# referred record (`referred_partition`, `referred_offset` set, the rest NULL).
SCHEMA = ("service string, endpoint string, window_start_us long, bucket int, error_code int, count long, "
          "errors long, latency_sum double, max_event_us long, referred_partition int, referred_offset long")
# The five values the partials need, as DuckDB's JSON reader casts them (a failed cast is NULL: no such day,
# for one). The event id is checked by CANONICAL and not needed further.
_FIELDS = ('{"event_time":"TIMESTAMP","service":"VARCHAR","endpoint":"VARCHAR","latency_ms":"DOUBLE",'
           '"status_code":"INTEGER"}')
# Records a task reads before it adds them up (Arrow batches of Spark's arrow.maxRecordsPerBatch collect
# to this): a 2M-event backlog is not held whole in one worker.
CHUNK_RECORDS = 200_000


def partials_fn(*, window_seconds: int, endpoint_max_length: int, next_offsets: dict[int, int],
                future_after_us: int, watermark_us: int):
    """The `mapInArrow` function of one batch: Arrow batches of (partition, offset, value) -> `SCHEMA`."""
    return partial(partials_of, window_us=window_seconds * 1_000_000, endpoint_max_length=endpoint_max_length,
                   next_offsets=dict(next_offsets), future_after_us=future_after_us, watermark_us=watermark_us)


def partials_of(batches, *, window_us: int, endpoint_max_length: int, next_offsets: dict[int, int],
                future_after_us: int, watermark_us: int):
    """Per Spark task: the partials of its good events and the records it refers (see the module's doc)."""
    import duckdb
    import pyarrow as pa

    con = duckdb.connect()
    con.execute("SET threads = 1")  # Spark runs one task per core already
    sql = _chunk_sql(window_us, endpoint_max_length, next_offsets, future_after_us, watermark_us)
    pending, rows, outputs = [], 0, []
    for batch in batches:
        pending.append(batch)
        rows += batch.num_rows
        if rows >= CHUNK_RECORDS:
            outputs.append(_run(con, sql, "chunk", _canonical_text(pa.Table.from_batches(pending))))
            pending, rows = [], 0
    if pending:
        outputs.append(_run(con, sql, "chunk", _canonical_text(pa.Table.from_batches(pending))))
    if not outputs:
        return
    merged = pa.concat_tables(outputs)
    if len(outputs) > 1:  # one row per key for the task: the chunks' partials added up
        merged = _run(con, _MERGE_SQL, "parts", merged)
    yield from merged.to_batches()


def _canonical_text(table):
    """(partition, offset, value) -> (partition, offset, text): the value as text where it is in CANONICAL
    form, NULL elsewhere. Arrow's RE2 matches the bytes as they are (faster here than DuckDB's, which needs
    them as text first); a match is printable ASCII, so its cast to text cannot fail."""
    import pyarrow as pa
    import pyarrow.compute as pc

    value = table["value"]
    canonical = pc.fill_null(pc.match_substring_regex(value, CANONICAL), False)
    text = pc.if_else(canonical, value, pa.scalar(None, value.type)).cast(pa.string())
    return pa.table({"partition": table["partition"], "offset": table["offset"], "text": text})


def _run(con, sql: str, name: str, table):
    con.register(name, table)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.unregister(name)


_MERGE_SQL = """
    SELECT service, endpoint, window_start_us, bucket, error_code, sum(count)::BIGINT AS count,
           sum(errors)::BIGINT AS errors, sum(latency_sum) AS latency_sum, max(max_event_us) AS max_event_us,
           NULL::INTEGER AS referred_partition, NULL::BIGINT AS referred_offset
    FROM parts WHERE referred_offset IS NULL GROUP BY ALL
    UNION ALL
    SELECT * FROM parts WHERE referred_offset IS NOT NULL"""


def _chunk_sql(window_us: int, endpoint_max_length: int, next_offsets: dict[int, int], future_after_us: int,
               watermark_us: int) -> str:
    # Every value below is an int the sink computed (or a constant of this module), written as a literal:
    # the records come in as the registered table `chunk`, so no text of a record is SQL.
    start = " ".join(f"WHEN {int(p)} THEN {int(o)}" for p, o in sorted(next_offsets.items()))
    start = f"CASE partition {start} ELSE 0 END" if start else "0"
    log_gamma = repr(math.log(GAMMA))
    return f"""
        WITH fields AS (
            -- `text` is the record when it matched CANONICAL (see `_canonical_text`), else NULL: the JSON reader
            -- takes the values out of the records that matched, where no escape can change them, and casts them
            -- (unnest: the struct's fields as columns, so the reader runs once per record, not once per field)
            SELECT partition, "offset", unnest(json_transform(text, '{_FIELDS}'))
            FROM chunk WHERE "offset" >= {start}
        ), typed AS (
            SELECT partition, "offset", service, endpoint, epoch_us(event_time) AS event_us, latency_ms, status_code
            FROM fields
        ), judged AS MATERIALIZED (  -- read once, for both halves of the UNION
            SELECT *, event_us // {int(window_us)} * {int(window_us)} AS window_start_us,
                   coalesce(event_us IS NOT NULL AND latency_ms IS NOT NULL AND status_code IS NOT NULL
                            AND latency_ms <= {MAX_LATENCY_MS!r} AND length(endpoint) <= {int(endpoint_max_length)}
                            AND event_us <= {int(future_after_us)}
                            AND event_us // {int(window_us)} * {int(window_us)} + {int(window_us)}
                                > {int(watermark_us)}, false) AS good
            FROM typed
        )
        SELECT service, endpoint, window_start_us,
               (ceil(ln(greatest(latency_ms, {MIN_LATENCY_MS!r})) / {log_gamma}))::INTEGER - 1 AS bucket,
               CASE WHEN status_code >= 400 THEN status_code END AS error_code,
               count(*)::BIGINT AS count, count(*) FILTER (WHERE status_code >= 400)::BIGINT AS errors,
               sum(latency_ms) AS latency_sum, max(event_us) AS max_event_us,
               NULL::INTEGER AS referred_partition, NULL::BIGINT AS referred_offset
        FROM judged WHERE good GROUP BY ALL
        UNION ALL
        SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, partition::INTEGER, "offset"::BIGINT
        FROM judged WHERE NOT good"""


# More referred records than this in one batch (a flood of odd records) and the whole batch goes the
# transform's way: a filter naming each of them would cost more than parsing all.
REFER_LIMIT = 20_000


def fast_outcome(raw, settings, *, next_offsets: dict[int, int], future_after_us: int, watermark_us: int,
                 transformed):
    """(partials, dead letters, referred count) of one micro-batch of Kafka's rows of events (a DataFrame of
    partition, offset, value): the fast path's partials, and `transformed`'s outcome (the full transform, a
    function of such rows) of the records it referred."""
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    fn = partials_fn(window_seconds=settings.window_seconds, endpoint_max_length=settings.endpoint_max_length,
                     next_offsets=next_offsets, future_after_us=future_after_us, watermark_us=watermark_us)
    rows = raw.select(F.col("partition").cast("int").alias("partition"),
                      F.col("offset").cast("long").alias("offset"), "value")
    out = rows.mapInArrow(fn, SCHEMA).toArrow()
    is_referred = pc.is_valid(out["referred_offset"])
    fast = as_partials(out.filter(pc.invert(is_referred)), settings.window_seconds)
    referred = out.filter(is_referred)
    if referred.num_rows == 0:
        return fast, no_dead_letters(), 0
    if referred.num_rows > REFER_LIMIT:  # a batch of mostly odd records: all of it the slow way
        partials, dead = transformed(raw)
        return partials, dead, referred.num_rows
    partials, dead = transformed(raw.filter(referred_filter(referred)))
    return concat_partials(partials, fast), dead, referred.num_rows


def referred_filter(referred):
    """A Spark condition that holds for the referred records (`referred_partition`, `referred_offset`)."""
    from pyspark.sql import functions as F

    by_partition: dict[int, list[int]] = {}
    for p, o in zip(referred["referred_partition"].to_pylist(), referred["referred_offset"].to_pylist()):
        by_partition.setdefault(p, []).append(o)
    condition = None
    for p, offsets in sorted(by_partition.items()):
        test = (F.col("partition") == p) & F.col("offset").isin(offsets)
        condition = test if condition is None else condition | test
    return condition


def as_partials(out, window_seconds: int):
    """`partials_of`'s partial rows -> the transform's partials (`split_outcome`'s first table)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stamp = pa.timestamp("us", tz="UTC")
    start = out["window_start_us"]
    return pa.table({
        "service": out["service"], "endpoint": out["endpoint"],
        "window_start": start.cast(stamp),
        "window_end": pc.add(start, window_seconds * 1_000_000).cast(stamp),
        "bucket": out["bucket"], "error_code": out["error_code"], "count": out["count"], "errors": out["errors"],
        "latency_sum": out["latency_sum"], "max_event_time": out["max_event_us"].cast(stamp)})


def concat_partials(transformed, fast):
    """The transform's partials and the fast path's as one table (the sink adds up equal keys)."""
    import pyarrow as pa

    return pa.concat_tables([transformed, fast.cast(transformed.schema)])


def no_dead_letters():
    """An empty dead-letter table, shaped as `split_outcome`'s second."""
    import pyarrow as pa

    return pa.table({"topic": pa.array([], pa.string()), "kafka_partition": pa.array([], pa.int32()),
                     "kafka_offset": pa.array([], pa.int64()), "raw_payload": pa.array([], pa.string()),
                     "reason": pa.array([], pa.string()), "count": pa.array([], pa.int64())})

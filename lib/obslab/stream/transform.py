"""The stream's transform: DataFrame -> DataFrame functions, the same on a stream and on a static frame.

    Kafka rows (topic, partition, offset, value)
      -> parse_events      one row per record: typed event fields + `reason` (NULL when the event is good)
      -> unseen            only the records the store has not counted yet (by Kafka offset)
      -> with_window       + window_start, window_end (tumbling, event time)
      -> mark_untimely     `reason` future (dated ahead of the stream's clock) or late (its window is final)
      -> batch_outcome     good events: (service, endpoint, window_start, bucket, error_code) -> count,
                           errors, latency_sum, max_event_time; bad events: one row each, with their reason

The partials are mergeable: adding the partials of two batches gives the partials of both, so a
window spread over many micro-batches ends with its full value (`obslab.stream.sink` merges them).
Latency percentiles come from log-spaced buckets (see GAMMA) rather than from a sample.
"""

from __future__ import annotations

import math
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from obslab.schema import ENDPOINT_PATTERN, EVENT, MAX_LATENCY_MS  # noqa: F401 - ENDPOINT_PATTERN for spans, too
# the log buckets (obslab.stream.buckets), here too for the transform's callers
from obslab.stream.buckets import GAMMA, MIN_LATENCY_MS, RELATIVE_ACCURACY, bucket_value  # noqa: F401


_FIELDS = EVENT.column_names  # event_id, event_time, service, endpoint, latency_ms, status_code
_TEXT_SCHEMA = ", ".join(f"{name} STRING" for name in _FIELDS) + ", _corrupt STRING"
_JSON_SPACE = " \t\n\r"
# What Jackson's copy of a NaN or Infinity number token reads as in a STRING field: quoted.
_NON_FINITE_TOKENS = ['"NaN"', '"Infinity"', '"-Infinity"']

PARSED_COLUMNS = ["topic", "kafka_partition", "kafka_offset", "raw_payload", *_FIELDS, "reason"]



def parse_events(raw: DataFrame, endpoint_max_length: int) -> DataFrame:
    """Kafka rows -> typed events plus a `reason` why a record cannot be used (NULL when it can).

    Reasons: empty_payload, malformed_json, missing_field:<name>, wrong_type:<name>,
    out_of_range:latency_ms (negative, not finite, or over MAX_LATENCY_MS: a day), out_of_range:status_code (not 100-599),
    invalid:endpoint (longer than ENDPOINT_MAX_LENGTH or not a URL path, see ENDPOINT_PATTERN).
    """
    text = kafka_text(raw, "raw_payload")
    fields = F.from_json("raw_payload", _TEXT_SCHEMA, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"})
    parsed = text.withColumn("j", fields)
    typed = parsed.select(
        "topic", "kafka_partition", "kafka_offset", "raw_payload", "j",
        F.col("j.event_id").alias("event_id"),
        F.expr("try_cast(j.event_time AS TIMESTAMP)").alias("event_time"),  # the fast ISO parser, not a formatter
        F.col("j.service").alias("service"),
        F.col("j.endpoint").alias("endpoint"),
        F.expr("try_cast(j.latency_ms AS DOUBLE)").alias("latency_ms"),
        F.expr("try_cast(j.status_code AS INT)").alias("status_code"),
    )
    return typed.withColumn("reason", _reason(endpoint_max_length)).select(*PARSED_COLUMNS)


def more_than_one_value(record: Column) -> Column:
    """True when the record holds more than one JSON value: `{...} {...}` (two events), `{...}}`, `{...} text`.

    Jackson stops after the first complete value, so such a record would parse as one good event and the
    rest would be lost unseen. The first value of a record that holds more ends before its last non-blank
    character; a `}` closes it, so text other than JSON white space follows the record's first `}`. That
    test is a scan for one character; only records that pass it (an event with a nested object, or text
    after the first value) are read a second time, wrapped as `[<record>, {"n": <its length>}]`: what
    follows the first value then breaks the array, adds elements to it or ends it early. Only a record
    that itself goes on with `,{"n":<its own length>}]` could pass, which no writer does by accident.
    """
    first_brace = F.instr(record, "}")
    # the usual event (ASCII, one `}` at its very end) is settled by the first test, octet_length costs nothing
    ends_there = first_brace == F.octet_length(record)
    after_first_brace = F.substring(record, first_brace + 1, 1 << 30)
    suspect = ~ends_there & (F.btrim(after_first_brace, F.lit(_JSON_SPACE)) != F.lit(""))
    length = F.length(record).cast("string")
    wrapped = F.concat(F.lit("["), record, F.lit(',{"n":'), length, F.lit("}]"))
    # json_array_length and get_json_object, not from_json: they keep this step in Spark's generated code
    one_value = (F.json_array_length(wrapped) == 2) & (F.get_json_object(wrapped, "$[1].n") == length)
    return suspect & ~F.coalesce(one_value, F.lit(False))


def kafka_text(raw: DataFrame, text: str) -> DataFrame:
    """Kafka rows -> topic, kafka_partition, kafka_offset and the record's value as text (column `text`)."""
    return raw.select(
        F.col("topic"),
        F.col("partition").cast("int").alias("kafka_partition"),
        F.col("offset").cast("long").alias("kafka_offset"),
        F.col("value").cast("string").alias(text),
    )


def status_out_of_range() -> Column:
    """A status code that is no HTTP status (outside 100-599)."""
    return (F.col("status_code") < 100) | (F.col("status_code") > 599)


def invalid_endpoint(endpoint_max_length: int) -> Column:
    """An endpoint name longer than the bound or not a URL path (see ENDPOINT_PATTERN)."""
    endpoint = F.col("endpoint")
    return (F.length(endpoint) > endpoint_max_length) | ~endpoint.rlike(ENDPOINT_PATTERN)


def _missing(name: str) -> Column:
    value = F.col(f"j.{name}")
    return value.isNull() | (F.trim(value) == "")


def _reason(endpoint_max_length: int) -> Column:
    all_missing = F.lit(True)
    for name in _FIELDS:
        all_missing = all_missing & F.col(f"j.{name}").isNull()
    rule = F.when(F.col("raw_payload").isNull() | (F.trim("raw_payload") == ""), F.lit("empty_payload"))
    rule = rule.when(F.col("j").isNull() | F.col("j._corrupt").isNotNull() | all_missing
                     | more_than_one_value(F.col("raw_payload")), F.lit("malformed_json"))
    for name in _FIELDS:
        rule = rule.when(_missing(name), F.lit(f"missing_field:{name}"))
    # NaN and Infinity are numbers to Jackson, not finite ones: the reason is their range, as for "NaN" as text.
    rule = rule.when(F.col("j.latency_ms").isin(_NON_FINITE_TOKENS), F.lit("out_of_range:latency_ms"))
    for name in ("event_time", "latency_ms", "status_code"):
        rule = rule.when(F.col(name).isNull(), F.lit(f"wrong_type:{name}"))
    finite = ~F.isnan("latency_ms") & (F.abs("latency_ms") != F.lit(math.inf))
    rule = rule.when(~finite | (F.col("latency_ms") < 0) | (F.col("latency_ms") > MAX_LATENCY_MS),
                     F.lit("out_of_range:latency_ms"))
    rule = rule.when(status_out_of_range(), F.lit("out_of_range:status_code"))
    rule = rule.when(invalid_endpoint(endpoint_max_length), F.lit("invalid:endpoint"))
    return rule.otherwise(F.lit(None).cast("string"))


def unseen(parsed: DataFrame, topic: str, next_offsets: dict[int, int]) -> DataFrame:
    """Only the records at or after the store's next offset of their partition: the others are counted already."""
    if not next_offsets:
        return parsed
    start = None
    for partition, offset in sorted(next_offsets.items()):
        test = F.col("kafka_partition") == partition
        start = F.when(test, F.lit(offset)) if start is None else start.when(test, F.lit(offset))
    return parsed.filter((F.col("topic") != topic) | (F.col("kafka_offset") >= start.otherwise(F.lit(0))))


def mark_untimely(framed: DataFrame, watermark: datetime, future_after: datetime) -> DataFrame:
    """Good events dated after `future_after` get reason `future`; those whose window ended at or before
    `watermark` (final already) get reason `late`. Both go to the dead letters instead of the windows."""
    good = F.col("reason").isNull()
    # A future event must not count: its time would become the stream's latest event time and push
    # the watermark ahead of every real event, which would then all be late.
    future = good & (F.col("event_time") > F.lit(future_after))
    late = good & (F.col("window_end") <= F.lit(watermark))
    return framed.withColumn("reason", F.when(future, F.lit("future")).when(late, F.lit("late"))
                                        .otherwise(F.col("reason")))


def with_window(events: DataFrame, window_seconds: int) -> DataFrame:
    """Add the tumbling event-time window (aligned to the epoch) each event falls in."""
    start_s = F.floor(F.unix_micros("event_time") / F.lit(1_000_000 * window_seconds)) * window_seconds
    return (events.withColumn("window_start", F.timestamp_seconds(start_s))
                  .withColumn("window_end", F.timestamp_seconds(start_s + window_seconds)))


def latency_bucket(latency: Column) -> Column:
    """Log bucket index of a latency in ms (see GAMMA)."""
    clamped = F.greatest(latency, F.lit(MIN_LATENCY_MS))
    return F.ceil(F.log(clamped) / F.lit(math.log(GAMMA))).cast("int") - 1


def _partial_aggregates() -> list[Column]:
    return [
        F.count(F.lit(1)).alias("count"),
        F.sum((F.col("status_code") >= 400).cast("long")).alias("errors"),
        F.sum("latency_ms").alias("latency_sum"),
        F.max("event_time").alias("max_event_time"),
    ]


# error_code: the status code of failed requests (>= 400), NULL for the rest, so the error mix per
# window comes out of the same aggregation at the cost of a few extra rows (errors are rare).
PARTIAL_KEYS = ["service", "endpoint", "window_start", "window_end", "bucket", "error_code"]
DEAD_KEYS = ["topic", "kafka_partition", "kafka_offset", "raw_payload", "reason"]


def batch_outcome(marked: DataFrame, extra_keys: tuple[str, ...] = ()) -> DataFrame:
    """Partials of the good events and the bad events themselves, in ONE aggregation.

    Good rows group by the partial keys (dead-letter keys NULL); each bad row is its own group
    (partial keys NULL). Splitting with a filter instead would let Spark push the filter below the
    parse and run from_json once per field reference: several times slower. `extra_keys` split the
    partials further (evaluation splits them by trigger interval to replay micro-batches).
    """
    good = F.col("reason").isNull()
    special = {"bucket": latency_bucket(F.col("latency_ms")),
               "error_code": F.when(F.col("status_code") >= 400, F.col("status_code"))}
    keys = [F.when(good, special.get(k, F.col(k))).alias(k) for k in [*PARTIAL_KEYS, *extra_keys]]
    keys += [F.when(~good, F.col(k)).alias(f"dead_{k}") for k in DEAD_KEYS]
    return marked.groupBy(*keys).agg(*_partial_aggregates())


def split_outcome(outcome, extra_keys: tuple[str, ...] = ()):
    """`batch_outcome` collected as Arrow -> (partials, dead letters), the two tables the sink merges
    (the dead letters with `count`: how many rows each stands for, e.g. the skipped spans of a record)."""
    import pyarrow.compute as pc

    is_dead = pc.is_valid(outcome["dead_reason"])
    partials = outcome.filter(pc.invert(is_dead)).select(
        [*PARTIAL_KEYS, *extra_keys, "count", "errors", "latency_sum", "max_event_time"])
    dead = outcome.filter(is_dead).select([*(f"dead_{k}" for k in DEAD_KEYS), "count"]).rename_columns(
        [*DEAD_KEYS, "count"])
    return partials, dead

"""OpenTelemetry spans as request events: the stream's parse step for the Collector's traces topic.

The Collector's Kafka exporter writes each export request as one Kafka record in OTLP JSON (an
ExportTraceServiceRequest: resourceSpans -> scopeSpans -> spans). `parse_spans` turns those
records into the rows `parse_events` gives for the generator's events, one per span, so the rest
of the stream (offsets, windows, dead letters, the sink) is the same:

    service      the resource's `service.name`
    endpoint     `http.route`; else the span name when it is a URL path; else the path of a
                 "METHOD /path" name; else "/" and the name with every other character as "_"
    event_time   the span's start; latency_ms its end - start
    status_code  `http.response.status_code` (or the older `http.status_code`); without one,
                 500 for a span whose status is ERROR, else 200
    event_id     trace id / span id

Only SERVER spans are requests a service answered. The others (CLIENT, INTERNAL, PRODUCER,
CONSUMER) get reason `skipped:<kind>`: the sink counts them as skipped, not as dead letters. A
record that is not OTLP JSON traces (`malformed_json`, `no_spans`) or a SERVER span that cannot
be read (`missing_field:service.name`, `wrong_type:start_time`, `out_of_range:latency_ms`, ...)
is a dead letter with its reason, as for events.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from obslab.schema import MAX_LATENCY_MS, SKIPPED  # the reason prefix of spans that are no request (counted, not dead letters)
from obslab.stream.transform import (ENDPOINT_PATTERN, PARSED_COLUMNS, invalid_endpoint, kafka_text,
                                     more_than_one_value, status_out_of_range)

_VALUE = "STRUCT<stringValue: STRING, intValue: STRING>"  # OTLP JSON writes 64-bit integers as strings
_ATTRIBUTES = f"ARRAY<STRUCT<key: STRING, value: {_VALUE}>>"
_SPAN = (f"STRUCT<traceId: STRING, spanId: STRING, name: STRING, kind: STRING, startTimeUnixNano: STRING, "
         f"endTimeUnixNano: STRING, attributes: {_ATTRIBUTES}, status: STRUCT<code: STRING>>")
OTLP_TRACES = (f"STRUCT<resourceSpans: ARRAY<STRUCT<resource: STRUCT<attributes: {_ATTRIBUTES}>, "
               f"scopeSpans: ARRAY<STRUCT<spans: ARRAY<{_SPAN}>>>>>, _corrupt: STRING>")

# Span kinds and status codes: OTLP JSON writes enums as integers; the names are accepted too.
_KINDS = {"1": "internal", "2": "server", "3": "client", "4": "producer", "5": "consumer",
          "SPAN_KIND_INTERNAL": "internal", "SPAN_KIND_SERVER": "server", "SPAN_KIND_CLIENT": "client",
          "SPAN_KIND_PRODUCER": "producer", "SPAN_KIND_CONSUMER": "consumer"}
_ERROR_STATUS = ("2", "STATUS_CODE_ERROR")


def parse_spans(raw: DataFrame, endpoint_max_length: int) -> DataFrame:
    """Kafka rows of OTLP JSON traces -> one row per span, shaped as `parse_events`' rows (see the
    module's docstring), with `reason` NULL for a SERVER span that can be counted."""
    text = kafka_text(raw, "message")
    j = F.from_json("message", OTLP_TRACES, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"})
    # two payloads in one record would otherwise count the first and lose the second unseen
    unreadable = F.col("j").isNull() | F.col("j._corrupt").isNotNull() | more_than_one_value(F.col("message"))
    has_spans = F.exists("j.resourceSpans", lambda rs: F.exists(rs["scopeSpans"], lambda ss: F.size(ss["spans"]) > 0))
    # Each span row carries what its record is, not the record: a whole record's text and parse on
    # every span of it would grow with the square of the spans per record. The text is kept only
    # for a record that is itself the dead letter (unreadable, or no spans in it).
    records = text.withColumn("j", j).select(
        "topic", "kafka_partition", "kafka_offset",
        F.when(F.col("message").isNull() | (F.trim("message") == ""), F.lit("empty_payload"))
         .when(unreadable, F.lit("malformed_json"))
         .when(~F.coalesce(has_spans, F.lit(False)), F.lit("no_spans")).alias("record_problem"),
        F.col("j.resourceSpans").alias("resource_spans"), F.col("message"))
    records = records.withColumn("message", F.when(F.col("record_problem").isNotNull(), F.col("message")))
    # explode_outer keeps a record without spans as one row (span NULL): it is a dead letter, not lost
    # One level at a time, and each exploded struct taken apart before the next: a row must never
    # carry the array it came from (a resource's scopes, a scope's spans) beside its own element.
    keys = ["topic", "kafka_partition", "kafka_offset", "record_problem", "message"]
    resources = records.select(*keys, F.explode_outer("resource_spans").alias("rs"))
    resources = resources.select(*keys, F.col("rs.resource.attributes").alias("resource"),
                                 F.col("rs.scopeSpans").alias("scope_spans"))
    scopes = resources.select(*keys, "resource", F.explode_outer("scope_spans").alias("ss"))
    scopes = scopes.select(*keys, "resource", F.col("ss.spans").alias("spans"))
    spans = scopes.select(*keys, "resource", F.explode_outer("spans").alias("span"))
    # an empty resource or scope beside full ones holds nothing to count or lose
    spans = spans.filter(F.col("span").isNotNull() | F.col("record_problem").isNotNull())
    start, end = _nanos("span.startTimeUnixNano"), _nanos("span.endTimeUnixNano")
    rows = spans.select(
        "topic", "kafka_partition", "kafka_offset", "record_problem", "message", "span",
        F.concat_ws("/", "span.traceId", "span.spanId").alias("event_id"),
        F.timestamp_micros(F.floor(start / 1000).cast("long")).alias("event_time"),
        _attribute("resource", "service.name").alias("service"),
        _endpoint().alias("endpoint"),
        ((end - start) / F.lit(1e6)).alias("latency_ms"),
        _status_code().alias("status_code"),
        _kind().alias("kind"),
    )
    # A dead letter keeps what went wrong: the span, or the record when the record is the problem.
    payload = F.coalesce(F.col("message"), F.to_json("span"))
    reason = F.col("reason")
    return (rows.withColumn("reason", _reason(endpoint_max_length))
                .withColumn("raw_payload", F.when(reason.isNotNull() & ~reason.startswith(SKIPPED), payload))
                .select(*PARSED_COLUMNS))


def _nanos(path: str) -> Column:
    return F.expr(f"try_cast({path} AS BIGINT)")


def _attribute(array: str, key: str) -> Column:
    """The value of attribute `key` in an OTLP attribute array, as text (string or integer value)."""
    found = F.filter(F.col(array), lambda a: a["key"] == F.lit(key))
    value = F.try_element_at(found, F.lit(1))["value"]
    return F.coalesce(value["stringValue"], value["intValue"])


def _endpoint() -> Column:
    name = F.col("span.name")
    route = _attribute("span.attributes", "http.route")
    method_path = F.regexp_extract(name, r"^[A-Z]+ (/\S*)$", 1)
    cleaned = F.concat(F.lit("/"), F.regexp_replace(name, r"[^A-Za-z0-9._~-]+", "_"))
    return (F.when(route.isNotNull() & (F.trim(route) != ""), route)
             .when(name.rlike(ENDPOINT_PATTERN), name)
             .when(method_path != "", method_path)
             .when(name.isNotNull() & (F.trim(name) != ""), cleaned))


def _status_code() -> Column:
    code = F.coalesce(_attribute("span.attributes", "http.response.status_code"),
                      _attribute("span.attributes", "http.status_code"))
    failed = F.col("span.status.code").isin(*_ERROR_STATUS)
    return F.when(code.isNull(), F.when(failed, F.lit(500)).otherwise(F.lit(200))).otherwise(code.try_cast("int"))


def _kind() -> Column:
    mapping = F.create_map(*[F.lit(x) for pair in _KINDS.items() for x in pair])
    return F.coalesce(mapping[F.col("span.kind")], F.lit("unspecified"))


def _reason(endpoint_max_length: int) -> Column:
    rule = F.when(F.col("record_problem").isNotNull(), F.col("record_problem"))
    rule = rule.when(F.col("kind") != "server", F.concat(F.lit(SKIPPED), F.col("kind")))
    service = F.col("service")
    rule = rule.when(service.isNull() | (F.trim(service) == ""), F.lit("missing_field:service.name"))
    rule = rule.when(F.col("event_time").isNull(), F.lit("wrong_type:start_time"))
    rule = rule.when(F.col("latency_ms").isNull(), F.lit("wrong_type:end_time"))
    rule = rule.when((F.col("latency_ms") < 0) | (F.col("latency_ms") > MAX_LATENCY_MS), F.lit("out_of_range:latency_ms"))
    rule = rule.when(F.col("status_code").isNull(), F.lit("wrong_type:status_code"))
    rule = rule.when(status_out_of_range(), F.lit("out_of_range:status_code"))
    rule = rule.when(F.col("endpoint").isNull() | invalid_endpoint(endpoint_max_length), F.lit("invalid:endpoint"))
    return rule.otherwise(F.lit(None).cast("string"))

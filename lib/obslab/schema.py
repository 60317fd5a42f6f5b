"""Event and table schemas, defined once; the DuckDB DDL derives from here."""

from __future__ import annotations

from dataclasses import dataclass, field

# Neutral type names -> DuckDB type.
_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "int": "INTEGER",
    "long": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",  # always UTC
    "json": "JSON",
}


@dataclass(frozen=True)
class Column:
    """One column: neutral type, whether it may be NULL, and what it means."""

    name: str
    type: str
    nullable: bool = True
    doc: str = ""

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.type!r}; known: {sorted(_TYPES)}")

    @property
    def duckdb_type(self) -> str:
        return _TYPES[self.type]


@dataclass(frozen=True)
class Table:
    """A table of the store: columns in order and the key that upserts replace on."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    doc: str = ""
    defaults: dict[str, str] = field(default_factory=dict)  # column -> SQL default expression

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        missing = [k for k in self.key if k not in names]
        if missing:
            raise ValueError(f"table {self.name}: key columns {missing} are not columns")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self) -> str:
        """CREATE TABLE IF NOT EXISTS for DuckDB."""
        lines = []
        for c in self.columns:
            line = f"    {c.name} {c.duckdb_type}"
            if not c.nullable or c.name in self.key:
                line += " NOT NULL"
            if c.name in self.defaults:
                line += f" DEFAULT {self.defaults[c.name]}"
            lines.append(line)
        if self.key:
            lines.append(f"    PRIMARY KEY ({', '.join(self.key)})")
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n" + ",\n".join(lines) + "\n)"


def C(name: str, type: str, nullable: bool = True, doc: str = "") -> Column:  # noqa: N802 - reads like a table
    return Column(name, type, nullable, doc)


# ---------------------------------------------------------------- the raw event on the wire

EVENT = Table(
    "raw_event",
    (
        C("event_id", "string", False, "unique, deterministic for a seed"),
        C("event_time", "timestamp", False, "ISO-8601 UTC ending in Z in JSON"),
        C("service", "string", False, "checkout | payments | search"),
        C("endpoint", "string", False, "HTTP path, e.g. /api/cart"),
        C("latency_ms", "double", False, "request latency in milliseconds, >= 0"),
        C("status_code", "int", False, "HTTP status code"),
    ),
    doc="One request observed by a service; JSON on the raw_events topic, key = service.",
)

# ---------------------------------------------------------------- store tables

_WINDOW_METRICS = (
    C("window_start", "timestamp", False, "inclusive window start (UTC)"),
    C("window_end", "timestamp", False, "exclusive window end (UTC)"),
    C("request_count", "long", False, "events in the window"),
    C("error_count", "long", False, "events with status_code >= 400"),
    C("error_rate", "double", False, "error_count / request_count"),
    C("avg_latency_ms", "double", False),
    C("p50_latency_ms", "double", False, "approximate percentile"),
    C("p95_latency_ms", "double", False, "approximate percentile"),
    C("p99_latency_ms", "double", False, "approximate percentile"),
    C("is_final", "bool", False, "true once the watermark has passed the window end"),
    C("updated_at", "timestamp", False, "when this row was last written"),
)

SERVICE_METRICS = Table(
    "service_metrics",
    (C("service", "string", False), *_WINDOW_METRICS),
    key=("service", "window_start"),
    doc="Per-service metrics of one event-time window.",
)

ENDPOINT_METRICS = Table(
    "endpoint_metrics",
    (C("service", "string", False), C("endpoint", "string", False), *_WINDOW_METRICS,
     C("latency_sum_ms", "double", True, "sum of latencies: the mergeable state behind avg_latency_ms")),
    key=("service", "endpoint", "window_start"),
    doc="Per-endpoint metrics of one event-time window.",
)

ANOMALIES = Table(
    "anomalies",
    (
        C("anomaly_id", "string", False, "deterministic: detector + service + window"),
        C("incident_id", "string", True, "incident this anomaly belongs to"),
        C("detector", "string", False),
        C("service", "string", False),
        C("endpoint", "string"),
        C("metric", "string", False),
        C("value", "double", False),
        C("baseline", "double"),
        C("threshold", "double"),
        C("window_start", "timestamp", False),
        C("window_end", "timestamp", False),
        C("request_count", "long"),
        C("severity", "string", False, "medium | high | critical"),
        C("used_partial_window", "bool", False, "true when first raised while its window was still open"),
        C("detected_at", "timestamp", False),
    ),
    key=("anomaly_id",),
    doc="One anomalous window found by one detector, with its evidence.",
)

INCIDENT_SUMMARIES = Table(
    "incident_summaries",
    (
        C("incident_id", "string", False),
        C("facts_hash", "string", False, "sha256 of the facts; same facts are not narrated twice"),
        C("facts", "json", False),
        C("title", "string", False),
        C("summary", "string", False),
        C("likely_causes", "json"),
        C("impact", "string"),
        C("suggested_actions", "json"),
        C("grounded", "bool", False),
        C("backend", "string", False, "ollama | llamacpp | template"),
        C("model", "string"),
        C("latency_ms", "double"),
        C("tokens", "long"),
        C("prompt_version", "string"),
        C("created_at", "timestamp", False),
        C("requested_backend", "string", True, "the backend asked for (auto resolved); differs from backend on fallback"),
        C("attempts", "int", True, "model calls made (a second one after an ungrounded first)"),
        C("fallback_reason", "string", True, "why the template text was stored instead of the model's"),
    ),
    key=("incident_id", "facts_hash"),
    doc="The narrator's explanation of one incident, with the facts it was given.",
)

INJECTED_INCIDENTS = Table(
    "injected_incidents",
    (
        C("run_id", "string", False),
        C("fault_id", "string", False, "unique within the run"),
        C("scenario", "string", False),
        C("fault_type", "string", False),
        C("service", "string", False),
        C("endpoint", "string"),
        C("start_time", "timestamp", False),
        C("end_time", "timestamp", True, "NULL while the fault is still running"),
        C("magnitude", "double"),
        C("benign", "bool", True, "true for a benign event (flash crowd, drift, deploy blip) that should not page"),
        C("root_cause", "string", True, "service where the fault began: its own service, or the callee a cascade "
                                        "came from"),
        C("cause_fault_id", "string", True, "for a cascade's effect on a caller: the fault it propagated from"),
    ),
    key=("run_id", "fault_id"),
    doc="Ground truth: every fault and benign event the generator actually injected.",
)

SERVICE_CATALOG = Table(
    "service_catalog",
    (
        C("service", "string", False),
        C("endpoints", "json", True, "the service's endpoint paths, as the scenario declares them"),
        C("sla_ms", "double", True, "latency SLA; LATENCY_SLA_MS overrides it"),
        C("slo_availability", "double", True, "availability SLO; SLO_AVAILABILITY overrides it"),
        C("calls", "string", True, "comma-separated services this one calls (declared dependencies)"),
        C("scenario", "string", True, "scenario (or other source) that declared it last"),
        C("updated_at", "timestamp", False),
    ),
    key=("service",),
    doc="The services a scenario declared: SLA, SLO and dependencies the detector and root-cause use.",
)

# An endpoint is a URL path: "/" then RFC 3986 path characters (unreserved, sub-delims, ":", "@",
# percent escapes, "/"). No spaces, quotes, control characters or query strings: names become table
# keys, dashboard labels and narrator facts, so anything else is treated as a client bug.
ENDPOINT_CHARS = r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]"  # one character after the leading "/"
ENDPOINT_PATTERN = rf"^/{ENDPOINT_CHARS}*$"
# The longest latency counted: one day. Longer is no request's latency but a broken clock or unit, and
# near 1.8e308 two finite latencies would sum to infinity and leave the window's average unusable.
MAX_LATENCY_MS = 86_400_000.0
SKIPPED = "skipped:"  # the reason prefix of spans that are no request: counted (stream_batches), not dead letters

DEAD_LETTER_EVENTS = Table(
    "dead_letter_events",
    (
        C("topic", "string", False),
        C("kafka_partition", "int", False),
        C("kafka_offset", "long", False),
        C("raw_payload", "string", True, "the bytes as received, decoded as UTF-8 with replacement"),
        C("reason", "string", False, "why it was rejected, e.g. malformed_json, late"),
        C("received_at", "timestamp", False),
    ),
    key=("topic", "kafka_partition", "kafka_offset"),
    doc="Events the stream could not use, kept with the reason so nothing is lost silently.",
)

PIPELINE_RUNS = Table(
    "pipeline_runs",
    (
        C("run_id", "string", False, "<dag_id>/<dag run id>/<task_id> for a scheduled notebook task"),
        C("stage", "string", False, "the task: generate | stream | detect | narrate | monitoring | quality"),
        C("started_at", "timestamp", False),
        C("finished_at", "timestamp"),
        C("status", "string", False, "running | ok | failed"),
        C("details", "json"),
        C("dag_id", "string", True, "Airflow DAG that ran it"),
        C("dag_run_id", "string", True, "Airflow run id"),
        C("notebook", "string", True, "the notebook that was run"),
        C("output_notebook", "string", True, "the executed notebook kept as the record of the run"),
        C("error", "string", True, "first line of the error when the run failed"),
    ),
    key=("run_id",),
    doc="One run of one scheduled task (an executed notebook), for the dashboard's Runs view.",
)

HEALTH_CHECKS = Table(
    "health_checks",
    (
        C("run_id", "string", False, "one id per monitoring run"),
        C("check_name", "string", False, "broker | stream_lag | freshness | dead_letters | detector | narrator | narrator_backend"),
        C("ok", "bool", False),
        C("value", "double", True, "what was measured (NULL when it could not be)"),
        C("bound", "double", True, "the setting it was compared with"),
        C("message", "string", False, "what was found and, on failure, what to do"),
        C("checked_at", "timestamp", False),
    ),
    key=("run_id", "check_name"),
    doc="Results of the monitoring checks (obslab health, monitoring DAG), one row per check and run.",
)

QUALITY_CHECKS = Table(
    "quality_checks",
    (
        C("run_id", "string", False, "one id per data-quality run"),
        C("check_name", "string", False),
        C("ok", "bool", False),
        C("violations", "long", False, "rows (or windows) that break the rule"),
        C("message", "string", False, "what was found, with examples"),
        C("checked_at", "timestamp", False),
    ),
    key=("run_id", "check_name"),
    doc="Results of the data-quality validation, one row per rule and run.",
)

INCIDENTS = Table(
    "incidents",
    (
        C("incident_id", "string", False, "service:kind:<start of the window that opened it>; kept for life"),
        C("service", "string", False),
        C("kind", "string", False, "errors | latency | traffic"),
        C("status", "string", False, "open | resolved"),
        C("opened_at", "timestamp", False, "start of the first anomalous window"),
        C("last_anomaly_at", "timestamp", False, "end of the last anomalous window"),
        C("resolved_at", "timestamp", True),
        C("severity", "string", False, "worst severity of its anomalies"),
        C("anomaly_count", "long", False),
        C("detectors", "string", False),
        C("endpoints", "string", False),
        C("updated_at", "timestamp", False),
        C("origin_service", "string", True, "likely origin of a cascade this incident belongs to (its own service "
                                            "when it is the origin); NULL when it stands alone"),
        C("origin_reason", "string", True, "why: first to deviate, declared dependencies"),
        C("related_incidents", "string", True, "comma-separated ids of the other incidents of the same cascade"),
    ),
    key=("incident_id",),
    doc="Anomalies of one service and kind merged into an incident with a lifecycle.",
)

STATUS_COUNTS = Table(
    "status_counts",
    (
        C("service", "string", False),
        C("endpoint", "string", False),
        C("window_start", "timestamp", False),
        C("status_code", "int", False, "a failed request's status code (>= 400)"),
        C("count", "long", False),
    ),
    key=("service", "endpoint", "window_start", "status_code"),
    doc="Failed requests per endpoint, window and status code: the error mix the narrator reports.",
)

# ---------------------------------------------------------------- stream state (see obslab.stream.sink)

LATENCY_HISTOGRAMS = Table(
    "latency_histograms",
    (
        C("service", "string", False),
        C("endpoint", "string", False),
        C("window_start", "timestamp", False),
        C("bucket", "int", False, "log bucket: latency in (g^b, g^(b+1)], g = obslab.stream.buckets.GAMMA"),
        C("count", "long", False),
    ),
    key=("service", "endpoint", "window_start", "bucket"),
    doc="Latency histograms of windows that are still open; deleted once a window is final.",
)

STREAM_BATCHES = Table(
    "stream_batches",
    (
        C("query_id", "string", False, "id of the stream's checkpoint"),
        C("batch_id", "long", False, "Spark micro-batch id"),
        C("events", "long", False, "good events aggregated"),
        C("dead_letters", "long", False, "malformed or late events set aside"),
        C("applied_at", "timestamp", False),
        C("offsets", "json", True, 'Kafka offsets the batch added: {"<topic>": {"<partition>": [from, to)}}'),
        C("endpoint_overflow", "long", True, "good events counted under the endpoint `other` (their service had "
                                              "ENDPOINT_MAX_PER_SERVICE endpoint names already)"),
        C("skipped_spans", "long", True, "spans counted but not as requests: CLIENT, INTERNAL, PRODUCER, CONSUMER "
                                         "(STREAM_SOURCE spans)"),
    ),
    key=("query_id", "batch_id"),
    doc="Micro-batches already applied: a replayed batch is skipped, so each event counts once.",
)

STREAM_STATE = Table(
    "stream_state",
    (
        C("query_id", "string", False),
        C("max_event_time", "timestamp", True, "latest event time seen"),
        C("watermark", "timestamp", True, "max_event_time - WATERMARK_SECONDS; windows ending before it are final"),
        C("window_seconds", "int", False),
        C("updated_at", "timestamp", False),
    ),
    key=("query_id",),
    doc="Event-time progress of each stream query.",
)

STREAM_OFFSETS = Table(
    "stream_offsets",
    (
        C("topic", "string", False),
        C("kafka_partition", "int", False),
        C("next_offset", "long", False, "every record before it is counted in the windows or kept as a dead letter"),
        C("topic_id", "string", True, "Kafka's id of the topic: a deleted and recreated topic has a new one"),
        C("query_id", "string", False, "the stream query (checkpoint) that last moved it"),
        C("batch_id", "long", False),
        C("updated_at", "timestamp", False),
    ),
    key=("topic", "kafka_partition"),
    doc="How far the store has consumed each partition of the raw topic; moved in the transaction that adds the "
        "data, so a stream without a checkpoint resumes here.",
)

STREAM_ENDPOINTS = Table(
    "stream_endpoints",
    (
        C("service", "string", False),
        C("endpoint", "string", False),
        C("admitted_at", "timestamp", False),
    ),
    key=("service", "endpoint"),
    doc="Endpoint names kept as their own series, at most ENDPOINT_MAX_PER_SERVICE per service; the events of "
        "further names are counted under the endpoint `other`.",
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        SERVICE_METRICS,
        ENDPOINT_METRICS,
        ANOMALIES,
        INCIDENT_SUMMARIES,
        INJECTED_INCIDENTS,
        DEAD_LETTER_EVENTS,
        PIPELINE_RUNS,
        HEALTH_CHECKS,
        QUALITY_CHECKS,
        LATENCY_HISTOGRAMS,
        STREAM_BATCHES,
        STREAM_STATE,
        STREAM_OFFSETS,
        STREAM_ENDPOINTS,
        INCIDENTS,
        STATUS_COUNTS,
        SERVICE_CATALOG,
    )
}

"""One typed settings object for the whole lab.

Every setting is read from the environment (upper-case name, no prefix) or from the project's
`.env` file; the field name is also the notebook parameter and the CLI option. `obslab settings`
prints the effective values. Secrets never get defaults.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from obslab.bootstrap import CACHE, ROOT
from obslab.errors import ConfigError


def _project_dir() -> Path:
    # Installed editable (the supported way), the package sits in <project>/lib/obslab.
    return ROOT if (ROOT / "pyproject.toml").exists() else Path.cwd()


class Settings(BaseSettings):
    """Every parameter of the lab, named once."""

    model_config = SettingsConfigDict(
        env_file=str(_project_dir() / ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
        env_ignore_empty=True,  # `NAME=` in .env means "use the default", not an empty value
        allow_inf_nan=False,  # no setting means "forever" by infinity: a rate or a period of inf is refused
    )

    # --- paths
    data_dir: Path = Field(_project_dir() / "data", description="generated data: store, broker, checkpoints, logs")
    cache_dir: Path = Field(CACHE, description="downloaded jars and models (filled by `make setup`)")
    duckdb_path: Path | None = Field(None, description="DuckDB file; default DATA_DIR/observability.duckdb")

    # --- kafka
    kafka_host: str = Field("127.0.0.1", description="address the local broker listens on")
    kafka_port: int = Field(9092, ge=1, le=65535, description="client port of the local broker")
    kafka_controller_port: int = Field(9093, ge=1, le=65535, description="KRaft controller port of the local broker")
    kafka_bootstrap_servers: str = Field("", description="brokers clients use; default KAFKA_HOST:KAFKA_PORT")
    kafka_partitions: int = Field(3, ge=1, le=64, description="partitions of each lab topic")
    kafka_replication_factor: int = Field(1, ge=1, le=16, description="replicas of each lab topic the lab creates: 1 for the single local broker, 3 on `obslab cluster start`'s three brokers (a write is acknowledged once 2 hold it)")
    kafka_heap: str = Field("512m", description="JVM heap of the local broker (-Xmx)")
    kafka_client: Literal["kafka-python", "confluent-kafka"] = Field(
        "confluent-kafka", description="client the generator publishes with: confluent-kafka (librdkafka; ~7x the events/s) or kafka-python (pure Python)")
    kafka_start_timeout_seconds: float = Field(60.0, gt=0, description="how long `broker start` waits for the broker")
    topic_raw_events: str = Field("raw_events", description="topic the generator publishes to")
    topic_aggregated_metrics: str = Field("aggregated_metrics", description="topic of updated metric windows")
    topic_anomalies: str = Field("anomalies", description="topic of new or updated incidents")
    topic_otlp_spans: str = Field("otlp_spans", description="topic the OpenTelemetry Collector writes traces to (OTLP JSON), read by `obslab stream --source spans`")

    # --- opentelemetry collector (`make otelcol`, `obslab otelcol start`)
    otel_host: str = Field("127.0.0.1", description="address the Collector's OTLP receivers listen on")
    otlp_grpc_port: int = Field(4317, ge=1, le=65535, description="OTLP/gRPC port of the Collector")
    otlp_http_port: int = Field(4318, ge=1, le=65535, description="OTLP/HTTP port of the Collector")
    otelcol_start_timeout_seconds: float = Field(30.0, gt=0, description="how long `otelcol start` waits for the Collector")

    # --- spark
    spark_master: str = Field("local[2]", description="Spark master URL; a cluster URL runs the same job there")
    spark_driver_memory: str = Field("1g", description="Spark driver memory")
    spark_server: str = Field("auto", pattern=r"^(auto|local|sc://[^\s]+)$", description="which Spark the lab's steps use: auto (the lab's Spark Connect server when `obslab spark start` runs it for this DATA_DIR, else a Spark inside the process), local (always a Spark inside the process, 15-20 s to start), or sc://HOST:PORT (that Spark Connect server)")
    spark_connect_host: str = Field("127.0.0.1", description="address the lab's Spark Connect server listens on (the container lab: every interface of the stream container, which nothing publishes)")
    spark_connect_port: int = Field(15002, ge=1, le=65535, description="port of the lab's Spark Connect server (`obslab spark start`, on SPARK_CONNECT_HOST)")
    spark_start_timeout_seconds: float = Field(120.0, gt=0, description="how long `spark start` waits for the server to answer")

    # --- local cluster (`obslab cluster start`: a Spark master with two workers, three Kafka brokers)
    cluster_spark_port: int = Field(0, ge=0, le=65535, description="port of the cluster's Spark master on 127.0.0.1; 0: a free port, chosen at start")
    cluster_spark_webui_port: int = Field(0, ge=0, le=65535, description="port of the Spark master's web UI on 127.0.0.1; 0: a free port, chosen at start")
    cluster_kafka_ports: str = Field("", description="client ports of the cluster's three brokers on 127.0.0.1, comma-separated (e.g. 19092,19093,19094); blank: free ports, chosen at start")
    cluster_kafka_controller_ports: str = Field("", description="KRaft controller ports of the cluster's three brokers, comma-separated; blank: free ports, chosen at start")

    # --- generator
    scenario: str = Field("demo", description="generator scenario: a shipped name or a path to a YAML file")
    seed: int = Field(42, description="random seed; the same seed and scenario give the same events")
    events_per_second: float | None = Field(None, gt=0, description="generator rate; default: the scenario's")
    backfill_minutes: float = Field(0.0, ge=0, description="minutes of fault-free history written before a live run")
    generate_lead_in_seconds: float = Field(0.0, ge=0, description="a live run publishes the scenario's first this many seconds at once (after the history), then goes on at the wall clock's pace, so its faults come that much sooner; event times, ground truth and fault times stay the scenario's; 0: the scenario starts at launch")
    demo_lead_in_seconds: float = Field(60.0, ge=0, description="GENERATE_LEAD_IN_SECONDS of `obslab demo`'s generator: with the default, the demo scenario's payments surge (second 75) begins ~25 s after launch, before the stream's first micro-batch")
    generate_start: str | None = Field(None, description="simulated start of notebook 01 / `obslab generate` (ISO-8601 with a timezone, e.g. 2026-01-05T09:00:00Z); the same seed, scenario and start give byte-identical events; default: now")
    generate_seconds: float = Field(0.0, ge=0, description="seconds of traffic notebooks 01 and 02 generate first (simulated time ending now); the pipeline DAG's generate task runs only when > 0")
    generate_to: Literal["kafka", "file"] = Field("kafka", description="where notebook 01 sends events: kafka (publish) or file (JSONL under DATA_DIR/runs)")

    # --- stream
    window_seconds: int = Field(60, ge=1, le=86_400, description="tumbling event-time window length")
    watermark_seconds: int = Field(120, ge=0, le=86_400, description="how late an event may be before its window is final")
    trigger_seconds: float = Field(5.0, gt=0, description="micro-batch interval of the continuous stream")
    max_offsets_per_trigger: int | None = Field(None, gt=0, description="cap on events per micro-batch; default no cap")
    checkpoint_name: str = Field("stream", pattern=r"^[A-Za-z0-9_.-]+$", description="folder under DATA_DIR/checkpoints")
    stream_fast_path: bool = Field(True, description="add up events written in the generator's compact form in DuckDB, without Spark's JSON parser; every other record goes through the full parse (obslab.stream.fastpath). Off: every record does")
    stream_source: Literal["events", "spans"] = Field("events", description="what the stream counts: the generator's events (TOPIC_RAW_EVENTS) or OpenTelemetry spans the Collector wrote (TOPIC_OTLP_SPANS, its checkpoint CHECKPOINT_NAME-spans)")
    future_tolerance_seconds: int = Field(60, ge=0, le=86_400, description="events dated more than this ahead of the stream's clock are dead letters (`future`) and never move the watermark; keep it <= WATERMARK_SECONDS")
    endpoint_max_length: int = Field(128, ge=1, le=2048, description="longest endpoint name kept; longer names, and names that are not a URL path, are dead letters (`invalid:endpoint`)")
    endpoint_max_per_service: int = Field(50, ge=1, le=10_000, description="endpoint names kept per service (first come, first kept); events of further names are counted under the endpoint `other`")

    # --- detection
    error_surge_factor: float = Field(3.0, gt=1, description="error_surge fires above this x the usual odds of an error (about this x the usual error rate while rates are small)")
    error_confidence_z: float = Field(4.0, gt=0, description="error_surge fires only when that many errors would be rarer than this one-sided z at the usual rate (exact binomial tail)")
    latency_sla_ms: dict[str, float] = Field(default_factory=dict, examples=[{"checkout": 300}],
                                             description='latency SLA per service in ms (JSON, e.g. {"checkout": 300}); overrides the service catalogue; a service with neither is held to its own median p99')
    latency_spike_factor: float = Field(2.0, gt=1, description="latency_spike fires when avg and p99 exceed this x the SLA")
    shift_z: float = Field(5.0, gt=0, description="baseline_shift (and latency_spike's noise guard) fires beyond this many standard deviations of the window's noise (one-sided)")
    detect_trend_windows: int = Field(12, ge=6, le=240, description="clean final windows the traffic forecasts and the latency median are fitted to")
    slo_availability: dict[str, float] = Field(default_factory=dict, examples=[{"checkout": 0.999}],
                                               description='availability SLO per service for burn_rate (JSON, e.g. {"checkout": 0.999}); overrides the service catalogue')
    slo_default_availability: float = Field(0.99, gt=0, lt=1, description="availability SLO of a service that neither SLO_AVAILABILITY nor the service catalogue names")
    burn_threshold: float = Field(14.4, gt=0, description="burn_rate fires above this burn over the short and long window")
    resolve_after_windows: int = Field(3, ge=1, description="clean windows after which an incident resolves")
    partial_window_min_requests: int = Field(10, ge=0, description="an open window is judged early (by the noise of the requests it holds) once it holds this many requests; 0: final windows only")
    cascade_gap_windows: int = Field(2, ge=0, description="incidents on services linked by declared calls that overlap and opened at most this many windows apart are one cascade (origin, related incidents)")
    detect_lookback_minutes: int = Field(180, ge=5, description="history the detector reads each run")
    detect_poll_seconds: float = Field(5.0, gt=0, description="pause between runs of continuous detection")

    # --- narrator
    narrator_backend: Literal["auto", "ollama", "llamacpp", "template"] = Field(
        "auto", description="auto: ollama if it answers with the model, else the embedded llamacpp, else template")
    ollama_host: str = Field("http://127.0.0.1:11434", description="Ollama server for the ollama backend")
    ollama_model: str = Field("phi", description="Ollama model name")
    llm_model_path: Path | None = Field(None, description="GGUF model of the llamacpp backend; default: CACHE_DIR/models/gemma-3-270m-q4_k_m.gguf")
    llm_threads: int = Field(2, ge=1, description="CPU threads of the embedded model")
    narrate_max_tokens: int = Field(96, ge=8, le=1024, description="longest generated summary, in tokens")
    narrate_temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature (0: greedy, repeatable)")
    narrate_timeout_seconds: float = Field(30.0, gt=0, description="a narration slower than this falls back to the template")
    narrate_poll_seconds: float = Field(5.0, gt=0, description="pause between runs of the continuous narrator")
    narrate_max_incidents: int = Field(10, ge=1, description="at most this many incidents narrated per pass; the rest wait for the next")

    # --- monitoring and data quality (obslab health, the monitoring and data-quality DAGs)
    health_max_lag_events: int = Field(100_000, ge=0, description="stream lag bound: Kafka end offsets minus the offsets the stream has committed")
    health_max_freshness_seconds: float = Field(600.0, gt=0, description="newest event in the store must be at most this old")
    health_max_dead_letter_rate: float = Field(0.01, ge=0, le=1, description="dead letters / events of the stream's batches in the last hour")
    health_max_stage_age_seconds: float = Field(900.0, gt=0, description="the detector and the narrator must have run within this")
    airflow_port: int = Field(8080, ge=1, le=65535, description="port of Airflow's UI and API on 127.0.0.1 (`make airflow`)")
    retention_days: int = Field(7, ge=1, description="data quality deletes metrics, anomalies, incidents, summaries, dead letters and run records older than this")

    # --- store
    store_lock_timeout_seconds: float = Field(30.0, gt=0, description="how long to retry when another process holds the DuckDB file")

    @field_validator("kafka_host", "spark_connect_host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("cluster_kafka_ports", "cluster_kafka_controller_ports")
    @classmethod
    def _three_ports(cls, value: str) -> str:
        if not value.strip():
            return ""
        parts = [p.strip() for p in value.split(",")]
        if len(parts) != 3 or not all(p.isdigit() and 1 <= int(p) <= 65535 for p in parts) or len(set(parts)) != 3:
            raise ValueError(f"needs three different ports from 1 to 65535, comma-separated (e.g. 19092,19093,19094), "
                             f"or blank for free ones; got {value!r}")
        return ",".join(str(int(p)) for p in parts)

    @field_validator("latency_sla_ms")
    @classmethod
    def _slas_positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not k.strip() or not v > 0}
        if bad:
            raise ValueError(f"every service needs a name and an SLA above 0 ms, got {json.dumps(bad)}; "
                             'write e.g. {"checkout": 300}')
        return value

    @field_validator("slo_availability")
    @classmethod
    def _slos_below_one(cls, value: dict[str, float]) -> dict[str, float]:
        # burn rate = error rate / (1 - SLO): an SLO of 1 leaves no error budget to burn (division by zero).
        bad = {k: v for k, v in value.items() if not k.strip() or not 0 < v < 1}
        if bad:
            raise ValueError(f"every service needs a name and an availability strictly between 0 and 1, got "
                             f'{json.dumps(bad)}; write e.g. {{"checkout": 0.999}} for 99.9 %')
        return value

    @field_validator("data_dir", "cache_dir", "duckdb_path", "llm_model_path")
    @classmethod
    def _anchor_relative_paths(cls, value: Path | None) -> Path | None:
        # Relative paths mean the project's, wherever a notebook or DAG happens to run.
        if value is None or value.is_absolute():
            return value
        return _project_dir() / value

    @model_validator(mode="after")
    def _derive(self) -> "Settings":
        if self.duckdb_path is None:
            self.duckdb_path = self.data_dir / "observability.duckdb"
        if self.llm_model_path is None:
            self.llm_model_path = self.cache_dir / "models" / "gemma-3-270m-q4_k_m.gguf"
        if not self.kafka_bootstrap_servers:
            self.kafka_bootstrap_servers = f"{self.kafka_host}:{self.kafka_port}"
        if self.kafka_port == self.kafka_controller_port:
            raise ValueError("KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ")
        if self.otlp_grpc_port == self.otlp_http_port:
            raise ValueError("OTLP_GRPC_PORT and OTLP_HTTP_PORT must differ")
        return self

    @property
    def topics(self) -> list[str]:
        """The lab's topics, in pipeline order."""
        return [self.topic_raw_events, self.topic_aggregated_metrics, self.topic_anomalies, self.topic_otlp_spans]

    @property
    def stream_topic(self) -> str:
        """The topic the stream counts (see STREAM_SOURCE)."""
        return self.topic_otlp_spans if self.stream_source == "spans" else self.topic_raw_events

    @property
    def kafka_dir(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"


def load_settings(**overrides) -> Settings:
    """Build settings from env and .env, with explicit overrides on top; errors name the field."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        # The setting's name as it is written in the environment; a key inside it (a service) as is.
        problems = "; ".join(
            f"{'.'.join([str(e['loc'][0]).upper(), *map(str, e['loc'][1:])]) if e['loc'] else 'settings'}: "
            f"{e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"invalid settings ({problems}). Fix the environment variable or .env entry.") from None
    except SettingsError as err:
        # A JSON setting that is not JSON fails while the environment is read, before validation.
        named = re.search(r'field "(\w+)"', str(err))
        field = Settings.model_fields.get(named.group(1)) if named else None
        if field is None:
            raise ConfigError(f"invalid settings ({err}). Fix the environment variable or .env entry.") from None
        example = json.dumps(field.examples[0]) if field.examples else _default_text(field)
        raise ConfigError(f"invalid settings ({named.group(1).upper()}: not valid JSON; write an object like "
                          f"{example}). Fix the environment variable or .env entry.") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def settings_table() -> list[tuple[str, str, str]]:
    """(ENV NAME, default, meaning) for every setting: the table in docs/settings.md comes from here."""
    return [(name.upper(), _default_text(field), field.description or "")
            for name, field in Settings.model_fields.items()]


def _default_text(field) -> str:
    """A field's default as a user would write it in .env: JSON for mappings, project-relative paths."""
    # Mappings have a default_factory (a shared mutable default would leak between instances).
    default = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(default, Path):
        try:
            default = default.relative_to(_project_dir())
        except ValueError:
            pass
    if isinstance(default, dict):
        return json.dumps(default)
    return "" if default is None else str(default)

"""Drive an event stream through a clock into a sink (Kafka or a JSONL file), recording ground truth.

    (clock) --tick--> EventStream --EventBatch--> sink (Kafka | file)
                                     \\--fault started/ended--> ground truth (store | file)

The loop is the same for live runs (wall clock, ticks of 0.1 s, waits between them) and for
simulated runs (no waiting: backfill, `--to-file`, `--max-rate`; ticks sized to about 2,000
events, between 1 s and 60 s, see `simulated_tick`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Protocol

from obslab.errors import BrokerError
from obslab.generator.clock import SimulatedClock, WallClock
from obslab.generator.events import EventBatch, EventStream, Fault
from obslab.generator.profiles import ServiceProfile
from obslab.retry import call_with_retries
from obslab.settings import Settings

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- sinks


class Sink(Protocol):
    sent: int
    failed: int

    def send(self, batch: EventBatch) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def kafka_sink(settings: Settings, topic: str | None = None, **kw) -> "KafkaSink | ConfluentSink":
    """The Kafka sink of the configured client (KAFKA_CLIENT)."""
    if settings.kafka_client == "confluent-kafka":
        return ConfluentSink(settings, topic, **kw)
    return KafkaSink(settings, topic, **kw)


class KafkaSink:
    """Publishes with kafka-python, key = service; counts what the broker did not acknowledge."""

    def __init__(self, settings: Settings, topic: str | None = None, connect_attempts: int = 5,
                 first_backoff_s: float = 1.0, **producer_overrides):
        from obslab.broker import producer

        self.topic = topic or settings.topic_raw_events
        self.sent = 0
        self.failed = 0
        self.first_error: str | None = None
        options = dict(linger_ms=20, batch_size=256 * 1024, max_block_ms=10_000, bootstrap_timeout_ms=5_000)
        options.update(producer_overrides)
        self._producer = _with_retries(lambda: producer(settings, **options), settings, connect_attempts,
                                       first_backoff_s)
        self._partition = self._partition_per_service()
        self._lock = threading.Lock()

    def _partition_per_service(self) -> "PartitionOfKey":
        try:
            partitions = sorted(self._producer.partitions_for(self.topic) or [])
        except Exception:  # noqa: BLE001 - kafka-python raises a timeout for an unknown topic
            partitions = []
        if not partitions:
            raise BrokerError(f"topic {self.topic!r} does not exist; run `obslab broker start` to create it")
        return PartitionOfKey(partitions)

    def _on_error(self, err: Exception) -> None:
        with self._lock:
            self.failed += 1
            if self.first_error is None:
                self.first_error = f"{type(err).__name__}: {err}"

    def send(self, batch: EventBatch) -> None:
        send = self._producer.send
        topic, partition, on_error = self.topic, self._partition, self._on_error
        for service, line in zip(batch.services(), batch.json_lines()):
            send(topic, value=line.encode(), key=service.encode(), partition=partition[service]).add_errback(on_error)
        self.sent += len(batch)

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()

    @property
    def acked(self) -> int:
        return self.sent - self.failed


class PartitionOfKey(dict):
    """service -> partition, computed once per service on first use (any scenario's services).

    The key decides the partition. Computing it once per service spares a pure-Python murmur2 hash
    on every send; the rule is the Java client's and kafka-python's DefaultPartitioner's for a
    non-null key.
    """

    def __init__(self, partitions: list[int]):
        super().__init__()
        self.partitions = partitions

    def __missing__(self, service: str) -> int:
        from kafka.partitioner.default import murmur2

        partition = self.partitions[(murmur2(service.encode()) & 0x7FFFFFFF) % len(self.partitions)]
        self[service] = partition
        return partition


class ConfluentSink:
    """Publishes with confluent-kafka (librdkafka): same contract as KafkaSink, far less CPU per event."""

    def __init__(self, settings: Settings, topic: str | None = None, connect_attempts: int = 5,
                 first_backoff_s: float = 1.0, flush_timeout_s: float = 60.0):
        from confluent_kafka import Producer

        self.topic = topic or settings.topic_raw_events
        self.sent = 0
        self.failed = 0
        self.first_error: str | None = None
        self._flush_timeout_s = flush_timeout_s
        self._producer = Producer({
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "client.id": "obslab-generator",
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "partitioner": "murmur2_random",  # the Java client's (and kafka-python's) key -> partition rule
            "message.timeout.ms": 60_000,
            "logger": logging.getLogger("obslab.generator.librdkafka"),
        })
        self._check_topic(settings, connect_attempts, first_backoff_s)

    def _check_topic(self, settings: Settings, attempts: int, first_backoff_s: float) -> None:
        from confluent_kafka import KafkaException

        topics = _with_retries(lambda: self._producer.list_topics(timeout=5).topics, settings, attempts,
                               first_backoff_s, KafkaException)
        if self.topic not in topics:
            raise BrokerError(f"topic {self.topic!r} does not exist; run `obslab broker start` to create it")

    def _on_delivery(self, err, _msg) -> None:
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = str(err)

    def send(self, batch: EventBatch) -> None:
        produce, poll, topic, on_delivery = self._producer.produce, self._producer.poll, self.topic, self._on_delivery
        for service, line in zip(batch.services(), batch.json_lines()):
            while True:
                try:
                    produce(topic, line.encode(), service.encode(), on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry this event
                    poll(0.05)
        self.sent += len(batch)
        poll(0)

    def flush(self) -> None:
        left = self._producer.flush(self._flush_timeout_s)
        if left:  # still undelivered after the bound: not acknowledged, so counted as failed
            self.failed += left
            self.first_error = self.first_error or f"{left} events undelivered after {self._flush_timeout_s:.0f} s"

    def close(self) -> None:
        self.flush()

    @property
    def acked(self) -> int:
        return self.sent - self.failed


def _with_retries(call, settings: Settings, attempts: int, first_backoff_s: float, errors=None):
    """Run `call` (reach the brokers), retrying with exponential backoff on the client's errors
    (kafka-python's by default); a clear BrokerError when the brokers never answer."""
    if errors is None:
        from kafka.errors import KafkaError as errors

    def unreachable(_err: BaseException, failed: int, wait_s: float) -> None:
        log.warning("Kafka at %s not reachable (attempt %d/%d); retrying in %.0f s",
                    settings.kafka_bootstrap_servers, failed, attempts, wait_s)

    try:
        return call_with_retries(call, errors, first_wait_s=first_backoff_s, attempts=attempts, on_retry=unreachable)
    except errors as err:
        raise BrokerError(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers} after {attempts} attempts "
            f"({type(err).__name__}: {err}). Start the local broker with `obslab broker start`, or "
            "check KAFKA_BOOTSTRAP_SERVERS. Nothing was sent."
        ) from None


class FileSink:
    """Writes events as JSON lines, the same bytes that would go to Kafka."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self.sent = 0
        self.failed = 0

    def send(self, batch: EventBatch) -> None:
        lines = batch.json_lines()
        if lines:
            self._file.write("\n".join(lines) + "\n")
        self.sent += len(lines)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    @property
    def acked(self) -> int:
        return self.sent


# ---------------------------------------------------------------------------- ground truth


class GroundTruth(Protocol):
    def begin(self, services: tuple[ServiceProfile, ...]) -> None: ...
    def started(self, fault: Fault) -> None: ...
    def ended(self, fault: Fault, at: datetime) -> None: ...


def _truth_row(run_id: str, scenario: str, fault: Fault, end: datetime | None) -> dict:
    return {"run_id": run_id, "fault_id": fault.fault_id, "scenario": scenario, "fault_type": fault.type,
            "service": fault.service, "endpoint": fault.endpoint, "start_time": fault.start,
            "end_time": end, "magnitude": fault.magnitude, "benign": fault.benign,
            "root_cause": fault.root_cause or fault.service, "cause_fault_id": fault.cause_fault_id}


def catalog_rows(services: tuple[ServiceProfile, ...], scenario: str, at: datetime) -> list[dict]:
    """The scenario's services as service_catalog rows (endpoints as JSON, callees comma-separated)."""
    return [{"service": s.name, "endpoints": json.dumps(list(s.endpoints)), "sla_ms": s.sla_ms,
             "slo_availability": s.slo_availability, "calls": ",".join(c.service for c in s.calls) or None,
             "scenario": scenario, "updated_at": at} for s in services]


class StoreGroundTruth:
    """Writes each fault to injected_incidents when it starts, and closes it when it ends; at the
    start of a run, the scenario's services (SLA, SLO, calls) to service_catalog."""

    def __init__(self, store, run_id: str, scenario: str):
        self.store, self.run_id, self.scenario = store, run_id, scenario

    def begin(self, services: tuple[ServiceProfile, ...]) -> None:
        self.store.upsert("service_catalog", catalog_rows(services, self.scenario, datetime.now(timezone.utc)))

    def started(self, fault: Fault) -> None:
        self.store.upsert("injected_incidents", [_truth_row(self.run_id, self.scenario, fault, None)])

    def ended(self, fault: Fault, at: datetime) -> None:
        self.store.upsert("injected_incidents", [_truth_row(self.run_id, self.scenario, fault, at)])


class FileGroundTruth:
    """Ground truth beside an events file: one JSON line per start and per end."""

    def __init__(self, path: Path, run_id: str, scenario: str):
        self.path, self.run_id, self.scenario = Path(path), run_id, scenario
        self.path.write_text("")

    def begin(self, services: tuple[ServiceProfile, ...]) -> None:
        """Nothing: a file's ground truth holds faults only (the scenario file names the services)."""

    def _write(self, row: dict) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}) + "\n")

    def started(self, fault: Fault) -> None:
        self._write(_truth_row(self.run_id, self.scenario, fault, None))

    def ended(self, fault: Fault, at: datetime) -> None:
        self._write(_truth_row(self.run_id, self.scenario, fault, at))


def faults_file_for(events_file: Path) -> Path:
    """`events.jsonl` -> `events.faults.jsonl`."""
    events_file = Path(events_file)
    return events_file.with_name(events_file.name.removesuffix(".jsonl") + ".faults.jsonl")


# ---------------------------------------------------------------------------- the loop


@dataclass
class RunReport:
    """What one generator run did."""

    run_id: str
    scenario: str
    seed: int
    started_at: datetime
    event_time_end: datetime | None = None
    events_sent: int = 0
    events_acked: int = 0
    events_failed: int = 0
    seconds: float = 0.0
    faults: list[dict] = field(default_factory=list)
    stopped_early: str | None = None  # why the run stopped before its duration or count
    first_error: str | None = None

    @property
    def rate(self) -> float:
        return self.events_sent / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["rate"] = round(self.rate, 1)
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in out.items()}


def run_stream(
    stream: EventStream,
    clock: WallClock | SimulatedClock,
    sink: Sink,
    truth: GroundTruth | None,
    duration_s: float | None = None,
    count: int | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[RunReport], None] | None = None,
    tick_seconds: float | None = None,
) -> RunReport:
    """Generate until the duration (in event time) or count is reached, or `stop` is set.

    Always flushes the sink before returning, and closes the ground truth of faults still active.
    """
    if duration_s is None and count is None:
        raise ValueError("give a duration or a count (or both)")
    stop = stop or threading.Event()
    tick = tick_seconds or (simulated_tick(stream.rate) if clock.simulated else 0.1)
    report = RunReport(stream.run_id, stream.scenario.name, stream.seed, stream.start)
    t = stream.start
    end = stream.start + timedelta(seconds=duration_s) if duration_s is not None else None
    wall0 = time.monotonic()
    last_progress = wall0
    sent0, failed0 = sink.sent, sink.failed  # a sink may be shared with an earlier run (backfill)
    open_faults: dict[str, Fault] = {}
    if truth:
        truth.begin(stream.services)
    try:
        while not stop.is_set():
            if end is not None and t >= end:
                break
            if count is not None and report.events_sent >= count:
                break
            span = tick if end is None else min(tick, (end - t).total_seconds())
            clock.sleep_until(t + timedelta(seconds=span))
            batch = stream.tick(t, span)
            if count is not None and report.events_sent + len(batch) > count:
                batch = _truncate(batch, count - report.events_sent)
            for fault in batch.started:
                open_faults[fault.fault_id] = fault
                if truth:
                    truth.started(fault)
            sink.send(batch)
            report.events_sent = sink.sent - sent0
            for fault in batch.ended:
                open_faults.pop(fault.fault_id, None)
                if truth:
                    truth.ended(fault, fault.end)
                report.faults.append(_fault_summary(fault, fault.end))
            t += timedelta(seconds=span)
            if sink.failed:
                report.stopped_early = "the broker stopped acknowledging events"
                break
            now = time.monotonic()
            if progress and now - last_progress >= 1.0:
                report.seconds = now - wall0
                progress(report)
                last_progress = now
        if stop.is_set():
            report.stopped_early = report.stopped_early or "stopped by signal"
    finally:
        sink.flush()
        report.event_time_end = t
        report.seconds = time.monotonic() - wall0
        report.events_sent = sink.sent - sent0
        report.events_failed = sink.failed - failed0
        report.events_acked = report.events_sent - report.events_failed
        report.first_error = getattr(sink, "first_error", None)
        # Faults cut short by the end of the run end when the run ended.
        for fault in open_faults.values():
            closed_at = min(fault.end, t)
            if truth:
                truth.ended(fault, closed_at)
            report.faults.append(_fault_summary(fault, closed_at))
    return report


def simulated_tick(rate: float) -> float:
    """Tick length in simulated time: about 2,000 events a tick (1 s to 60 s), so per-tick cost stays small."""
    return max(1.0, min(60.0, 2000.0 / rate))


def _fault_summary(fault: Fault, end: datetime) -> dict:
    return {"fault_id": fault.fault_id, "type": fault.type, "service": fault.service, "endpoint": fault.endpoint,
            "start": fault.start.isoformat(), "end": end.isoformat(), "magnitude": fault.magnitude,
            "benign": fault.benign, "root_cause": fault.root_cause or fault.service,
            "cause_fault_id": fault.cause_fault_id}


def _truncate(batch: EventBatch, n: int) -> EventBatch:
    return EventBatch(batch.event_ids[:n], batch.times_ms[:n], batch.endpoint_index[:n], batch.latency_ms[:n],
                      batch.status_code[:n], batch.started, batch.ended, endpoints=batch.endpoints)


def backfill_stream(stream: EventStream, minutes: float) -> EventStream:
    """A history of `minutes` before the stream's start, with the same services and traffic (rhythm and
    noise included) but no fault and no benign event."""
    clean = stream.scenario.model_copy(update={"faults": [], "benign": [], "random": stream.scenario.random.model_copy(
        update={"anomaly_probability": 0.0})})
    return EventStream(clean, stream.seed + 1_000_003, stream.start - timedelta(minutes=minutes), stream.rate)

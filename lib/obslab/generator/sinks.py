"""Where generated events go: Kafka (kafka-python or confluent-kafka) or a JSONL file, behind one `Sink`.

Every sink counts what it was given (`sent`) and what did not arrive (`failed`, with the
`first_error`); `acked` is the difference. The Kafka sinks reach the brokers with retries and
refuse a topic that does not exist.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from obslab.errors import BrokerError
from obslab.generator.events import EventBatch
from obslab.retry import call_with_retries
from obslab.settings import Settings

log = logging.getLogger(__name__)


@runtime_checkable
class Sink(Protocol):
    """What the run loop sends events to."""

    sent: int  # events given to the sink
    failed: int  # events the destination did not take (the broker did not acknowledge them)
    first_error: str | None  # why the first of them failed

    @property
    def acked(self) -> int: ...  # events that arrived: sent - failed

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
        self.first_error: str | None = None  # a write that fails raises instead

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

"""The streaming job: Kafka `raw_events` -> parse -> foreachBatch sink, continuous or available-now.

The checkpoint (DATA_DIR/checkpoints/CHECKPOINT_NAME) holds Spark's offset and commit logs plus
`obslab.json`: the query id the sink keys its applied batches by, and the settings that shape the
windows. Restarting with the same checkpoint resumes exactly where the last committed batch ended.

The store is the source of truth for what was counted: the sink moves `stream_offsets` (per Kafka
partition, the first offset not counted yet) in the transaction that adds the data. Before Spark
starts, `plan_start` (`obslab.stream.start`) compares that position with the topic and the checkpoint. A stream without a
checkpoint (new, deleted or renamed) starts at the store's position; a start that would lose or
recount events, or mix window lengths in one store, is refused with what to do.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from functools import partial

from obslab.errors import CheckpointBusyError, CheckpointMismatchError, StoreWindowMismatchError, StreamError
from obslab.feeds import Feeds
from obslab.jsonform import plain
from obslab.settings import Settings
from obslab.stream.counters import SinkCounters
from obslab.stream.session import cores, start_query
from obslab.stream.sink import StreamSink
from obslab.stream.spans import parse_spans
from obslab.stream.start import TopicState, checkpoint_path, checkpoint_state, plan_start, store_position, topic_state
from obslab.stream.transform import parse_events

log = logging.getLogger(__name__)

# Settings that change what a window means: resuming a checkpoint with other values is refused.
_SHAPING = ("window_seconds", "watermark_seconds")


def _shaping(settings: Settings) -> tuple[str, ...]:
    """The shaping settings of the stream's source: its windows, and the topic it counts."""
    return (*_SHAPING, "topic_otlp_spans" if settings.stream_source == "spans" else "topic_raw_events")


def parser_for(settings: Settings):
    """The parse step of the stream's source (STREAM_SOURCE): events or OpenTelemetry spans."""
    return parse_spans if settings.stream_source == "spans" else parse_events


@dataclass
class StreamReport:
    """What one run of the stream did."""

    query_id: str
    checkpoint: str
    seconds: float
    counters: SinkCounters
    stopped_by: str
    started_from: str = "checkpoint"  # checkpoint | store offsets | topic start

    def as_dict(self) -> dict:
        """The `obslab stream --json` form: the counters flattened, the watermark as ISO text."""
        c = self.counters
        return plain({"query_id": self.query_id, "checkpoint": self.checkpoint, "seconds": round(self.seconds, 1),
                      "batches": c.batches, "skipped_replays": c.skipped_replays, "events": c.events,
                      "dead_letters": c.dead_letters, "late": c.late, "future": c.future,
                      "endpoint_overflow": c.endpoint_overflow, "skipped_spans": c.skipped_spans, "referred": c.referred,
                      "published": c.published,
                      "watermark": c.last_watermark, "started_from": self.started_from, "stopped_by": self.stopped_by})

    def describe(self) -> str:
        """One line for a person: batches, events, dead letters, watermark and why it stopped."""
        r = self.as_dict()
        return (f"stream {r['query_id'][:8]}: {r['batches']} batches, {r['events']:,} events, "
                f"{r['dead_letters']:,} dead letters ({r['late']:,} late) in {r['seconds']} s; "
                f"watermark {r['watermark']}; {r['stopped_by']}")


def open_checkpoint(settings: Settings) -> str:
    """The query id of the checkpoint (created on first use); refuses one made with other window settings."""
    path = checkpoint_path(settings)
    meta_file = path / "obslab.json"
    wanted = {name: getattr(settings, name) for name in _shaping(settings)}
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        for name in wanted:
            if meta.get(name) != wanted[name]:
                raise CheckpointMismatchError(str(path), name, meta.get(name), wanted[name])
        return meta["query_id"]
    path.mkdir(parents=True, exist_ok=True)
    meta = {"query_id": str(uuid.uuid4()), **wanted}
    meta_file.write_text(json.dumps(meta, indent=1))
    return meta["query_id"]


def _new_query_id(settings: Settings) -> str:
    """Give the checkpoint a new query id (keeping its window settings) and return it."""
    meta_file = checkpoint_path(settings) / "obslab.json"
    meta = {**json.loads(meta_file.read_text()), "query_id": str(uuid.uuid4())}
    meta_file.write_text(json.dumps(meta, indent=1))
    return meta["query_id"]


class CheckpointLock:
    """An exclusive lock on a checkpoint for one stream query's lifetime (released when the process
    ends, however it ends). A second query on the same checkpoint fails at once, naming the holder; with
    `wait` (a continuous stream) it waits for the lock instead, until `stop` is set."""

    def __init__(self, settings: Settings, wait: bool = False, stop: threading.Event | None = None):
        self.path = checkpoint_path(settings) / "obslab.lock"
        self.wait, self.stop = wait, stop or threading.Event()
        self._file = None

    def __enter__(self) -> "CheckpointLock":
        import fcntl
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        said = False
        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                if not self.wait or self.stop.is_set():
                    raise CheckpointBusyError(str(self.path.parent), holder) from None
            if not said:  # a scheduled available-now run of the same checkpoint, say: it ends by itself
                log.warning("checkpoint %s is in use by %s: waiting for it", self.path.parent, holder)
                said = True
            self.stop.wait(1.0)
        handle.seek(0)
        handle.truncate()
        handle.write(f"PID {os.getpid()}")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the lock
            self._file = None


# Options of the source's Kafka consumers (also what the stream benchmark's static reads use):
CONSUMER_OPTIONS = {
    # Fewer, larger fetches when catching up: the consumer's 1 MiB per partition and 64 KiB socket
    # buffer made a 2M-event backlog about 1,000 round trips to the broker (measured: the read
    # ~18 % faster, the broker ~25 % less CPU). A live batch of a few thousand events is unaffected.
    "kafka.max.partition.fetch.bytes": str(16 * 2**20),
    "kafka.fetch.max.bytes": str(64 * 2**20),
    "kafka.receive.buffer.bytes": "-1",  # the OS default, which grows the buffer as needed
    # Records per poll of the consumer (its default 500: 4,000 polls for 2M events). Measured on a 2M
    # backlog: the broker's CPU 1.6-1.8 s -> 0.6 s, the stream ~15 % faster; what a poll holds is
    # still bounded by the fetch sizes above.
    "kafka.max.poll.records": "20000",
    # How long the broker holds a fetch that finds no new record (its default 500 ms): a task that read
    # to the end of the log can wait that long for its consumer's last fetch. Runs of one 3,000-event
    # batch on the lab's server (medians of 8): 2.35-2.55 s before the larger polls, 2.85-2.94 s with
    # them alone, 1.94-2.15 s with this too.
    "kafka.fetch.max.wait.ms": "50",
}


def kafka_source(spark, settings: Settings, starting_offsets: str = "earliest"):
    """The stream's topic (STREAM_SOURCE) as a streaming DataFrame; `starting_offsets` applies to a new checkpoint only."""
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.stream_topic)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", "false")  # retention may delete offsets a stopped stream had not read yet
        # More tasks than Kafka partitions keeps every core busy (3 partitions on 2 cores idle a third).
        .option("minPartitions", str(2 * cores(spark)))
        .options(**CONSUMER_OPTIONS)
    )
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
    return reader.load()


def run_stream_job(
    settings: Settings,
    *,
    spark,
    store,
    feeds: Feeds | None = None,
    available_now: bool = False,
    run_for_seconds: float | None = None,
    stop: threading.Event | None = None,
) -> StreamReport:
    """Run the stream on `spark` into `store` (migrated: see obslab.lab) until stopped, until
    `run_for_seconds`, or (available_now) until caught up; updated windows go to `feeds` too, if given.

    The checkpoint is locked for the whole run: a second available-now query on it fails at once
    (CheckpointBusyError); a continuous one waits for it (a stream restarted while a scheduled run holds it)."""
    with CheckpointLock(settings, wait=not available_now, stop=stop):
        return _run_locked(settings, available_now, run_for_seconds, stop, spark, store, feeds)


def _run_locked(s: Settings, available_now: bool, run_for_seconds: float | None, stop: threading.Event | None,
                spark, store, feeds: Feeds | None) -> StreamReport:
    position = store_position(store, s.stream_topic)
    other_lengths = [w for w in position.window_lengths if w != s.window_seconds]
    if other_lengths:
        raise StoreWindowMismatchError(str(store.path), other_lengths, s.window_seconds)
    query_id = open_checkpoint(s)
    checkpoint = checkpoint_state(s)
    if not checkpoint.started:
        # Spark numbers the batches of a fresh checkpoint from 0 again: under the old query id the ledger
        # would take them for batches applied long ago and skip them.
        query_id = _new_query_id(s)
    now = _topic_now(s, needed=bool(position.offsets) or (checkpoint.committed is not None and not position.has_windows))
    plan = plan_start(s.stream_topic, str(store.path), str(checkpoint_path(s)), position, now, checkpoint)
    for note in plan.notes:
        log.warning(note)
    log.info("stream of %s starts from: %s", s.stream_topic, plan.started_from)
    counters_file = checkpoint_path(s) / "obslab-counters.json"
    counters_file.unlink(missing_ok=True)  # this run's counters only
    # The sink parses each batch of Kafka's rows itself: events in the generator's form take a fast path.
    sink = StreamSink(store, s, query_id, feeds=feeds, offset_log=checkpoint_path(s) / "spark" / "offsets",
                      topic_id=now.topic_id if now else None, counters_file=counters_file,
                      parse=partial(parser_for(s), endpoint_max_length=s.endpoint_max_length))
    writer = (
        kafka_source(spark, s, plan.starting_offsets).writeStream.foreachBatch(sink)
        .option("checkpointLocation", str(checkpoint_path(s) / "spark"))
        .queryName(f"obslab_stream_{checkpoint_path(s).name}".replace("-", "_").replace(".", "_"))
    )
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(
        processingTime=f"{s.trigger_seconds} seconds")
    stop = stop or threading.Event()
    started = time.monotonic()
    query = start_query(writer)
    stopped_by = "caught up" if available_now else "stopped"
    try:
        while query.isActive:
            if stop.is_set():
                stopped_by = "signal"
                break
            if run_for_seconds is not None and time.monotonic() - started >= run_for_seconds:
                stopped_by = "run_for_seconds"
                break
            query.awaitTermination(0.5)
    finally:
        if query.isActive:
            query.stop()
    error = query.exception()
    if error is not None:
        raise StreamError(f"the stream failed: {_first_line(error)}. See the Spark log above; the checkpoint "
                          f"{checkpoint_path(s)} is intact, so a restart resumes where it stopped.")
    # The sink ran here, or in the Python worker of a Spark Connect server: its file says what it did either way.
    return StreamReport(query_id, str(checkpoint_path(s)), time.monotonic() - started,
                        SinkCounters.load(counters_file), stopped_by, plan.started_from)


def _topic_now(s: Settings, needed: bool) -> TopicState | None:
    """The topic as the brokers see it; an unreachable broker is an error only when the start depends on it."""
    try:
        return topic_state(s)
    except Exception as err:  # noqa: BLE001 - any client error means the same here: no answer
        if needed:
            raise StreamError(f"cannot reach the brokers at {s.kafka_bootstrap_servers} to compare topic "
                              f"{s.stream_topic} with the offsets the store counted ({_first_line(err)}). Start "
                              "the broker (`obslab broker start`) or set KAFKA_BOOTSTRAP_SERVERS, then start the "
                              "stream again.") from None
        log.warning("could not read topic %s before starting (%s); the stream starts anyway",
                    s.stream_topic, _first_line(err))
        return None


def recent_windows(store, table: str = "service_metrics", limit: int = 30):
    """The latest windows of the store as a DataFrame, newest first."""
    if table not in ("service_metrics", "endpoint_metrics"):
        raise ValueError("table must be service_metrics or endpoint_metrics")
    return store.query_df(f"SELECT * EXCLUDE (updated_at) FROM {table} ORDER BY window_start DESC, service LIMIT ?",
                          [limit])


def _first_line(error) -> str:
    text = str(getattr(error, "desc", None) or error)
    return text.strip().splitlines()[0][:500] if text.strip() else type(error).__name__


def aggregate_static(spark, raw, settings: Settings, store, query_id: str = "static") -> SinkCounters:
    """The static form: aggregate a DataFrame of Kafka-shaped rows (topic, partition, offset, value)
    with the same transform and sink as the stream, as one batch, and mark every window final."""
    sink = StreamSink(store, settings, query_id)
    sink.apply(parser_for(settings)(raw, settings.endpoint_max_length), batch_id=0, finalize_all=True)
    return sink.counters

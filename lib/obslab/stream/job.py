"""The streaming job: Kafka `raw_events` -> parse -> foreachBatch sink, continuous or available-now.

The checkpoint (DATA_DIR/checkpoints/CHECKPOINT_NAME) holds Spark's offset and commit logs plus
`obslab.json`: the query id the sink keys its applied batches by, and the settings that shape the
windows. Restarting with the same checkpoint resumes exactly where the last committed batch ended.

The store is the source of truth for what was counted: the sink moves `stream_offsets` (per Kafka
partition, the first offset not counted yet) in the transaction that adds the data. Before Spark
starts, `plan_start` compares that position with the topic and the checkpoint. A stream without a
checkpoint (new, deleted or renamed) starts at the store's position; a start that would lose or
recount events, or mix window lengths in one store, is refused with what to do.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from obslab.errors import (CheckpointBusyError, CheckpointMismatchError, OffsetsMismatchError, StoreWindowMismatchError,
                           StreamError)
from obslab.feeds import Feeds
from obslab.jsonform import plain
from obslab.settings import Settings
from obslab.stream.session import cores, start_query
from obslab.stream.sink import SinkCounters, StreamSink, spark_batch_offsets
from obslab.stream.spans import parse_spans
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
                      "endpoint_overflow": c.endpoint_overflow, "skipped_spans": c.skipped_spans,
                      "published": c.published,
                      "watermark": c.last_watermark, "started_from": self.started_from, "stopped_by": self.stopped_by})

    def describe(self) -> str:
        """One line for a person: batches, events, dead letters, watermark and why it stopped."""
        r = self.as_dict()
        return (f"stream {r['query_id'][:8]}: {r['batches']} batches, {r['events']:,} events, "
                f"{r['dead_letters']:,} dead letters ({r['late']:,} late) in {r['seconds']} s; "
                f"watermark {r['watermark']}; {r['stopped_by']}")


def checkpoint_path(settings: Settings) -> Path:
    """The stream's checkpoint: CHECKPOINT_NAME, with `-spans` when it counts spans (its own offsets)."""
    suffix = "-spans" if settings.stream_source == "spans" else ""
    return settings.checkpoints_dir / f"{settings.checkpoint_name}{suffix}"


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
    ends, however it ends). A second query on the same checkpoint fails at once, naming the holder."""

    def __init__(self, settings: Settings):
        self.path = checkpoint_path(settings) / "obslab.lock"
        self._file = None

    def __enter__(self) -> "CheckpointLock":
        import fcntl
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise CheckpointBusyError(str(self.path.parent), holder) from None
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


# ---------------------------------------------------------------- where a stream starts

@dataclass
class StorePosition:
    """What the store knows about its stream: how far it counted the topic, and its window lengths."""

    offsets: dict[int, int]  # partition -> first offset not counted yet
    topic_id: str | None  # the topic's id when those offsets were recorded
    has_windows: bool
    window_lengths: list[int]  # WINDOW_SECONDS of every stream that wrote here


@dataclass
class TopicState:
    """What the brokers say about the raw topic now."""

    topic_id: str | None  # None when the brokers do not tell (before Kafka 2.8)
    offsets: dict[int, tuple[int, int]]  # partition -> (first offset still kept, end offset)


@dataclass
class CheckpointState:
    """How far Spark's checkpoint got."""

    started: bool  # Spark planned a batch here, so it resumes from its own offsets and ignores startingOffsets
    committed: dict[int, int] | None  # end offsets of its last committed batch (None before the first)


@dataclass
class StartPlan:
    """Where the stream starts reading, and why."""

    starting_offsets: str  # Spark's startingOffsets: "earliest" or {"<topic>": {"<partition>": offset}}
    started_from: str  # checkpoint | store offsets | topic start
    notes: list[str] = field(default_factory=list)  # worth a warning in the log


def store_position(store, topic: str) -> StorePosition:
    """The store's recorded Kafka position in `topic`, whether it holds windows, and their lengths."""
    with store.reader() as con:
        rows = con.execute("SELECT kafka_partition, next_offset, topic_id FROM stream_offsets WHERE topic = ?",
                           [topic]).fetchall()
        has_windows = con.execute("SELECT count(*) FROM (SELECT 1 FROM service_metrics LIMIT 1)").fetchall()[0][0] > 0
        lengths = [r[0] for r in con.execute("SELECT DISTINCT window_seconds FROM stream_state ORDER BY 1").fetchall()]
    ids = sorted({r[2] for r in rows if r[2]})
    return StorePosition({r[0]: r[1] for r in rows}, ids[-1] if ids else None, has_windows, lengths)


def checkpoint_state(settings: Settings) -> CheckpointState:
    """Whether Spark has used the checkpoint, and the end offsets of its last committed batch."""
    spark_dir = checkpoint_path(settings) / "spark"

    def batches(log: str) -> list[int]:
        return [int(f.name) for f in (spark_dir / log).glob("*") if f.name.isdigit()]

    planned, committed = batches("offsets"), batches("commits")
    if not planned:
        return CheckpointState(False, None)
    if not committed:
        return CheckpointState(True, None)
    return CheckpointState(True, spark_batch_offsets(spark_dir / "offsets" / str(max(committed)),
                                                     settings.stream_topic))


def topic_state(settings: Settings, timeout_s: float = 15.0) -> TopicState | None:
    """The stream topic's id and the first and end offset of each partition; None when it does not exist."""
    from kafka import TopicPartition

    from obslab.broker import admin_client, consumer

    topic = settings.stream_topic
    ms = int(timeout_s * 1000)
    c = consumer(settings, bootstrap_timeout_ms=ms, request_timeout_ms=ms, client_id="obslab-stream-start")
    try:
        if topic not in c.topics():
            return None
        parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        first, end = c.beginning_offsets(parts), c.end_offsets(parts)
    finally:
        c.close()
    admin = admin_client(settings, timeout_ms=ms)
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    raw_id = next((t.get("topic_id") for t in described if t.get("name") == topic), None)
    topic_id = str(raw_id) if raw_id and str(raw_id) != str(uuid.UUID(int=0)) else None
    return TopicState(topic_id, {tp.partition: (first[tp], end[tp]) for tp in parts})


def plan_start(topic: str, store_path: str, checkpoint_dir: str, stored: StorePosition, now: TopicState | None,
               checkpoint: CheckpointState) -> StartPlan:
    """Where to start reading `topic`: refuses (OffsetsMismatchError) a start that would lose or recount events."""

    def refuse(problem: str, remedy: str):
        raise OffsetsMismatchError(store_path, topic, problem, remedy)

    new_topic = "Count the topic as it is now into a new store (DUCKDB_PATH) with a new CHECKPOINT_NAME."
    if stored.offsets:
        if now is None:
            refuse(f"the store has counted partitions {sorted(stored.offsets)} of it, but the brokers at "
                   "KAFKA_BOOTSTRAP_SERVERS have no such topic", "Point KAFKA_BOOTSTRAP_SERVERS at the brokers that "
                   "hold it, or set TOPIC_RAW_EVENTS to the topic this store counts. " + new_topic)
        if stored.topic_id and now.topic_id and stored.topic_id != now.topic_id:
            refuse(f"the topic was deleted and created again since the store counted it (its id was "
                   f"{stored.topic_id}, it is {now.topic_id} now): the new topic's offsets start again and would be "
                   "taken for events counted already", new_topic)
        gone = sorted(set(stored.offsets) - set(now.offsets))
        if gone:
            refuse(f"the store has counted partitions {gone}, which the topic does not have (it has "
                   f"{len(now.offsets)}; Kafka never removes partitions, so this is another topic of that name)",
                   new_topic)
        ahead = sorted(p for p, at in stored.offsets.items() if at > now.offsets[p][1])
        if ahead:
            p = ahead[0]
            refuse(f"the store has counted partition {p} up to offset {stored.offsets[p]}, but the topic ends at "
                   f"{now.offsets[p][1]}: it was recreated, or these are other brokers", new_topic)
    if checkpoint.started:
        committed = checkpoint.committed or {}
        if stored.offsets:
            kept_from = {p: first for p, (first, _) in (now.offsets.items() if now else ())}
            ahead = sorted(p for p, at in committed.items() if at > stored.offsets.get(p, kept_from.get(p, 0)))
            if ahead:
                p = ahead[0]
                refuse(f"the checkpoint {checkpoint_dir} has consumed partition {p} up to offset {committed[p]}, "
                       f"but the store has counted it only up to {stored.offsets.get(p, 0)}: the events between "
                       "would never be counted (the store was replaced or restored, or the checkpoint belongs "
                       "to another store)", f"Delete the checkpoint folder {checkpoint_dir}: the stream then "
                       "starts where the store stopped. Or set DUCKDB_PATH to the store this checkpoint belongs to.")
            behind = sorted(p for p, at in committed.items() if at < stored.offsets.get(p, 0))
            if behind:
                # Harmless: the sink drops the records below the store's position instead of counting them again.
                log.info("checkpoint %s is behind the store in partitions %s: it re-reads records the store has "
                         "counted, and they are skipped", checkpoint_dir, behind)
        elif not stored.has_windows and now is not None:
            consumed = sum(max(0, at - now.offsets[p][0]) for p, at in committed.items() if p in now.offsets)
            if consumed:
                refuse(f"the store is empty, but the checkpoint {checkpoint_dir} has consumed {consumed:,} events "
                       "of the topic that are still in it: they would never be counted in this store",
                       f"Delete the checkpoint folder {checkpoint_dir} to count the topic from its start into this "
                       "store, or set DUCKDB_PATH to the store this checkpoint belongs to.")
        return StartPlan("earliest", "checkpoint")  # Spark resumes from its checkpoint and ignores this
    if stored.offsets:
        start, notes = {}, []
        for p, (first, _) in sorted(now.offsets.items()):
            at = stored.offsets.get(p)
            if at is None:
                start[str(p)] = -2  # a partition added since the store last counted: read it from its start
                continue
            if at < first:
                notes.append(f"partition {p} of {topic}: offsets {at} to {first - 1} ({first - at:,} events) were "
                             "deleted by Kafka's retention before the stream counted them")
                at = first
            start[str(p)] = at
        return StartPlan(json.dumps({topic: start}), "store offsets", notes)
    if stored.has_windows:
        refuse("the store holds windows but has no record of counting this topic (they were counted before "
               "offsets were recorded, from another topic, or from a static input), and there is no checkpoint: "
               "reading the topic from its start could count those events again",
               "Restore the checkpoint folder, or count into a new store (DUCKDB_PATH).")
    return StartPlan("earliest", "topic start")


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
        # Fewer, larger fetches when catching up: the consumer's 1 MiB per partition and 64 KiB socket
        # buffer made a 2M-event backlog about 1,000 round trips to the broker (measured: the read
        # ~18 % faster, the broker ~25 % less CPU). A live batch of a few thousand events is unaffected.
        .option("kafka.max.partition.fetch.bytes", str(16 * 2**20))
        .option("kafka.fetch.max.bytes", str(64 * 2**20))
        .option("kafka.receive.buffer.bytes", "-1")  # the OS default, which grows the buffer as needed
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

    The checkpoint is locked for the whole run: a second query on it fails at once (CheckpointBusyError)."""
    with CheckpointLock(settings):
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
    sink = StreamSink(store, s, query_id, feeds=feeds, offset_log=checkpoint_path(s) / "spark" / "offsets",
                      topic_id=now.topic_id if now else None, counters_file=counters_file)
    writer = (
        parser_for(s)(kafka_source(spark, s, plan.starting_offsets), s.endpoint_max_length).writeStream.foreachBatch(sink)
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

"""The streaming job: Kafka `raw_events` -> parse -> foreachBatch sink, continuous or available-now.

The checkpoint (DATA_DIR/checkpoints/CHECKPOINT_NAME) holds Spark's offset and commit logs plus
`obslab.json`: the query id the sink keys its applied batches by, and the settings that shape the
windows. Restarting with the same checkpoint resumes exactly where the last committed batch ended.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from obslab.errors import CheckpointBusyError, CheckpointMismatchError, StreamError
from obslab.settings import Settings, get_settings
from obslab.stream.sink import SinkCounters, StreamSink
from obslab.stream.transform import parse_events

log = logging.getLogger(__name__)

# Settings that change what a window means: resuming a checkpoint with other values is refused.
_SHAPING = ("window_seconds", "watermark_seconds", "topic_raw_events")


@dataclass
class StreamReport:
    """What one run of the stream did."""

    query_id: str
    checkpoint: str
    seconds: float
    counters: SinkCounters
    stopped_by: str

    def as_dict(self) -> dict:
        c = self.counters
        return {"query_id": self.query_id, "checkpoint": self.checkpoint, "seconds": round(self.seconds, 1),
                "batches": c.batches, "skipped_replays": c.skipped_replays, "events": c.events,
                "dead_letters": c.dead_letters, "late": c.late, "published": c.published,
                "watermark": c.last_watermark.isoformat() if c.last_watermark else None,
                "stopped_by": self.stopped_by}


def checkpoint_path(settings: Settings) -> Path:
    return settings.checkpoints_dir / settings.checkpoint_name


def open_checkpoint(settings: Settings) -> str:
    """The query id of the checkpoint (created on first use); refuses one made with other window settings."""
    path = checkpoint_path(settings)
    meta_file = path / "obslab.json"
    wanted = {name: getattr(settings, name) for name in _SHAPING}
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        for name in _SHAPING:
            if meta.get(name) != wanted[name]:
                raise CheckpointMismatchError(str(path), name, meta.get(name), wanted[name])
        return meta["query_id"]
    path.mkdir(parents=True, exist_ok=True)
    meta = {"query_id": str(uuid.uuid4()), **wanted}
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


def kafka_source(spark, settings: Settings):
    """The raw_events topic as a streaming DataFrame (earliest offsets on a new checkpoint)."""
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", settings.topic_raw_events)
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "false")  # retention may delete offsets a stopped stream had not read yet
        # More tasks than Kafka partitions keeps every core busy (3 partitions on 2 cores idle a third).
        .option("minPartitions", str(2 * spark.sparkContext.defaultParallelism))
    )
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
    return reader.load()


def run_stream_job(
    settings: Settings | None = None,
    available_now: bool = False,
    run_for_seconds: float | None = None,
    stop: threading.Event | None = None,
    spark=None,
    store=None,
    publish: bool = True,
) -> StreamReport:
    """Run the stream until stopped, until `run_for_seconds`, or (available_now) until caught up.

    The checkpoint is locked for the whole run: a second query on it fails at once (CheckpointBusyError)."""
    s = settings or get_settings()
    with CheckpointLock(s):
        return _run_locked(s, available_now, run_for_seconds, stop, spark, store, publish)


def _run_locked(s: Settings, available_now: bool, run_for_seconds: float | None, stop: threading.Event | None,
                spark, store, publish: bool) -> StreamReport:
    from obslab.store import Store
    from obslab.stream.session import build_session

    store = store or Store.from_settings(s)
    store.migrate()
    query_id = open_checkpoint(s)
    spark = spark or build_session(s, app_name="obslab-stream")
    sink = StreamSink(store, s, query_id, publish=publish)
    writer = (
        parse_events(kafka_source(spark, s)).writeStream.foreachBatch(sink)
        .option("checkpointLocation", str(checkpoint_path(s) / "spark"))
        .queryName(f"obslab_stream_{s.checkpoint_name}".replace("-", "_").replace(".", "_"))
    )
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(
        processingTime=f"{s.trigger_seconds} seconds")
    stop = stop or threading.Event()
    started = time.monotonic()
    query = writer.start()
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
        sink.close()
    error = query.exception()
    if error is not None:
        raise StreamError(f"the stream failed: {_first_line(error)}. See the Spark log above; the checkpoint "
                          f"{checkpoint_path(s)} is intact, so a restart resumes where it stopped.")
    return StreamReport(query_id, str(checkpoint_path(s)), time.monotonic() - started, sink.counters, stopped_by)


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
    sink = StreamSink(store, settings, query_id, publish=False)
    sink.apply(parse_events(raw), batch_id=0, finalize_all=True)
    return sink.counters

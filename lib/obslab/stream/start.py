"""Where a stream starts reading: the store's position, the topic and Spark's checkpoint, compared.

The store is the source of truth for what was counted (`stream_offsets`, moved by the sink in the
transaction that adds the data). `plan_start` compares it with the topic as the brokers see it now and
with how far the checkpoint got, and either says where to start or refuses (OffsetsMismatchError) a
start that would lose or recount events, saying what to do.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from obslab.errors import OffsetsMismatchError, StreamError
from obslab.settings import Settings

log = logging.getLogger(__name__)


def checkpoint_path(settings: Settings) -> Path:
    """The stream's checkpoint: CHECKPOINT_NAME, with `-spans` when it counts spans (its own offsets)."""
    suffix = "-spans" if settings.stream_source == "spans" else ""
    return settings.checkpoints_dir / f"{settings.checkpoint_name}{suffix}"


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


def spark_batch_offsets(offsets_file: Path, topic: str) -> dict[int, int]:
    """partition -> end offset of `topic` in one file of Spark's offset log (`offsets/<batch id>`)."""
    # The file: "v1", a JSON line of batch metadata, then one JSON line per source,
    # {"<topic>": {"<partition>": <end offset>}}; Spark writes it before it runs the batch.
    try:
        lines = offsets_file.read_text().splitlines()
    except OSError as err:
        raise StreamError(f"cannot read Spark's offset log {offsets_file} ({err}); the checkpoint folder is damaged: "
                          "delete it, and the stream resumes from the offsets the store recorded") from None
    if not lines or lines[0] != "v1":
        raise StreamError(f"{offsets_file} is not a Spark offset log this stream can read (first line "
                          f"{lines[0] if lines else 'missing'!r}, expected 'v1'); if Spark was upgraded, update "
                          "obslab.stream.start.spark_batch_offsets")
    for line in lines[2:]:
        source = json.loads(line)
        if isinstance(source, dict) and topic in source:
            return {int(p): int(o) for p, o in source[topic].items()}
    raise StreamError(f"{offsets_file} holds no offsets of topic {topic}: the checkpoint belongs to another topic; "
                      "set TOPIC_RAW_EVENTS or CHECKPOINT_NAME to the stream you meant")


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
    """The stream topic's id and the first and end offset of each partition; None when it does not exist.

    Asked with confluent-kafka's admin client: kafka-python's import and two bootstraps were 1.4 s of
    every `obslab stream` start here, the client's larger part of a scheduled run's stream task."""
    from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    topic = settings.stream_topic
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "client.id": "obslab-stream-start"})
    listed = admin.list_topics(topic=topic, timeout=timeout_s).topics.get(topic)
    if listed is None or listed.error is not None:
        if listed is not None and listed.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise KafkaException(listed.error)
        return None
    parts = [TopicPartition(topic, p) for p in sorted(listed.partitions)]

    def offsets(spec) -> dict[int, int]:
        asked = admin.list_offsets({tp: spec for tp in parts}, request_timeout=timeout_s)
        return {tp.partition: future.result().offset for tp, future in asked.items()}

    first, end = offsets(OffsetSpec.earliest()), offsets(OffsetSpec.latest())
    described = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout_s)[topic].result()
    raw = described.topic_id
    # as a UUID's text (the form stream_offsets has always kept), from the id's two signed 64-bit halves
    number = ((raw.get_most_significant_bits() % 2**64) << 64) | (raw.get_least_significant_bits() % 2**64)
    topic_id = str(uuid.UUID(int=number)) if number else None
    return TopicState(topic_id, {p: (first[p], end[p]) for p in sorted(first)})


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

"""foreachBatch sink: merge each micro-batch into the store exactly once.

Exactly once = a replayable source + an idempotent sink. Spark keeps the Kafka offsets of every
micro-batch in its checkpoint and, after a crash, re-runs the unfinished batch with the same id
and the same records. Here each batch is applied in ONE DuckDB transaction that also records
(query_id, batch_id) in `stream_batches`; a batch that is already recorded is skipped. So a crash
before the commit re-applies the batch, a crash after it skips the replay: every event counts once.

The same transaction moves `stream_offsets`, the store's own record of how far each Kafka partition
has been counted (the batch's end offsets, read from Spark's offset log). Records below it are
dropped before they are aggregated, so a lost, replaced or older checkpoint cannot count an event
twice either, and a stream without a checkpoint starts there (`obslab.stream.job`).

Per batch, in one transaction (the SQL of each step: `obslab.stream.merge`):
    dead letters (malformed, future, late) -> dead_letter_events     (insert, ignore duplicates)
    endpoint names new to their service   -> stream_endpoints        (up to ENDPOINT_MAX_PER_SERVICE;
                                                                       further names count as `other`)
    partials (endpoint, window, bucket)   -> latency_histograms       (counts added)
    failed requests by status code        -> status_counts            (counts added)
                                          -> endpoint_metrics sums    (counts and latency sum added)
    touched windows                       -> endpoint_metrics, service_metrics recomputed (rates, avg, pXX)
    watermark = max event time - WATERMARK_SECONDS; windows ending at or before it become final
    final windows                         -> their histograms are deleted (no event can change them now)
    the batch's end offsets               -> stream_offsets, stream_batches

An event is late when its window was already final before its batch: it goes to the dead letters
with reason `late` instead of changing a window the detector may have acted on. An event dated more
than FUTURE_TOLERANCE_SECONDS ahead of the stream's clock goes there with reason `future`: counted,
it would set the latest event time, and so the watermark, to its date. The event time and the
watermark are the store's (the newest of all its stream queries), so a new checkpoint continues them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from obslab.errors import OffsetsMismatchError
from obslab.feeds import Feeds
from obslab.settings import Settings
from obslab.schema import SKIPPED
from obslab.stream.counters import SinkCounters
from obslab.stream.merge import add_partials, finalize, keep_endpoints, recompute
from obslab.stream.start import spark_batch_offsets

log = logging.getLogger(__name__)

_NEVER = datetime(1970, 1, 1, tzinfo=timezone.utc)

@dataclass
class OffsetAdvance:
    """What one batch does to the store's Kafka position: from `expected` (read before the batch's
    Spark work; partition -> next offset) to `ends` (the batch's end offsets in Spark's offset log)."""

    topic: str
    topic_id: str | None
    expected: dict[int, int]
    ends: dict[int, int]


@dataclass
class _Progress:
    applied: bool  # this (query, batch) is in the ledger already
    watermark: datetime  # the store's watermark before the batch
    offsets: dict[int, int]  # partition -> next offset the store has not counted


def _micros(t: datetime) -> int:
    """Epoch microseconds of an aware datetime, exactly (no float in between)."""
    delta = t - _NEVER
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class StreamSink:
    """Callable for `foreachBatch`: (batch DataFrame, batch id) -> store (+ Kafka).

    With `offset_log` (the checkpoint's `spark/offsets` folder) the sink keeps the store's Kafka position
    (`stream_offsets`) and skips records below it; without, as for static input, it keeps no position."""

    def __init__(self, store, settings: Settings, query_id: str, feeds: Feeds | None = None,
                 offset_log: Path | None = None, topic_id: str | None = None, topic: str | None = None,
                 counters_file: Path | None = None, parse=None):
        self.store = store
        self.topic = topic or settings.stream_topic  # the topic whose position it keeps
        self.settings = settings
        self.query_id = query_id
        self.feeds = feeds  # updated windows are published there too (None: store only)
        self.offset_log = offset_log
        self.topic_id = topic_id
        self.counters = SinkCounters()
        # Where the counters go after every batch: on a Spark Connect server this sink runs in the
        # server's Python worker, so the stream's client reads what it did from there.
        self.counters_file = counters_file
        # Given (the running stream), the sink gets Kafka's rows and parses them itself: `parse` is its
        # source's parser (obslab.stream.job.parser_for), and events go the fast path first.
        self.parse = parse
        self.fast_path = parse is not None and settings.stream_source == "events" and settings.stream_fast_path
        self._kept: set[tuple[str, str]] = set()  # (service, endpoint) names known to be in stream_endpoints

    # ------------------------------------------------------------------ the batch

    def __call__(self, batch, batch_id: int) -> None:
        """One micro-batch of the running stream, waiting for a store another process holds (see `apply`):
        Kafka's rows when the sink was given its source's `parse`, else parsed rows."""
        self.apply(batch, int(batch_id), wait_for_store=True)
        if self.counters_file is not None:
            self.counters.save(self.counters_file)

    def apply(self, batch, batch_id: int, finalize_all: bool = False, wait_for_store: bool = False) -> list[dict]:
        """Apply one batch (parsed rows, or Kafka's rows when the sink has a `parse`); `finalize_all` marks
        every window final (end of a static input).

        With `wait_for_store` (the running stream), a store another process holds makes each of the two store
        steps (the read of the position, the merge) wait for it: each try waits STORE_LOCK_TIMEOUT_SECONDS,
        then a pause up to a minute, instead of ending the stream. The merge is one transaction that checks
        the ledger and the position again, so a try that fails has counted nothing, and Spark's work on the
        batch is not done again."""
        def store_step(step):
            return self._waiting_for_store(step, batch_id) if wait_for_store else step()

        progress = store_step(lambda: self._progress(batch_id))
        if progress.applied:
            self._skipped_replay(batch_id)
            return []
        topic = self.topic
        advance = None
        if self.offset_log is not None:
            advance = OffsetAdvance(topic, self.topic_id, progress.offsets,
                                    spark_batch_offsets(self.offset_log / str(batch_id), topic))
        future_after = datetime.now(timezone.utc) + timedelta(seconds=self.settings.future_tolerance_seconds)
        referred = 0
        if self.parse is None:
            partials, dead = self._outcome(batch, progress, future_after)
        elif self.fast_path:  # Kafka's rows of events: the plainly good ones add up in DuckDB
            from obslab.stream.fastpath import fast_outcome

            partials, dead, referred = fast_outcome(
                batch, self.settings, next_offsets=progress.offsets if self.offset_log is not None else {},
                future_after_us=_micros(future_after), watermark_us=_micros(progress.watermark),
                transformed=lambda rows: self._outcome(self.parse(rows), progress, future_after))
        else:  # Kafka's rows of another source
            partials, dead = self._outcome(self.parse(batch), progress, future_after)
        updated = store_step(lambda: self.merge(batch_id, partials, dead, finalize_all, offsets=advance,
                                                referred=referred))
        self._publish(updated)
        return updated

    def _outcome(self, parsed, progress: _Progress, future_after: datetime):
        """(partials, dead letters) of parsed rows, by Spark's transform: one pass over the batch."""
        # Spark's transform only here: merging, and so the offline replay, needs no Spark.
        from obslab.stream.transform import batch_outcome, mark_untimely, split_outcome, unseen, with_window

        if self.offset_log is not None:
            parsed = unseen(parsed, self.topic, progress.offsets)
        framed = with_window(parsed, self.settings.window_seconds)
        return split_outcome(batch_outcome(mark_untimely(framed, progress.watermark, future_after)).toArrow())

    @staticmethod
    def _waiting_for_store(step, batch_id: int):
        from obslab.errors import StoreLockedError
        from obslab.retry import RETRY_MAX_SECONDS, call_with_retries

        def waiting(err: BaseException, failed: int, wait_s: float) -> None:
            log.warning("batch %s waits for the store (try %d failed: %s); next try in %.0f s", batch_id, failed,
                        err, wait_s)

        return call_with_retries(step, StoreLockedError, first_wait_s=1.0, max_wait_s=RETRY_MAX_SECONDS,
                                 on_retry=waiting)

    def _skipped_replay(self, batch_id: int) -> None:
        self.counters.skipped_replays += 1
        # Spark re-runs the batch it has no commit for. Finding it in the store means the last run
        # stopped after the store commit and before Spark's checkpoint commit: nothing to do again.
        log.info("batch %d of query %s is in the store already (the last run stopped between the store commit "
                 "and the checkpoint commit): replay skipped, nothing counted twice", batch_id, self.query_id)

    def _progress(self, batch_id: int) -> _Progress:
        """The ledger entry, the store's watermark and Kafka position, in one read of the store."""
        if not self.store.path.exists():
            return _Progress(False, _NEVER, {})
        with self.store.reader() as con:
            applied = con.execute("SELECT 1 FROM stream_batches WHERE query_id = ? AND batch_id = ?",
                                  [self.query_id, batch_id]).fetchall()
            watermark = con.execute("SELECT max(watermark) FROM stream_state").fetchall()[0][0]
            offsets = dict(con.execute("SELECT kafka_partition, next_offset FROM stream_offsets WHERE topic = ?",
                                       [self.topic]).fetchall())
        return _Progress(bool(applied), watermark or _NEVER, offsets)

    # ------------------------------------------------------------------ the merge

    def merge(self, batch_id: int, partials, dead, finalize_all: bool = False,
              offsets: OffsetAdvance | None = None, referred: int = 0) -> list[dict]:
        """Merge one batch's partials and dead letters (Arrow tables shaped like `batch_outcome`'s
        two halves) in one transaction, moving the store's Kafka position by `offsets` when given;
        returns the service windows it changed. `referred`: the batch's records the fast path left to the
        transform (counted with the rest, when the batch is merged)."""
        w = self.settings.window_seconds
        now = datetime.now(timezone.utc)
        with self.store.writer() as con:
            if con.execute("SELECT 1 FROM stream_batches WHERE query_id = ? AND batch_id = ?",
                           [self.query_id, batch_id]).fetchall():
                self._skipped_replay(batch_id)
                return []  # applied by a run that crashed after its commit: the replay changes nothing
            if offsets is not None:
                self._check_position(con, offsets, batch_id)
            if "count" not in dead.column_names:  # one row per dead letter
                dead = dead.append_column("count", pa.array([1] * dead.num_rows, pa.int64()))
            con.register("batch_partials", partials)
            con.register("batch_dead", dead)
            try:
                con.execute(
                    "INSERT OR IGNORE INTO dead_letter_events SELECT topic, kafka_partition, kafka_offset, "
                    "raw_payload, reason, ? FROM batch_dead WHERE NOT starts_with(reason, ?)", [now, SKIPPED])
                names = partials.group_by(["service", "endpoint"]).aggregate([])
                rows, overflow, kept = keep_endpoints(  # rows: the relation to merge
                    con, "batch_partials", set(zip(names["service"].to_pylist(), names["endpoint"].to_pylist())),
                    self._kept, self.settings.endpoint_max_per_service, now)
                add_partials(con, rows, now)
                batch_max = con.execute(f"SELECT max(max_event_time) FROM {rows}").fetchall()[0][0]
                events = con.execute(f"SELECT coalesce(sum(count), 0) FROM {rows}").fetchall()[0][0]
                dead_count, skipped, late_count, future_count = con.execute(
                    "SELECT count(*) FILTER (WHERE NOT starts_with(reason, $1)), "
                    "coalesce(sum(count) FILTER (WHERE starts_with(reason, $1)), 0), "
                    "count(*) FILTER (WHERE reason = 'late'), count(*) FILTER (WHERE reason = 'future') "
                    "FROM batch_dead", [SKIPPED]).fetchall()[0]
                con.execute("CREATE OR REPLACE TEMP TABLE touched AS "
                            f"SELECT DISTINCT service, endpoint, window_start FROM {rows}")
            finally:
                con.unregister("batch_partials")
                con.unregister("batch_dead")
            recompute(con, "touched", now)
            # The store's latest event time, whichever query saw it: a new checkpoint continues it.
            old_max = con.execute("SELECT max(max_event_time) FROM stream_state").fetchall()[0][0]
            new_max = max([t for t in (old_max, batch_max) if t is not None], default=None)
            if finalize_all:
                watermark = datetime.max.replace(tzinfo=timezone.utc)
            elif new_max is not None:
                watermark = new_max - timedelta(seconds=self.settings.watermark_seconds)
            else:
                watermark = None
            updated = finalize(con, watermark, w, now)
            con.execute(
                "INSERT OR REPLACE INTO stream_state VALUES (?, ?, ?, ?, ?)",
                [self.query_id, new_max, None if finalize_all else watermark, w, now])
            ranges = self._advance(con, offsets, batch_id, now) if offsets is not None else None
            con.execute("INSERT INTO stream_batches (query_id, batch_id, events, dead_letters, applied_at, offsets, "
                        "endpoint_overflow, skipped_spans) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [self.query_id, batch_id, int(events), int(dead_count), now,
                         None if ranges is None else json.dumps(ranges), int(overflow), int(skipped)])
        if kept is not None:
            self._kept = kept  # committed; names are never removed, so a kept name stays kept
        self.counters.batches += 1
        self.counters.events += int(events)
        self.counters.dead_letters += int(dead_count)
        self.counters.late += int(late_count)
        self.counters.future += int(future_count)
        self.counters.endpoint_overflow += int(overflow)
        self.counters.skipped_spans += int(skipped)
        self.counters.referred += referred
        self.counters.last_watermark = watermark
        return updated

    def _check_position(self, con, offsets: OffsetAdvance, batch_id: int) -> None:
        """Refuse the batch when the store's position moved since it was read: another stream writes here."""
        rows = con.execute("SELECT kafka_partition, next_offset, topic_id FROM stream_offsets WHERE topic = ?",
                           [offsets.topic]).fetchall()
        now_at = {p: o for p, o, _ in rows}
        if now_at != offsets.expected:
            moved = sorted(p for p in set(now_at) | set(offsets.expected) if now_at.get(p) != offsets.expected.get(p))
            p = moved[0]
            raise OffsetsMismatchError(
                str(self.store.path), offsets.topic,
                f"another stream moved this store's position in partition {p} from {offsets.expected.get(p)} to "
                f"{now_at.get(p)} while batch {batch_id} ran, so two streams count into "
                "one store",
                "Stop the other stream (`obslab status` lists the lab's processes) or give each its own DUCKDB_PATH. "
                "Nothing of this batch was written; a restart redoes it.")
        ids = {t for _, _, t in rows if t}
        if offsets.topic_id and ids and ids != {offsets.topic_id}:
            raise OffsetsMismatchError(
                str(self.store.path), offsets.topic,
                f"the topic was deleted and created again (its id was {', '.join(sorted(ids))}, it is "
                f"{offsets.topic_id} now), so its offsets start again and cannot be compared with the store's",
                "Count the new topic into a new store (DUCKDB_PATH) with a new CHECKPOINT_NAME.")

    def _advance(self, con, offsets: OffsetAdvance, batch_id: int, now: datetime) -> dict:
        """Move the store's Kafka position to the batch's end offsets; returns {topic: {partition: [from, to]}}."""
        ranges = {}
        known = con.execute("SELECT max(topic_id) FROM stream_offsets WHERE topic = ?", [offsets.topic]).fetchall()[0][0]
        topic_id = offsets.topic_id or known  # a run that could not learn the id keeps the one recorded
        for partition, end in sorted(offsets.ends.items()):
            before = offsets.expected.get(partition)
            after = end if before is None else max(before, end)  # an older checkpoint never moves it back
            con.execute("INSERT OR REPLACE INTO stream_offsets VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [offsets.topic, partition, after, topic_id, self.query_id, batch_id, now])
            ranges[str(partition)] = [before, after]
        return {offsets.topic: ranges}

    # ------------------------------------------------------------------ publishing

    def _publish(self, rows: list[dict]) -> None:
        """Updated windows to the aggregated_metrics feed (JSON, key = service); at least once."""
        if self.feeds is None or not rows:
            return
        try:
            self.counters.published += self.feeds.windows(rows)
        except Exception as err:  # noqa: BLE001 - the store is the source of truth; the topic is a feed
            log.warning("could not publish %d windows to %s: %s", len(rows), self.settings.topic_aggregated_metrics, err)
            self.counters.errors.append(str(err))

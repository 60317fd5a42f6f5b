"""foreachBatch sink: merge each micro-batch into the store exactly once.

Exactly once = a replayable source + an idempotent sink. Spark keeps the Kafka offsets of every
micro-batch in its checkpoint and, after a crash, re-runs the unfinished batch with the same id
and the same records. Here each batch is applied in ONE DuckDB transaction that also records
(query_id, batch_id) in `stream_batches`; a batch that is already recorded is skipped. So a crash
before the commit re-applies the batch, a crash after it skips the replay: every event counts once.

Per batch, in one transaction:
    dead letters (malformed + late)       -> dead_letter_events      (insert, ignore duplicates)
    partials (endpoint, window, bucket)   -> latency_histograms       (counts added)
    failed requests by status code        -> status_counts            (counts added)
                                          -> endpoint_metrics sums    (counts and latency sum added)
    touched windows                       -> endpoint_metrics, service_metrics recomputed (rates, avg, pXX)
    watermark = max event time - WATERMARK_SECONDS; windows ending at or before it become final
    final windows                         -> their histograms are deleted (no event can change them now)

An event is late when its window was already final before its batch: it goes to the dead letters
with reason `late` instead of changing a window the detector may have acted on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from obslab.settings import Settings
from obslab.stream.transform import GAMMA, batch_outcome, split_outcome, with_window

log = logging.getLogger(__name__)

_NEVER = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class SinkCounters:
    """What the sink did during this process's life."""

    batches: int = 0
    skipped_replays: int = 0
    events: int = 0
    dead_letters: int = 0
    late: int = 0
    last_watermark: datetime | None = None
    published: int = 0
    errors: list[str] = field(default_factory=list)


class StreamSink:
    """Callable for `foreachBatch`: (parsed batch DataFrame, batch id) -> store (+ Kafka)."""

    def __init__(self, store, settings: Settings, query_id: str, publish: bool = True):
        self.store = store
        self.settings = settings
        self.query_id = query_id
        self.publish = publish
        self.counters = SinkCounters()
        self._producer = None

    # ------------------------------------------------------------------ the batch

    def __call__(self, parsed, batch_id: int) -> None:
        self.apply(parsed, int(batch_id))

    def apply(self, parsed, batch_id: int, finalize_all: bool = False) -> list[dict]:
        """Apply one parsed batch; `finalize_all` marks every window final (end of a static input)."""
        applied, watermark_before = self._progress(batch_id)
        if applied:
            self.counters.skipped_replays += 1
            return []
        from pyspark.sql import functions as F

        framed = with_window(parsed, self.settings.window_seconds)
        late = F.col("reason").isNull() & (F.col("window_end") <= F.lit(watermark_before))
        marked = framed.withColumn("reason", F.when(late, F.lit("late")).otherwise(F.col("reason")))
        partials, dead = split_outcome(batch_outcome(marked).toArrow())  # one pass over the batch
        updated = self.merge(batch_id, partials, dead, finalize_all)
        self._publish(updated)
        return updated

    def _progress(self, batch_id: int) -> tuple[bool, datetime]:
        """(was this batch applied already, the watermark before it), in one read of the store."""
        if not self.store.path.exists():
            return False, _NEVER
        with self.store.reader() as con:
            applied = con.execute("SELECT 1 FROM stream_batches WHERE query_id = ? AND batch_id = ?",
                                  [self.query_id, batch_id]).fetchall()
            state = con.execute("SELECT watermark FROM stream_state WHERE query_id = ?", [self.query_id]).fetchall()
        return bool(applied), state[0][0] if state and state[0][0] is not None else _NEVER

    # ------------------------------------------------------------------ the merge

    def merge(self, batch_id: int, partials, dead, finalize_all: bool = False) -> list[dict]:
        """Merge one batch's partials and dead letters (Arrow tables shaped like `batch_outcome`'s
        two halves) in one transaction; returns the service windows it changed."""
        w = self.settings.window_seconds
        now = datetime.now(timezone.utc)
        with self.store.writer() as con:
            if con.execute("SELECT 1 FROM stream_batches WHERE query_id = ? AND batch_id = ?",
                           [self.query_id, batch_id]).fetchall():
                self.counters.skipped_replays += 1
                return []  # applied by a run that crashed after its commit: the replay changes nothing
            con.register("batch_partials", partials)
            con.register("batch_dead", dead)
            try:
                con.execute(
                    "INSERT OR IGNORE INTO dead_letter_events "
                    "SELECT topic, kafka_partition, kafka_offset, raw_payload, reason, ? FROM batch_dead", [now])
                con.execute("""
                    INSERT INTO status_counts
                    SELECT service, endpoint, window_start, error_code, sum(count) FROM batch_partials
                    WHERE error_code IS NOT NULL GROUP BY ALL
                    ON CONFLICT (service, endpoint, window_start, status_code)
                    DO UPDATE SET count = status_counts.count + excluded.count""")
                con.execute("""
                    INSERT INTO latency_histograms
                    SELECT service, endpoint, window_start, bucket, sum(count) FROM batch_partials GROUP BY ALL
                    ON CONFLICT (service, endpoint, window_start, bucket)
                    DO UPDATE SET count = latency_histograms.count + excluded.count""")
                con.execute("""
                    INSERT INTO endpoint_metrics (service, endpoint, window_start, window_end, request_count,
                        error_count, error_rate, avg_latency_ms, p50_latency_ms, p95_latency_ms, p99_latency_ms,
                        is_final, updated_at, latency_sum_ms)
                    SELECT service, endpoint, window_start, any_value(window_end), sum(count), sum(errors),
                           0, 0, 0, 0, 0, false, ?, sum(latency_sum)
                    FROM batch_partials GROUP BY service, endpoint, window_start
                    ON CONFLICT (service, endpoint, window_start) DO UPDATE SET
                        request_count = endpoint_metrics.request_count + excluded.request_count,
                        error_count = endpoint_metrics.error_count + excluded.error_count,
                        latency_sum_ms = endpoint_metrics.latency_sum_ms + excluded.latency_sum_ms,
                        updated_at = excluded.updated_at""", [now])
                batch_max = con.execute("SELECT max(max_event_time) FROM batch_partials").fetchall()[0][0]
                events = con.execute("SELECT coalesce(sum(count), 0) FROM batch_partials").fetchall()[0][0]
                dead_count = dead.num_rows
                late_count = con.execute("SELECT count(*) FROM batch_dead WHERE reason = 'late'").fetchall()[0][0]
                con.execute("CREATE OR REPLACE TEMP TABLE touched AS "
                            "SELECT DISTINCT service, endpoint, window_start FROM batch_partials")
            finally:
                con.unregister("batch_partials")
                con.unregister("batch_dead")
            self._recompute(con, now)
            old = con.execute("SELECT max_event_time, watermark FROM stream_state WHERE query_id = ?",
                              [self.query_id]).fetchall()
            old_max = old[0][0] if old else None
            new_max = max([t for t in (old_max, batch_max) if t is not None], default=None)
            if finalize_all:
                watermark = datetime.max.replace(tzinfo=timezone.utc)
            elif new_max is not None:
                watermark = new_max - timedelta(seconds=self.settings.watermark_seconds)
            else:
                watermark = None
            updated = self._finalize(con, watermark, now)
            con.execute(
                "INSERT OR REPLACE INTO stream_state VALUES (?, ?, ?, ?, ?)",
                [self.query_id, new_max, None if finalize_all else watermark, w, now])
            con.execute("INSERT INTO stream_batches VALUES (?, ?, ?, ?, ?)",
                        [self.query_id, batch_id, int(events), int(dead_count), now])
        self.counters.batches += 1
        self.counters.events += int(events)
        self.counters.dead_letters += int(dead_count)
        self.counters.late += int(late_count)
        self.counters.last_watermark = watermark
        return updated

    def _recompute(self, con, now: datetime) -> None:
        """Derived columns of the touched endpoint windows and of their services' windows."""
        con.execute(f"""
            UPDATE endpoint_metrics AS m SET
                error_rate = m.error_count / m.request_count,
                avg_latency_ms = m.latency_sum_ms / m.request_count,
                p50_latency_ms = q.p50, p95_latency_ms = q.p95, p99_latency_ms = q.p99
            FROM ({_percentiles_sql(("service", "endpoint", "window_start"), "touched")}) AS q
            WHERE m.service = q.service AND m.endpoint = q.endpoint AND m.window_start = q.window_start""")
        con.execute(f"""
            INSERT OR REPLACE INTO service_metrics
            SELECT e.service, e.window_start, any_value(e.window_end), sum(e.request_count), sum(e.error_count),
                   sum(e.error_count) / sum(e.request_count), sum(e.latency_sum_ms) / sum(e.request_count),
                   any_value(q.p50), any_value(q.p95), any_value(q.p99), false, ?
            FROM endpoint_metrics e
            JOIN (SELECT DISTINCT service, window_start FROM touched) t USING (service, window_start)
            JOIN ({_percentiles_sql(("service", "window_start"), "(SELECT DISTINCT service, window_start FROM touched)")}) q
              USING (service, window_start)
            GROUP BY e.service, e.window_start""", [now])

    def _finalize(self, con, watermark: datetime | None, now: datetime) -> list[dict]:
        """Mark windows final up to the watermark, drop their histograms; return the changed service rows."""
        if watermark is not None:
            for table in ("endpoint_metrics", "service_metrics"):
                con.execute(f"UPDATE {table} SET is_final = true, updated_at = ? "
                            "WHERE NOT is_final AND window_end <= ?", [now, watermark])
            con.execute("DELETE FROM latency_histograms WHERE window_start + to_seconds(?) <= ?",
                        [self.settings.window_seconds, watermark])
        rows = con.execute("SELECT * FROM service_metrics WHERE updated_at = ? ORDER BY window_start, service",
                           [now]).fetchall()
        names = [d[0] for d in con.description]
        return [dict(zip(names, r)) for r in rows]

    # ------------------------------------------------------------------ publishing

    def _publish(self, rows: list[dict]) -> None:
        """Updated windows to the aggregated_metrics topic (JSON, key = service); at least once."""
        if not self.publish or not rows:
            return
        try:
            if self._producer is None:
                from obslab.broker import producer

                self._producer = producer(self.settings, linger_ms=5, max_block_ms=10_000)
            topic = self.settings.topic_aggregated_metrics
            for row in rows:
                value = json.dumps({k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()})
                self._producer.send(topic, key=row["service"].encode(), value=value.encode())
            self._producer.flush(timeout=30)
            self.counters.published += len(rows)
        except Exception as err:  # noqa: BLE001 - the store is the source of truth; the topic is a feed
            log.warning("could not publish %d windows to %s: %s", len(rows), self.settings.topic_aggregated_metrics, err)
            self.counters.errors.append(str(err))

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()


def _percentiles_sql(keys: tuple[str, ...], scope: str) -> str:
    """p50/p95/p99 per `keys` from the histograms of the windows in `scope` (nearest-rank on buckets)."""
    k = ", ".join(keys)
    on = " AND ".join(f"h.{c} = s.{c}" for c in keys)

    def at(q: float) -> str:  # the value of the first bucket whose cumulative count reaches rank ceil(q * n)
        return f"2 * pow({GAMMA}, min(bucket) FILTER (WHERE cum >= ceil({q} * n)) + 1) / ({GAMMA} + 1)"

    return f"""
        SELECT {k}, {at(0.50)} AS p50, {at(0.95)} AS p95, {at(0.99)} AS p99
        FROM (
            SELECT {k}, bucket,
                   sum(c) OVER (PARTITION BY {k} ORDER BY bucket) AS cum,
                   sum(c) OVER (PARTITION BY {k}) AS n
            FROM (SELECT {", ".join("h." + c for c in keys)}, h.bucket, sum(h.count) AS c
                  FROM latency_histograms h JOIN {scope} s ON {on}
                  GROUP BY ALL)
        )
        GROUP BY {k}"""

"""The SQL of the sink's merge: one batch's partials into the store's tables, on the connection of the
transaction the sink holds (`obslab.stream.sink`). Nothing here commits, and nothing here knows of Kafka
or of batches: the sink decides whether a batch is merged at all, and what its position becomes.

The partials are a registered relation (service, endpoint, window_start, window_end, bucket, error_code,
count, errors, latency_sum, max_event_time), as `transform.batch_outcome` shapes them."""

from __future__ import annotations

from datetime import datetime

from obslab.stream.buckets import percentiles_sql

# The endpoint that events of names beyond a service's ENDPOINT_MAX_PER_SERVICE are counted under.
# A real endpoint cannot be called this: a valid name starts with "/".
OTHER_ENDPOINT = "other"


def add_status_counts(con, relation: str) -> None:
    """Add the error mix of `relation` (partials: service, endpoint, window_start, error_code, count)
    to status_counts: the sink's merge, and the evaluation's replay, which writes it once at the end."""
    con.execute(f"""
        INSERT INTO status_counts
        SELECT service, endpoint, window_start, error_code, sum(count) FROM {relation}
        WHERE error_code IS NOT NULL GROUP BY ALL
        ON CONFLICT (service, endpoint, window_start, status_code)
        DO UPDATE SET count = status_counts.count + excluded.count""")


def add_partials(con, relation: str, now: datetime) -> None:
    """Add the partials of `relation` to the latency histograms and to the sums of their endpoint windows
    (the derived columns are left to `recompute`)."""
    add_status_counts(con, relation)
    con.execute(f"""
        INSERT INTO latency_histograms
        SELECT service, endpoint, window_start, bucket, sum(count) FROM {relation} GROUP BY ALL
        ON CONFLICT (service, endpoint, window_start, bucket)
        DO UPDATE SET count = latency_histograms.count + excluded.count""")
    con.execute(f"""
        INSERT INTO endpoint_metrics (service, endpoint, window_start, window_end, request_count,
            error_count, error_rate, avg_latency_ms, p50_latency_ms, p95_latency_ms, p99_latency_ms,
            is_final, updated_at, latency_sum_ms)
        SELECT service, endpoint, window_start, any_value(window_end), sum(count), sum(errors),
               0, 0, 0, 0, 0, false, ?, sum(latency_sum)
        FROM {relation} GROUP BY service, endpoint, window_start
        ON CONFLICT (service, endpoint, window_start) DO UPDATE SET
            request_count = endpoint_metrics.request_count + excluded.request_count,
            error_count = endpoint_metrics.error_count + excluded.error_count,
            latency_sum_ms = endpoint_metrics.latency_sum_ms + excluded.latency_sum_ms,
            updated_at = excluded.updated_at""", [now])


def keep_endpoints(con, relation: str, names: set, kept: set, max_per_service: int,
                   now: datetime) -> tuple[str, int, set | None]:
    """Admit the endpoint names of `relation` (its (service, endpoint) pairs are `names`) up to
    `max_per_service` per service, given the names `kept` so far; returns the relation to merge (names
    beyond the cap counted as OTHER_ENDPOINT), how many events went to OTHER_ENDPOINT, and the kept names
    after it (None when it brought no new name)."""
    if names <= kept:
        return relation, 0, None  # the usual batch: every name is kept already, nothing to rewrite
    # New names are admitted busiest first (ties by name), so a replay of the batch admits the same.
    con.execute(f"""
        INSERT INTO stream_endpoints
        SELECT service, endpoint, ? FROM (
            SELECT n.service, n.endpoint,
                   coalesce(k.kept, 0) + row_number() OVER (PARTITION BY n.service
                                                            ORDER BY n.events DESC, n.endpoint) AS place
            FROM (SELECT service, endpoint, sum(count) AS events FROM {relation} GROUP BY ALL) n
            LEFT JOIN (SELECT service, count(*) AS kept FROM stream_endpoints GROUP BY service) k
                   ON k.service = n.service
            WHERE NOT EXISTS (SELECT 1 FROM stream_endpoints e
                              WHERE e.service = n.service AND e.endpoint = n.endpoint))
        WHERE place <= ?""", [now, max_per_service])
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE kept_partials AS
        SELECT p.service, coalesce(e.endpoint, ?) AS endpoint, p.window_start, p.window_end,
               p.bucket, p.error_code, p.count, p.errors, p.latency_sum, p.max_event_time,
               e.endpoint IS NULL AS folded
        FROM {relation} p
        LEFT JOIN stream_endpoints e ON e.service = p.service AND e.endpoint = p.endpoint""", [OTHER_ENDPOINT])
    overflow = con.execute("SELECT coalesce(sum(count), 0) FROM kept_partials WHERE folded").fetchall()[0][0]
    return "kept_partials", overflow, set(con.execute("SELECT service, endpoint FROM stream_endpoints").fetchall())


def recompute(con, touched: str, now: datetime) -> None:
    """Derived columns (rates, average, percentiles) of the endpoint windows in `touched` (service,
    endpoint, window_start) and of their services' windows."""
    con.execute(f"""
        UPDATE endpoint_metrics AS m SET
            error_rate = m.error_count / m.request_count,
            avg_latency_ms = m.latency_sum_ms / m.request_count,
            p50_latency_ms = q.p50, p95_latency_ms = q.p95, p99_latency_ms = q.p99
        FROM ({percentiles_sql(("service", "endpoint", "window_start"), touched)}) AS q
        WHERE m.service = q.service AND m.endpoint = q.endpoint AND m.window_start = q.window_start""")
    windows = f"(SELECT DISTINCT service, window_start FROM {touched})"
    con.execute(f"""
        INSERT OR REPLACE INTO service_metrics
        SELECT e.service, e.window_start, any_value(e.window_end), sum(e.request_count), sum(e.error_count),
               sum(e.error_count) / sum(e.request_count), sum(e.latency_sum_ms) / sum(e.request_count),
               any_value(q.p50), any_value(q.p95), any_value(q.p99), false, ?
        FROM endpoint_metrics e
        JOIN {windows} t USING (service, window_start)
        JOIN ({percentiles_sql(("service", "window_start"), windows)}) q USING (service, window_start)
        GROUP BY e.service, e.window_start""", [now])


def finalize(con, watermark: datetime | None, window_seconds: int, now: datetime) -> list[dict]:
    """Mark windows final up to the watermark and drop their histograms; returns the service windows
    changed at `now` (this merge's), oldest first."""
    if watermark is not None:
        for table in ("endpoint_metrics", "service_metrics"):
            con.execute(f"UPDATE {table} SET is_final = true, updated_at = ? "
                        "WHERE NOT is_final AND window_end <= ?", [now, watermark])
        con.execute("DELETE FROM latency_histograms WHERE window_start + to_seconds(?) <= ?",
                    [window_seconds, watermark])
    rows = con.execute("SELECT * FROM service_metrics WHERE updated_at = ? ORDER BY window_start, service",
                       [now]).fetchall()
    names = [d[0] for d in con.description]
    return [dict(zip(names, r)) for r in rows]

"""Data quality and retention of the store: the invariants of the metric windows and of the rows
that refer to them, and how long rows are kept.

    validate(store, settings, now)         -> [QualityCheck]   one per rule, passed or not, with examples
    record(store, run_id, checks, now)     -> quality_checks   one row per rule and run
    apply_retention(store, settings, now)  -> {table: rows deleted}, in one transaction
    compact(store)                         -> (bytes before, bytes after) of the file, via CHECKPOINT
    assert_valid(checks)                   raises DataQualityError naming every failed rule

Rules (each reads the store as one snapshot; `RULES` keeps their order):

    nulls                        a metric window with a NULL (or NaN) in any column
    ranges                       counts, rates and latencies outside what they can be
    duplicate_windows            more than one row per window, or windows not WINDOW_SECONDS long
                                 or not aligned to it (so they overlap their neighbours)
    window_gaps                  missing windows of a service between its first and last retained one
    error_rate_consistency       error_rate against the counts; a service's counts against its endpoints'
    incidents_without_windows    a retained incident without any window of its service in its span
    summaries_without_incidents  a narrative of an incident that is not in `incidents`
    anomalies_without_incidents  an anomaly pointing at an incident that is not in `incidents`

Retention: a row is "older than the retention" when its time is strictly before
cutoff = now - RETENTION_DAYS; a row exactly at the cutoff is kept. `retention_plan` says which
time each table is judged by.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from obslab.errors import DataQualityError
from obslab.schema import (
    ANOMALIES,
    DEAD_LETTER_EVENTS,
    ENDPOINT_METRICS,
    HEALTH_CHECKS,
    INCIDENT_SUMMARIES,
    INCIDENTS,
    INJECTED_INCIDENTS,
    LATENCY_HISTOGRAMS,
    PIPELINE_RUNS,
    QUALITY_CHECKS,
    SERVICE_METRICS,
    STATUS_COUNTS,
    STREAM_BATCHES,
    STREAM_STATE,
    Table,
)
from obslab.settings import Settings
from obslab.stream.buckets import GAMMA

EXAMPLES = 3  # examples quoted in a failed rule's message

# Reported percentiles are each within a = (GAMMA-1)/(GAMMA+1) of an exact sample percentile, and
# exact percentiles are ordered. So reported p50 <= (1+a) true p50 <= (1+a) true p95
# <= (1+a)/(1-a) reported p95, and (1+a)/(1-a) = GAMMA: one bucket's width is the most two honest
# percentiles can be out of order. The stream's own percentiles come from one histogram and are
# never out of order at all.
PERCENTILE_TOLERANCE = GAMMA

# error_rate is stored as error_count / request_count, computed as a double; anything beyond
# rounding means the rate and the counts were written apart.
RATE_EPSILON = 1e-9

_METRIC_TABLES = (SERVICE_METRICS, ENDPOINT_METRICS)


@dataclass(frozen=True)
class QualityCheck:
    """The outcome of one rule: passed or not, how many rows (or windows) break it, and why."""

    name: str
    ok: bool
    violations: int
    message: str


@dataclass(frozen=True)
class _Scope:
    """What every rule is judged against."""

    window_seconds: int
    cutoff: datetime  # now - RETENTION_DAYS

    @property
    def window_us(self) -> int:
        return self.window_seconds * 1_000_000


# ------------------------------------------------------------------------- validation

def validate(store, settings: Settings, now: datetime | None = None) -> list[QualityCheck]:
    """Judge every rule over one read of the store; an empty store passes them all."""
    now = now or datetime.now(timezone.utc)
    scope = _Scope(settings.window_seconds, now - timedelta(days=settings.retention_days))
    with store.reader() as con:
        return [rule(con, scope) for rule in RULES.values()]


def assert_valid(checks: list[QualityCheck]) -> None:
    """Raise DataQualityError when any rule failed."""
    failed = [c for c in checks if not c.ok]
    if failed:
        raise DataQualityError(failed)


def new_run_id(now: datetime) -> str:
    """A unique id for one data-quality run, sortable by time."""
    return f"quality/{now.astimezone(timezone.utc):%Y%m%dT%H%M%S}Z/{uuid.uuid4().hex[:8]}"


def record(store, run_id: str, checks: list[QualityCheck], now: datetime) -> int:
    """Store one run's checks in quality_checks (re-recording a run replaces its rows)."""
    rows = [{"run_id": run_id, "check_name": c.name, "ok": c.ok, "violations": c.violations,
             "message": c.message, "checked_at": now} for c in checks]
    return store.upsert(QUALITY_CHECKS.name, rows) if rows else 0


def _result(name: str, checked: int, violations: int, examples: list[str], what: str, advice: str,
            found: str = "{violations} of {checked} {what} break the rule") -> QualityCheck:
    """A rule's outcome with a message a person can act on; `found` words the count of violations."""
    if checked == 0:
        return QualityCheck(name, True, 0, f"the store has no {what} yet: nothing to check")
    if violations == 0:
        return QualityCheck(name, True, 0, f"{checked} {what} checked; none breaks the rule")
    quoted = "; ".join(examples[:EXAMPLES])
    counted = found.format(violations=violations, checked=checked, what=what)
    return QualityCheck(name, False, violations, f"{counted}, e.g. {quoted}. {advice}")


def _listing(con, sql: str, params: dict) -> tuple[int, list[tuple]]:
    """(how many rows `sql` lists, its first few rows in a stable order)."""
    total = con.execute(f"SELECT count(*) FROM ({sql})", params).fetchall()[0][0]
    first = con.execute(f"SELECT * FROM ({sql}) ORDER BY ALL LIMIT {EXAMPLES}", params).fetchall()
    return total, first


def _count(con, table: Table, where: str = "TRUE", params: dict | None = None) -> int:
    return con.execute(f"SELECT count(*) FROM {table.name} WHERE {where}", params or {}).fetchall()[0][0]


def _t(at: datetime | None) -> str:
    return "NULL" if at is None else f"{at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S}Z"


def _window(table: Table, row: tuple) -> str:
    """'endpoint_metrics checkout /api/cart 2026-01-05 09:00:00Z' from (service, endpoint, window_start, ...)."""
    service, endpoint, start = row[:3]
    return " ".join(str(p) for p in (table.name, service, endpoint, _t(start)) if p is not None)


def _window_keys(table: Table) -> str:
    """service, endpoint (NULL for service windows), window_start: every listing of windows starts so."""
    return f"service, {'endpoint' if 'endpoint' in table.column_names else 'NULL'}, window_start"


def _window_problems(con, problems_of: Callable[[Table], list[str]], params: dict,
                     source: Callable[[Table], str] = lambda t: t.name) -> tuple[int, int, list[str]]:
    """(windows checked, windows with a problem, examples) over both metric tables. A problem is a SQL
    expression that describes what is wrong with a row, or is NULL when nothing is."""
    checked = violations = 0
    examples: list[str] = []
    for table in _METRIC_TABLES:
        found = f"list_filter([{', '.join(problems_of(table))}], lambda x: x IS NOT NULL)"
        total, first = _listing(con, f"SELECT * FROM (SELECT {_window_keys(table)}, {found} AS found "
                                     f"FROM {source(table)}) WHERE len(found) > 0", params)
        checked += _count(con, table)
        violations += total
        examples += [f"{_window(table, r)}: {', '.join(r[3])}" for r in first]
    return checked, violations, examples


def _nulls(con, scope: _Scope) -> QualityCheck:
    # Every column of a metric window is needed: the DDL enforces NOT NULL on all of them except
    # endpoint_metrics.latency_sum_ms (added later by migration 2, so rows of older stores lack it),
    # and a NaN is a missing number too. A store copied without its constraints can hold anything.
    def problems(table: Table) -> list[str]:
        return [f"CASE WHEN {c.name} IS NULL{f' OR isnan({c.name})' if c.type == 'double' else ''} "
                f"THEN '{c.name} missing' END" for c in table.columns]

    return _result("nulls", *_window_problems(con, problems, {}), "metric windows",
                   "The stream's sink fills every column, so another writer (or a store from before migration 2) "
                   "wrote these rows: rebuild them from the topic into a fresh store (new DUCKDB_PATH and "
                   "CHECKPOINT_NAME), or delete them.")


def _ranges(con, scope: _Scope) -> QualityCheck:
    def problems(table: Table) -> list[str]:
        latencies = [c for c in table.column_names if c.endswith("latency_ms") or c == "latency_sum_ms"]
        return [
            # A window is stored only because events fell into it.
            "CASE WHEN request_count < 1 THEN format('request_count {}', request_count) END",
            "CASE WHEN error_count < 0 THEN format('error_count {}', error_count) END",
            "CASE WHEN error_count > request_count "
            "THEN format('error_count {} > request_count {}', error_count, request_count) END",
            "CASE WHEN NOT error_rate BETWEEN 0 AND 1 THEN format('error_rate {}', error_rate) END",
            *(f"CASE WHEN {c} < 0 THEN format('{c} {{}}', {c}) END" for c in latencies),
            "CASE WHEN p50_latency_ms > $tolerance * p95_latency_ms "
            "THEN format('p50 {} > p95 {}', p50_latency_ms, p95_latency_ms) END",
            "CASE WHEN p95_latency_ms > $tolerance * p99_latency_ms "
            "THEN format('p95 {} > p99 {}', p95_latency_ms, p99_latency_ms) END",
        ]

    return _result("ranges", *_window_problems(con, problems, {"tolerance": PERCENTILE_TOLERANCE}), "metric windows",
                   "Counts must be >= 0 with errors <= requests, rates within [0, 1], latencies >= 0 and "
                   f"p50 <= p95 <= p99 (within a factor {PERCENTILE_TOLERANCE}, one histogram bucket). The stream "
                   "cannot write such values: find the other writer, and do not trust detections on these windows "
                   "until they are rebuilt from the topic into a fresh store.")


def _duplicate_windows(con, scope: _Scope) -> QualityCheck:
    def source(table: Table) -> str:
        return (f"(SELECT *, count(*) OVER (PARTITION BY {', '.join(table.key)}) AS copies, "
                "epoch_us(window_end) - epoch_us(window_start) AS length_us, "
                f"epoch_us(window_start) % $window_us AS offset_us FROM {table.name})")

    problems = [
        "CASE WHEN copies > 1 THEN format('{} rows for one window', copies) END",
        "CASE WHEN length_us <> $window_us THEN format('lasts {} s, not {} s', length_us / 1e6, $w) END",
        "CASE WHEN offset_us <> 0 THEN format('starts {} s after a {} s boundary', offset_us / 1e6, $w) END",
    ]
    found = _window_problems(con, lambda table: problems, {"window_us": scope.window_us, "w": scope.window_seconds},
                             source)
    streams = sorted({r[0] for r in con.execute(f"SELECT window_seconds FROM {STREAM_STATE.name}").fetchall()})
    hint = ""
    if streams and scope.window_seconds not in streams:
        hint = (f" The stream state says the stream ran with WINDOW_SECONDS={', '.join(map(str, streams))}: "
                "if every window fails, check with that value.")
    return _result("duplicate_windows", *found, "metric windows",
                   f"Windows of one series must not overlap: one row per window, each WINDOW_SECONDS="
                   f"{scope.window_seconds} long and starting on a multiple of it.{hint} Otherwise two writers or "
                   "two differently configured streams wrote these rows: stop one, and rebuild the windows from "
                   "the topic into a fresh store.")


def _window_gaps(con, scope: _Scope) -> QualityCheck:
    # Only the service level: an endpoint with little traffic legitimately has empty windows.
    # Judged over the windows retention keeps, so deleting old data never opens a gap.
    gaps = f"""
        SELECT service, window_end, next_start,
               (epoch_us(next_start) - epoch_us(window_start)) // $window_us - 1 AS missing
        FROM (SELECT service, window_start, window_end,
                     lead(window_start) OVER (PARTITION BY service ORDER BY window_start) AS next_start
              FROM {SERVICE_METRICS.name} WHERE window_end >= $cutoff)
        WHERE next_start IS NOT NULL"""
    params = {"window_us": scope.window_us, "cutoff": scope.cutoff}
    missing = con.execute(f"SELECT coalesce(sum(missing), 0) FROM ({gaps}) WHERE missing > 0", params).fetchall()[0][0]
    first = con.execute(f"SELECT * FROM ({gaps}) WHERE missing > 0 ORDER BY missing DESC, service, window_end "
                        f"LIMIT {EXAMPLES}", params).fetchall()
    checked = _count(con, SERVICE_METRICS, "window_end >= $cutoff", {"cutoff": scope.cutoff})
    examples = [f"{service}: no window from {_t(start)} to {_t(end)} ({n} missing)" for service, start, end, n in first]
    return _result("window_gaps", checked, int(missing), examples, "retained service windows",
                   "A missing window means either an outage (no request reached the service, e.g. an injected "
                   "traffic_drop or endpoint_outage: check injected_incidents and the service) or lost data (the "
                   "stream was stopped or behind, or the events went to dead_letter_events: check those and the "
                   "stream's log). While Kafka still holds the events, rebuilding from the topic into a fresh store "
                   "recovers lost windows; an outage stays a gap.",
                   found="{violations} missing window(s) between the first and the last of {checked} {what}")


def _error_rate_consistency(con, scope: _Scope) -> QualityCheck:
    checked = violations = 0
    examples: list[str] = []
    for table in _METRIC_TABLES:
        total, first = _listing(con, f"""
            SELECT {_window_keys(table)}, error_rate, error_count, request_count FROM {table.name}
            WHERE request_count > 0 AND abs(error_rate - error_count / request_count) > $epsilon""",
                                {"epsilon": RATE_EPSILON})
        checked += _count(con, table)
        violations += total
        examples += [f"{_window(table, r)}: error_rate {r[3]:.6g} but {r[4]} errors / {r[5]} requests" for r in first]
    # (service, window_start) -> the service's counts and the sums of its endpoints' counts
    total, first = _listing(con, f"""
        SELECT coalesce(s.service, e.service), NULL, coalesce(s.window_start, e.window_start),
               s.request_count, s.error_count, e.requests, e.errors
        FROM {SERVICE_METRICS.name} s
        FULL OUTER JOIN (SELECT service, window_start, sum(request_count) AS requests, sum(error_count) AS errors
                         FROM {ENDPOINT_METRICS.name} GROUP BY service, window_start) e
          ON s.service = e.service AND s.window_start = e.window_start
        WHERE s.request_count IS DISTINCT FROM e.requests OR s.error_count IS DISTINCT FROM e.errors""", {})
    violations += total

    def counts(requests, errors) -> str:
        return "none" if requests is None else f"{requests} requests / {errors} errors"

    examples += [f"{_window(SERVICE_METRICS, r)}: service {counts(r[3], r[4])}, its endpoints together "
                 f"{counts(r[5], r[6])}" for r in first]
    return _result("error_rate_consistency", checked, violations, examples, "metric windows",
                   "The stream's sink writes a window's counts, its rate and its service's row in one transaction, "
                   "so another writer changed some of them: rebuild these windows from the topic into a fresh "
                   "store, and treat detections on them as suspect.")


def _incidents_without_windows(con, scope: _Scope) -> QualityCheck:
    # Only incidents that opened inside the retained period: the windows of older ones may have been
    # deleted by retention on purpose. A window overlaps [opened_at, last_anomaly_at) when it starts
    # before the end and ends after the start. An outage (the detector judged a silent period as a
    # window of zero requests) has no stored window by its nature, so it is not a violation.
    retained = "opened_at >= $cutoff"
    total, first = _listing(con, f"""
        SELECT incident_id, opened_at, last_anomaly_at FROM {INCIDENTS.name} i
        WHERE {retained} AND NOT EXISTS (
            SELECT 1 FROM {SERVICE_METRICS.name} m
            WHERE m.service = i.service AND m.window_start < i.last_anomaly_at AND m.window_end > i.opened_at)
          AND NOT EXISTS (
            SELECT 1 FROM {ANOMALIES.name} a WHERE a.incident_id = i.incident_id AND a.request_count = 0)""",
                            {"cutoff": scope.cutoff})
    checked = _count(con, INCIDENTS, retained, {"cutoff": scope.cutoff})
    examples = [f"{incident} ({_t(opened)} to {_t(last)})" for incident, opened, last in first]
    return _result("incidents_without_windows", checked, total, examples, "retained incidents",
                   "Their service has no window in their time span, so they cannot be explained (the narrator "
                   "reads its facts from those windows): the windows were deleted or never stored here. Restore "
                   "the windows and run `obslab detect --once`, or delete these incidents.")


def _summaries_without_incidents(con, scope: _Scope) -> QualityCheck:
    total, first = _listing(con, f"""
        SELECT incident_id, created_at FROM {INCIDENT_SUMMARIES.name} s
        WHERE NOT EXISTS (SELECT 1 FROM {INCIDENTS.name} i WHERE i.incident_id = s.incident_id)""", {})
    examples = [f"{incident} (narrated {_t(at)})" for incident, at in first]
    return _result("summaries_without_incidents", _count(con, INCIDENT_SUMMARIES), total, examples,
                   "incident summaries",
                   "Their incident was deleted without them (retention deletes both together): delete these "
                   "summaries, or run `obslab detect --once` if the incident should still exist.")


def _anomalies_without_incidents(con, scope: _Scope) -> QualityCheck:
    # An anomaly without an incident id is not grouped yet; one with an id must find its incident.
    total, first = _listing(con, f"""
        SELECT incident_id, anomaly_id FROM {ANOMALIES.name} a
        WHERE incident_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM {INCIDENTS.name} i WHERE i.incident_id = a.incident_id)""", {})
    examples = [f"{anomaly} -> {incident}" for incident, anomaly in first]
    return _result("anomalies_without_incidents", _count(con, ANOMALIES), total, examples, "anomalies",
                   "Run `obslab detect --once`: it rebuilds the incidents of the anomalies in its lookback period "
                   "(DETECT_LOOKBACK_MINUTES); delete the older ones.")


RULES: dict[str, Callable[..., QualityCheck]] = {
    "nulls": _nulls,
    "ranges": _ranges,
    "duplicate_windows": _duplicate_windows,
    "window_gaps": _window_gaps,
    "error_rate_consistency": _error_rate_consistency,
    "incidents_without_windows": _incidents_without_windows,
    "summaries_without_incidents": _summaries_without_incidents,
    "anomalies_without_incidents": _anomalies_without_incidents,
}


# ------------------------------------------------------------------------- retention

def retention_plan(window_seconds: int) -> list[tuple[Table, str]]:
    """(table, WHERE clause over $cutoff) in deletion order: the rows retention removes."""
    # status_counts and latency_histograms rows belong to the window starting at window_start; the
    # window ends WINDOW_SECONDS later and is judged by that end, like the metric rows it explains.
    window_end = f"window_start + INTERVAL {int(window_seconds)} SECOND"
    old_incident = "status = 'resolved' AND last_anomaly_at < $cutoff"  # an open incident is never deleted
    return [
        (SERVICE_METRICS, "window_end < $cutoff"),
        (ENDPOINT_METRICS, "window_end < $cutoff"),
        (STATUS_COUNTS, f"{window_end} < $cutoff"),
        (LATENCY_HISTOGRAMS, f"{window_end} < $cutoff"),
        (ANOMALIES, "window_end < $cutoff"),
        # Summaries go with their incident, so they are deleted first, while the incident is there to join.
        (INCIDENT_SUMMARIES, f"incident_id IN (SELECT incident_id FROM {INCIDENTS.name} WHERE {old_incident})"),
        (INCIDENTS, old_incident),
        (DEAD_LETTER_EVENTS, "received_at < $cutoff"),
        (PIPELINE_RUNS, "started_at < $cutoff"),
        (HEALTH_CHECKS, "checked_at < $cutoff"),
        (QUALITY_CHECKS, "checked_at < $cutoff"),
        # The exactly-once ledger is consulted only for the batch Spark replays after a crash, and
        # Spark replays only the newest batch of its checkpoint (it keeps the metadata of its last
        # ~100 batches, minutes at the lab's triggers, and never goes back further). So rows days old
        # are never read again; the newest row of each query is kept all the same, so a stream that
        # crashed mid-commit and stayed down longer than the retention still skips its replay.
        (STREAM_BATCHES, f"applied_at < $cutoff AND batch_id < (SELECT max(n.batch_id) FROM {STREAM_BATCHES.name} n "
                         f"WHERE n.query_id = {STREAM_BATCHES.name}.query_id)"),
        (INJECTED_INCIDENTS, "end_time < $cutoff"),  # a fault still running (end_time NULL) is kept
    ]


def apply_retention(store, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Delete rows older than RETENTION_DAYS (strictly before now - RETENTION_DAYS) in one transaction."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=settings.retention_days)
    deleted: dict[str, int] = {}
    with store.writer() as con:
        for table, where in retention_plan(settings.window_seconds):
            deleted[table.name] = con.execute(f"DELETE FROM {table.name} WHERE {where}",
                                              {"cutoff": cutoff}).fetchall()[0][0]
    return deleted


def compact(store) -> tuple[int, int]:
    """CHECKPOINT the store so DuckDB reclaims what deletes freed; returns the file's bytes before and after."""
    # DuckDB's docs: CHECKPOINT is what reclaims space after deletes (VACUUM does not). It merges row
    # groups with many deleted rows, frees their blocks for reuse by later writes and truncates free
    # blocks at the end of the file; the file only shrinks by that tail, but freed blocks are refilled
    # before it grows. Closing the file checkpoints too, so after `apply_retention` this often finds
    # little left to do. It runs through the store's writer (lock retry, no other process inside);
    # DuckDB refuses a checkpoint only while other transactions run. Never a copy-and-swap: a write
    # by another process between the copy and the swap would be lost.
    before = _file_bytes(store.path)
    store.execute("CHECKPOINT")
    return before, _file_bytes(store.path)


def _file_bytes(path: Path) -> int:
    """Size of the database file plus its write-ahead log (what the store occupies on disk)."""
    wal = path.with_name(path.name + ".wal")
    return sum(p.stat().st_size for p in (path, wal) if p.exists())

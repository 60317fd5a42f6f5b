"""The replay: each run generated in simulated time, aggregated by the stream's own transform in Spark,
and written into its store one trigger interval at a time with detection after each (timed)."""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from obslab.detect.walk import SeriesMemory
from obslab.evaluation.results import EVALUATION_START
from obslab.schema import ENDPOINT_PATTERN, EVENT, MAX_LATENCY_MS
from obslab.settings import Settings
from obslab.stream.buckets import percentiles_sql

_EVENT_FIELDS = EVENT.column_names  # event_id, event_time, service, endpoint, latency_ms, status_code


def write_arrow(path: Path, table) -> None:
    """Write an Arrow table to an IPC file (how a run's partials wait for its replay)."""
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_arrow(path: Path):
    """Read back what `write_arrow` wrote (memory-mapped)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def generate(job) -> dict:
    """Generate one run in simulated time into its events file, ground truth into its fresh store."""
    from obslab.generator.clock import SimulatedClock
    from obslab.generator.events import EventStream
    from obslab.generator.publish import publish_events
    from obslab.generator.sinks import FileSink
    from obslab.generator.truth import StoreGroundTruth
    from obslab.lab import Lab

    _, run, s, events_file = job
    workdir = s.data_dir
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    store = Lab(s).store  # this run's scratch store
    plan = run.scenario
    stream = EventStream(plan, run.seed, EVALUATION_START, run.events_per_second)
    duration = run.minutes * 60 if run.minutes is not None else plan.duration_seconds
    sink = FileSink(events_file)
    try:
        with store.held():
            report = publish_events(stream, SimulatedClock(EVALUATION_START), sink,
                                    StoreGroundTruth(store, stream.run_id, plan.name), duration_s=duration)
    finally:
        sink.close()
    return {"scenario": plan.name, "seed": run.seed, "rate": stream.rate, "duration": duration,
            "events": report.events_sent}


def aggregate(spark, events_root: Path, s: Settings, runs: list[int]):
    """[(partials with an `interval` column, dead letters)] for each of `runs`, from ONE Spark job."""
    # The files sit in `events_root/run=<n>/`, so Spark reads the run number as a column; it rides
    # through the transform in the Kafka partition column (static input has no partitions). The
    # outcome is written as Parquet, one folder per run, rather than collected: a run at 1,000
    # events/s for hours has millions of partial rows, more than the driver should hold at once.
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from obslab.stream.session import build_session
    from obslab.stream.transform import batch_outcome, parse_events, split_outcome, with_window

    # Not stopped afterwards: getOrCreate may have handed out a session someone else is using.
    spark = spark or build_session(s, app_name="obslab-evaluate")
    paths = [str(events_root / f"run={n}") for n in runs]
    raw = spark.read.option("basePath", str(events_root)).text(paths).select(
        F.lit(s.topic_raw_events).alias("topic"), F.col("run").cast("int").alias("partition"),
        F.monotonically_increasing_id().alias("offset"), F.col("value"))
    framed = with_window(parse_events(raw, s.endpoint_max_length), s.window_seconds)
    trigger_micros = int(round(s.trigger_seconds * 1_000_000))
    framed = framed.withColumn("interval", F.floor(F.unix_micros("event_time") / F.lit(trigger_micros)))
    keys = ("kafka_partition", "interval")
    outcome = batch_outcome(framed, extra_keys=keys).withColumn(
        "run", F.coalesce(F.col("kafka_partition"), F.col("dead_kafka_partition")))
    written = events_root.with_name(events_root.name + "-outcome")
    # Timestamps as Parquet's UTC microseconds (Spark's default, INT96, reads back without a zone).
    setting = "spark.sql.parquet.outputTimestampType"
    before = spark.conf.get(setting)
    spark.conf.set(setting, "TIMESTAMP_MICROS")
    try:
        outcome.write.mode("overwrite").partitionBy("run").parquet(str(written))
    finally:
        spark.conf.set(setting, before)
    out = []
    for n in runs:
        table = pq.read_table(written, filters=[("run", "=", n)]).drop_columns(["run"])
        partials, dead = split_outcome(table, keys)
        out.append((partials.drop_columns(["kafka_partition"]).sort_by("interval"), dead))
    shutil.rmtree(written)
    return out


AGGREGATORS = ("spark", "duckdb")  # who runs the transform on a replay's events (see `aggregate_duckdb`)


def aggregate_with(engine: str, spark, events_root: Path, s: Settings, runs: list[int]):
    """`aggregate` in Spark or `aggregate_duckdb` without it, as `engine` says (one of AGGREGATORS)."""
    if engine == "spark":
        return aggregate(spark, events_root, s, runs)
    if engine == "duckdb":
        return aggregate_duckdb(events_root, s, runs)
    raise ValueError(f"aggregator must be one of {', '.join(AGGREGATORS)}, not {engine!r}")


def aggregate_duckdb(events_root: Path, s: Settings, runs: list[int]):
    """As `aggregate`, in DuckDB: no Spark or JVM (the light set-up). The same reasons, windows,
    log buckets and trigger intervals as the stream's transform; a dead letter's `kafka_offset` is
    its line number in the run's files (Spark's is an id of its own)."""
    import duckdb

    from obslab.stream.buckets import bucket_sql

    con = duckdb.connect()
    out = []
    try:
        con.execute("SET TimeZone = 'UTC'")
        for n in runs:
            files = sorted(str(f) for f in (events_root / f"run={n}").glob("*") if f.is_file() and f.stat().st_size)
            if not files:  # nothing generated (a run of zero seconds): read_text wants at least one file
                files = [str(_empty_file(events_root / f"run={n}"))]
            con.execute("""
                CREATE OR REPLACE TEMP TABLE raw AS
                SELECT (row_number() OVER () - 1)::BIGINT AS kafka_offset, value AS raw_payload
                FROM (SELECT unnest(string_split(rtrim(content, chr(10)), chr(10))) AS value
                      FROM read_text(?::VARCHAR[]) WHERE content <> '')""", [files])
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE fields AS
                SELECT kafka_offset, raw_payload, j,
                       {", ".join(f"j->>'{f}' AS {f}_text" for f in _EVENT_FIELDS)},
                       try_cast(j->>'event_time' AS TIMESTAMPTZ) AS event_time,
                       try_cast(j->>'latency_ms' AS DOUBLE) AS latency_ms,
                       try_cast(j->>'status_code' AS INTEGER) AS status_code
                FROM (SELECT *, CASE WHEN json_valid(raw_payload) AND json_type(raw_payload::JSON) = 'OBJECT'
                                     THEN raw_payload::JSON END AS j FROM raw)""")
            con.execute(f"CREATE OR REPLACE TEMP TABLE parsed AS SELECT *, {_reason_sql()} AS reason FROM fields",
                        [s.endpoint_max_length, ENDPOINT_PATTERN])
            partials = con.sql(f"""
                SELECT service_text AS service, endpoint_text AS endpoint, to_timestamp(start_s) AS window_start,
                       to_timestamp(start_s + ?) AS window_end, {bucket_sql("latency_ms")} AS bucket,
                       CASE WHEN status_code >= 400 THEN status_code END AS error_code,
                       floor(epoch_us(event_time) / ?)::BIGINT AS interval,
                       count(*)::BIGINT AS count, count(*) FILTER (WHERE status_code >= 400)::BIGINT AS errors,
                       sum(latency_ms) AS latency_sum, max(event_time) AS max_event_time
                FROM (SELECT *, floor(epoch_us(event_time) / (1000000 * ?)) * ? AS start_s
                      FROM parsed WHERE reason IS NULL)
                GROUP BY ALL ORDER BY interval, service, endpoint, window_start, bucket, error_code""",
                               params=[s.window_seconds, int(round(s.trigger_seconds * 1_000_000)), s.window_seconds,
                                       s.window_seconds]).to_arrow_table()
            dead = con.sql("""
                SELECT ? AS topic, ?::INTEGER AS kafka_partition, kafka_offset, raw_payload, reason, 1::BIGINT AS count
                FROM parsed WHERE reason IS NOT NULL ORDER BY kafka_offset""", params=[s.topic_raw_events, n]
                           ).to_arrow_table()
            out.append((partials, dead))
    finally:
        con.close()
    return out


def _empty_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "empty.jsonl"
    path.touch()
    return path


def _reason_sql() -> str:
    """The transform's `reason` (obslab.stream.transform.parse_events) in DuckDB SQL, in the same order;
    two parameters: ENDPOINT_MAX_LENGTH, ENDPOINT_PATTERN."""
    def missing(f: str) -> str:
        return f"{f}_text IS NULL OR trim({f}_text) = ''"

    rules = [("raw_payload IS NULL OR trim(raw_payload) = ''", "empty_payload"),
             ("j IS NULL OR (" + " AND ".join(f"{f}_text IS NULL" for f in _EVENT_FIELDS) + ")", "malformed_json"),
             *((missing(f), f"missing_field:{f}") for f in _EVENT_FIELDS),
             *((f"{f} IS NULL", f"wrong_type:{f}") for f in ("event_time", "latency_ms", "status_code")),
             ("isnan(latency_ms) OR isinf(latency_ms) OR latency_ms < 0 OR latency_ms > " + repr(MAX_LATENCY_MS),
              "out_of_range:latency_ms"),
             ("status_code < 100 OR status_code > 599", "out_of_range:status_code"),
             ("length(endpoint_text) > ? OR NOT regexp_full_match(endpoint_text, ?)", "invalid:endpoint")]
    return "CASE " + " ".join(f"WHEN {test} THEN '{reason}'" for test, reason in rules) + " END"


def replay(store, s: Settings, partials, dead, mode: str = "versions") -> dict[datetime, float]:
    """Replay one run into its store, detecting after every interval: {recorded detection time: wall seconds}."""
    with store.writer() as con:
        # One thread per store: the statements are small, and the bench runs a replay per core.
        con.execute("SET threads TO 1")
    if mode == "sink":
        return _replay_through_sink(store, s, partials, dead)
    return _replay_versions(store, s, partials, dead)


def _delay(s: Settings) -> timedelta:
    # The batch starts at the trigger after the events and may take one more to commit; the
    # detector's poll may start its run up to one poll later.
    return timedelta(seconds=s.trigger_seconds + s.detect_poll_seconds)


def _interval_end(interval: int, trigger_seconds: float) -> datetime:
    return datetime.fromtimestamp((interval + 1) * trigger_seconds, tz=timezone.utc)


def _interval_of(t: datetime, trigger_seconds: float) -> int:
    return int(t.timestamp() // trigger_seconds)


def _timed_detection(store, s: Settings, now: datetime, run_seconds: dict, memory) -> None:
    from obslab.detect.run import run_detection

    t0 = time.perf_counter()
    run_detection(store, s, now=now, memory=memory)
    run_seconds[now] = time.perf_counter() - t0


def _replay_through_sink(store, s: Settings, partials, dead) -> dict[datetime, float]:
    """Merge the partials one trigger interval at a time through the stream's sink, detecting after each."""
    import numpy as np

    from obslab.stream.sink import StreamSink

    sink = StreamSink(store, s, "evaluation")
    run_seconds: dict[datetime, float] = {}
    memory = SeriesMemory()  # one detection loop: what each run's detectors learned, for the next
    intervals = partials["interval"].to_numpy()
    bounds = np.flatnonzero(np.diff(intervals)) + 1
    starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(intervals)]])
    columns = [c for c in partials.column_names if c != "interval"]
    batch_id = 0
    for lo, hi in zip(starts, ends):
        batch = partials.slice(lo, hi - lo)
        sink.merge(batch_id, batch.select(columns), dead if batch_id == 0 else dead.slice(0, 0))
        at = _interval_end(int(intervals[lo]), s.trigger_seconds) + _delay(s)
        _timed_detection(store, s, at, run_seconds, memory)
        batch_id += 1
    # The end of the input: every window is final (the live stream's watermark would get there).
    # It is dated like a micro-batch one interval after the last one.
    sink.merge(batch_id, partials.slice(0, 0).select(columns), dead.slice(0, 0), finalize_all=True)
    last = int(intervals[-1]) + 1 if len(intervals) else _interval_of(EVALUATION_START, s.trigger_seconds)
    _timed_detection(store, s, _interval_end(last, s.trigger_seconds) + _delay(s), run_seconds, memory)
    return run_seconds


def _replay_versions(store, s: Settings, partials, dead) -> dict[datetime, float]:
    """Write each interval's window rows (see `window_versions`) and detect after each; as `_replay_through_sink`."""
    endpoint_rows, service_rows, steps, end = window_versions(partials, s)
    if dead.num_rows:
        now = datetime.now(timezone.utc)
        store.upsert("dead_letter_events", dead.append_column(
            "received_at", _constant_timestamps(now, dead.num_rows)))
    run_seconds: dict[datetime, float] = {}
    memory = SeriesMemory()  # one detection loop: what each run's detectors learned, for the next
    if not steps:  # no event at all: one detection run, as at the end of an empty input
        _timed_detection(store, s, _interval_end(_interval_of(EVALUATION_START, s.trigger_seconds), s.trigger_seconds)
                         + _delay(s), run_seconds, memory)
        return run_seconds
    # Every version is loaded once into the store's connection; each step then copies its rows
    # over with one statement per table (registering a small Arrow table per step costs more).
    copies = []
    with store.writer() as con:
        for table, rows in (("endpoint_metrics", endpoint_rows), ("service_metrics", service_rows)):
            con.register("versions_in", rows)
            con.execute(f"CREATE OR REPLACE TEMP TABLE {table}_versions AS SELECT * FROM versions_in ORDER BY step")
            con.unregister("versions_in")
            columns = ", ".join(c for c in rows.column_names if c != "step")
            copies.append(f"INSERT OR REPLACE INTO {table} ({columns}) SELECT {columns} FROM {table}_versions "
                          "WHERE step = ?")
    try:
        # END (one past the last interval) is the end of the input, dated like a micro-batch one interval later.
        for step in [*steps, end]:
            with store.writer() as con:
                for sql in copies:
                    con.execute(sql, [step])
            _timed_detection(store, s, _interval_end(int(step), s.trigger_seconds) + _delay(s), run_seconds, memory)
    finally:
        with store.writer() as con:
            con.execute("DROP TABLE IF EXISTS endpoint_metrics_versions")
            con.execute("DROP TABLE IF EXISTS service_metrics_versions")
    _write_window_details(store, s, partials)
    return run_seconds


def _write_window_details(store, s: Settings, partials) -> None:
    """The error mix of every window (status_counts), as the sink leaves it at the end of the input."""
    # Detection does not read it, so it is written once, after the replay; the narrator's facts do.
    # (The sink drops a window's latency histogram once the window is final, and at the end of the
    # input every window is.)
    from obslab.stream.merge import add_status_counts

    folded = _fold_endpoints(partials, s.endpoint_max_per_service)
    with store.writer() as con:
        con.register("folded_partials", folded)
        try:
            add_status_counts(con, "folded_partials")
        finally:
            con.unregister("folded_partials")


def _constant_timestamps(at: datetime, n: int):
    import pyarrow as pa

    return pa.array([at] * n, pa.timestamp("us", tz="UTC"))


def window_versions(partials, s: Settings):
    """(endpoint rows, service rows, intervals, END): the windows the stream's sink leaves after each micro-batch."""
    # `partials` are the transform's partials with an `interval` column (one micro-batch per
    # interval, in order). Each table is sorted by a `step` column: the interval after whose merge
    # the row has these values, or END (after the last interval) for the end-of-input merge that
    # makes every window final. Only rows that change are listed: a window's values at each
    # interval that brings it events, and once more when the watermark makes it final.
    import duckdb
    import numpy as np
    import pyarrow as pa

    if partials.num_rows == 0:
        empty = pa.table({"step": pa.array([], pa.int64())})
        return empty, empty, [], 0
    folded = _fold_endpoints(partials, s.endpoint_max_per_service).rename_columns(
        ["step" if c == "interval" else c for c in partials.column_names])
    steps = np.unique(folded["step"].to_numpy()).tolist()
    end = steps[-1] + 1
    now = datetime.now(timezone.utc)
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 1")
        con.execute("SET TimeZone = 'UTC'")
        con.register("folded", folded)
        con.execute("CREATE TEMP TABLE p AS SELECT * FROM folded")
        # step -> watermark after that micro-batch: the newest event so far - WATERMARK_SECONDS
        con.execute("""
            CREATE TEMP TABLE marks AS
            SELECT step, max(batch_max) OVER (ORDER BY step ROWS UNBOUNDED PRECEDING) - to_seconds(?) AS watermark
            FROM (SELECT step, max(max_event_time) AS batch_max FROM p GROUP BY step)""", [s.watermark_seconds])
        tables = []
        for keys in (("service", "endpoint", "window_start"), ("service", "window_start")):
            tables.append(_versions_of(con, keys, end, now))
    finally:
        con.close()
    return tables[0], tables[1], steps, end


def _versions_of(con, keys: tuple[str, ...], end: int, now: datetime):
    """One table's versions (see `window_versions`), keyed by `keys` (endpoint or service windows)."""
    k = ", ".join(keys)
    on = " AND ".join(f"a.{c} = b.{c}" for c in keys)
    # (window, step) -> what that micro-batch adds; the running totals after it
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE running AS
        SELECT {k}, window_end, step,
               (sum(n) OVER w)::BIGINT AS request_count, (sum(e) OVER w)::BIGINT AS error_count,
               sum(lat) OVER w AS latency_sum_ms
        FROM (SELECT {k}, any_value(window_end) AS window_end, step, sum(count) AS n, sum(errors) AS e,
                     sum(latency_sum) AS lat
              FROM p GROUP BY {k}, step)
        WINDOW w AS (PARTITION BY {k} ORDER BY step ROWS UNBOUNDED PRECEDING)""")
    # The histogram of each window as it stands after each step that touched it (the sink keeps
    # adding bucket counts), then the sink's own percentile SQL over it.
    con.execute(f"CREATE OR REPLACE TEMP TABLE buckets AS "
                f"SELECT {k}, step, bucket, sum(count) AS c FROM p GROUP BY ALL")
    con.execute(f"CREATE OR REPLACE TEMP TABLE touched AS SELECT DISTINCT {k}, step FROM running")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE latency_histograms AS
        SELECT {", ".join("a." + c for c in keys)}, a.step, b.bucket, sum(b.c)::BIGINT AS count
        FROM touched a JOIN buckets b ON {on} AND b.step <= a.step
        GROUP BY ALL""")
    con.execute(f"CREATE OR REPLACE TEMP TABLE pct AS {percentiles_sql((*keys, 'step'), 'touched')}")
    # The first step whose watermark passes the window's end (NULL: only the end of input does).
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE finals AS
        SELECT {k}, (SELECT min(m.step) FROM marks m WHERE m.watermark >= w.window_end) AS final_at
        FROM (SELECT DISTINCT {k}, window_end FROM running) w""")
    endpoint_col = "r.endpoint, " if "endpoint" in keys else ""
    sum_col = ", r.latency_sum_ms" if "endpoint" in keys else ""
    values = (f"r.service, {endpoint_col}r.window_start, r.window_end, r.request_count, r.error_count, "
              "r.error_count / r.request_count AS error_rate, r.latency_sum_ms / r.request_count AS avg_latency_ms, "
              "q.p50 AS p50_latency_ms, q.p95 AS p95_latency_ms, q.p99 AS p99_latency_ms")
    joined = (f"running r JOIN pct q USING ({k}, step) JOIN finals f USING ({k})")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE versions AS
        SELECT * FROM (
            -- each step that brings events, while the window is open (or after it, for a late event)
            SELECT {values}, f.final_at IS NOT NULL AND r.step > f.final_at AS is_final, ? AS updated_at{sum_col},
                   r.step AS step
            FROM {joined}
            WHERE f.final_at IS NULL OR r.step <> f.final_at
            UNION ALL
            -- the step that makes it final: its values as of then (the last step that touched it)
            SELECT {values}, true, ?{sum_col}, coalesce(f.final_at, {end})
            FROM {joined}
            WHERE r.step <= coalesce(f.final_at, {end})
            QUALIFY row_number() OVER (PARTITION BY {", ".join("r." + c for c in keys)} ORDER BY r.step DESC) = 1
        )""", [now, now])
    return con.sql(f"SELECT * FROM versions ORDER BY step, {k}").to_arrow_table()


def _fold_endpoints(partials, cap: int):
    """Endpoint names beyond the per-service cap renamed OTHER_ENDPOINT, admitted as the sink admits them."""
    # per micro-batch, new names busiest first (ties by name), while the service has room
    import pyarrow as pa
    import pyarrow.compute as pc

    from obslab.stream.merge import OTHER_ENDPOINT

    names = partials.group_by(["interval", "service", "endpoint"]).aggregate([("count", "sum")]).sort_by(
        [("interval", "ascending"), ("service", "ascending"), ("count_sum", "descending"), ("endpoint", "ascending")])
    kept: dict[str, set[str]] = {}
    for service, endpoint in zip(names["service"].to_pylist(), names["endpoint"].to_pylist()):
        mine = kept.setdefault(service, set())
        if endpoint not in mine and len(mine) < cap:
            mine.add(endpoint)
    if all(len(v) < cap for v in kept.values()):
        return partials  # no service reached the cap: every name is its own
    admitted = [e in kept.get(s, ()) for s, e in zip(partials["service"].to_pylist(), partials["endpoint"].to_pylist())]
    endpoint = pc.if_else(pa.array(admitted), partials["endpoint"], pa.scalar(OTHER_ENDPOINT))
    return partials.set_column(partials.column_names.index("endpoint"), "endpoint", endpoint)

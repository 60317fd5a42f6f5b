"""Stream benchmarks (issue 4): throughput, freshness and memory of the Spark stream.

Starts its own real Kafka broker (same code as `obslab broker start`, in a temporary data dir on free
ports) and measures, in this order:

  freshness   `obslab stream` (subprocess, trigger 5 s) while `obslab generate --rate 1000` publishes the
              `clean` scenario live for 150 s. Every 0.5 s the store is read (read-only, as the dashboard
              does) and lag = poll time - stream_state.max_event_time, the latest event time merged into
              the store. p50/p95 over the polls from 30 s after the generator started to its end.
  memory      the same with the demo defaults (`demo` scenario at its 10 events/s; window 60, watermark
              120, trigger 5, local[2], driver memory 1g) for 120 s. Peak RSS = the largest sum of VmRSS
              over the stream's process tree (Python driver + Spark JVM), sampled every second. The
              freshness run reports its peak too.
  throughput  N events (default 2,000,000) of the `mixed` scenario at 1,000 events/s of event time
              (~34 min) preloaded into a topic at max rate; then, after one warm-up round (reported apart: the
              first query of a fresh JVM is about twice as slow), R times each, interleaved round by round:
                stream     `run_stream_job(available_now=True)` in-process, on one Spark
                           session built once (its start time is reported, not counted), with a fresh
                           checkpoint and a fresh DuckDB file per run. events/s = N / wall seconds of the
                           call. Every run must put exactly N events into service_metrics.
                reference  the same events written by the generator to JSONL (same seed, scenario and start
                           time give the same events), aggregated by ONE DuckDB query over read_json_auto:
                           per service and 60-s window count, errors, avg and quantile_cont p50/p95/p99.
              Then, once, where the stream's time goes: the same Kafka read, parse and aggregation as static
              Spark jobs, step by step; and the same batch shipped to Python as Arrow and parsed, validated and
              aggregated by DuckDB instead (`--no-breakdown` skips this).
              With --spark-server the stream is a client of that Spark Connect server (started beforehand).

CPU seconds of this process, the Spark JVM or stream subprocess, the generator, the broker and everything
else on the machine are recorded per run, so a run that shared the cores with another workload shows it.
Results go to BENCHMARKS.md.

    .venv/bin/python bench/bench_stream.py [--events N] [--runs R] [--warmup W]
                                           [--only throughput|freshness|memory] [--json]
                                           [--spark-server sc://127.0.0.1:PORT]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from common import (bench_broker, busy_cpu_seconds, cmdline, isolated_settings, machine,  # bench/ is on sys.path
                    processes, rss_mib, tree)

from obslab.broker import LocalBroker, end_offsets
from obslab.generator.run import RunPlan, generate
from obslab.lab import Lab
from obslab.settings import Settings
from obslab.store import Store

PHASES = ("freshness", "memory", "throughput")
ROOT = Path(__file__).resolve().parents[1]
SEED = 42
START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)  # event time of the first preloaded event
THROUGHPUT_SCENARIO, THROUGHPUT_RATE = "mixed", 1000.0
TARGET_EVENTS_PER_S = 300_000  # issue 25 (issue 4 asked for 100,000)
TARGET_RSS_MIB = 1536  # 1.5 GB, read as 1.5 GiB
LIVE = {
    # name: scenario, events/s (None = the scenario's), generator seconds, stream seconds
    "freshness": ("clean", 1000.0, 150, 170),
    "memory": ("demo", None, 100, 120),
}
WARMUP_S = 30  # lag samples from the generator's first 30 s are skipped
POLL_S = 0.5


class BenchError(RuntimeError):
    """A benchmark run did not do what it was asked to; the figures would be meaningless."""


def bench_settings(data_dir: Path) -> Settings:
    """Settings of an isolated lab; every value that changes the measurement is pinned, not read from .env."""
    return isolated_settings(
        data_dir, duckdb_path=data_dir / "observability.duckdb", kafka_partitions=3, kafka_heap="512m",
        kafka_client="confluent-kafka", scenario=THROUGHPUT_SCENARIO, seed=SEED,
        events_per_second=THROUGHPUT_RATE, backfill_minutes=0.0, spark_master="local[2]",
        spark_driver_memory="1g", window_seconds=60, watermark_seconds=120, trigger_seconds=5.0,
        max_offsets_per_trigger=None, checkpoint_name="stream")


def settings_env(s: Settings) -> dict[str, str]:
    """The environment that makes an `obslab` subprocess see exactly these settings (none inherited)."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    for name, value in s.model_dump(mode="json").items():
        if value is not None:  # complex settings (dicts, lists) are read from the environment as JSON
            env[name.upper()] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return env


# ---------------------------------------------------------------------------- processes


class Sampler(threading.Thread):
    """Every `interval` s: CPU seconds of every process in named groups, and RSS summed over one group.

    A group is a function of the process table returning pids (e.g. a process tree). A process counts
    with the CPU it used since the sampler started (all of it if it started later); a process that
    exits counts with its last sample, so up to `interval` seconds of its CPU may be missed.
    """

    def __init__(self, groups: dict, rss_group: str | None = None, interval: float = 1.0):
        super().__init__(daemon=True)
        self.groups, self.rss_group, self.interval = dict(groups), rss_group, interval
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.base = {pid: cpu for pid, (_, cpu, _) in processes().items()}
        self.busy0 = busy_cpu_seconds()
        self.last: dict[int, float] = {}  # pid -> latest CPU seconds
        self.member: dict[int, str] = {}  # pid -> group
        self.peak_rss = 0.0
        self.peak_detail: dict[str, float] = {}
        self.rss_samples = 0

    def add(self, name: str, group) -> None:
        with self._lock:
            self.groups[name] = group

    def sample(self) -> dict[int, tuple[int, float, str]]:
        procs = processes()
        with self._lock:
            for name, group in self.groups.items():
                for pid in group(procs):
                    if pid in procs:
                        self.member.setdefault(pid, name)
                        self.last[pid] = procs[pid][1]
            if self.rss_group is not None:
                pids = [p for p, g in self.member.items() if g == self.rss_group and p in procs]
                detail = {f"{procs[p][2]} ({p})": rss_mib(p) for p in pids}
                total = sum(detail.values())
                self.rss_samples += 1
                if total > self.peak_rss:
                    self.peak_rss, self.peak_detail = total, detail
        return procs

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def finish(self) -> dict:
        """CPU seconds per group, `other` (the rest of the machine) and the busiest other processes."""
        self._halt.set()
        if self.ident is not None:  # started as a thread (a one-off measure only samples at the end)
            self.join()
        procs = self.sample()
        busy = busy_cpu_seconds() - self.busy0
        cpu: dict[str, float] = {name: 0.0 for name in self.groups}
        for pid, name in self.member.items():
            cpu[name] += self.last[pid] - self.base.get(pid, 0.0)
        others = sorted(((procs[p][1] - self.base.get(p, 0.0), procs[p][2], p) for p in procs
                         if p not in self.member), reverse=True)[:3]
        out = {f"{name}_cpu_s": round(v, 2) for name, v in cpu.items()}
        out["other_cpu_s"] = round(busy - sum(cpu.values()), 2)
        out["busiest_others"] = [f"{cmdline(pid) or comm} ({pid}): {sec:.1f} s" for sec, comm, pid in others
                                 if sec >= 0.05]
        if self.rss_group is not None:
            out["peak_rss_mib"] = round(self.peak_rss, 1)
            out["peak_rss_detail_mib"] = {k: round(v, 1) for k, v in self.peak_detail.items()}
            out["rss_samples"] = self.rss_samples
        return out


def only(pid: int):
    return lambda procs: {pid}


def tree_of(pid: int | None):
    return lambda procs: tree(pid, procs)


def children_of(pid: int, but: int | None):
    """The descendants of `pid` (not pid itself) outside the tree of `but`: here, the Spark JVM."""
    return lambda procs: tree(pid, procs) - {pid} - tree(but, procs)


def median_of(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


# ---------------------------------------------------------------------------- live runs


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL, to the session of a subprocess this script started."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def live_run(base: Settings, name: str, broker: LocalBroker) -> dict:
    """`obslab stream` and `obslab generate` as subprocesses; lag polled from the store, RSS with psutil."""
    scenario, rate, gen_s, stream_s = LIVE[name]
    data = base.data_dir / name
    s = base.model_copy(update={"data_dir": data, "duckdb_path": data / "observability.duckdb",
                                "scenario": scenario, "events_per_second": rate,
                                "topic_raw_events": f"raw_{name}", "checkpoint_name": name})
    data.mkdir(parents=True)
    LocalBroker(s).ensure_topics()
    env = settings_env(s)
    logs = {k: (data / f"{k}.out").open("wb") for k in ("stream", "generate")}
    errs = {k: (data / f"{k}.err").open("wb") for k in ("stream", "generate")}
    stream = gen = None
    sampler = Sampler({"bench": only(os.getpid()), "broker": tree_of(broker.pid())}, rss_group="stream")
    try:
        t_launch = time.monotonic()
        stream = subprocess.Popen([sys.executable, "-m", "obslab.cli", "stream", "--run-for-seconds", str(stream_s),
                                   "--json"], env=env, cwd=ROOT, stdout=logs["stream"], stderr=errs["stream"],
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        sampler.add("stream", tree_of(stream.pid))
        sampler.start()
        # The query has started when Spark wrote the checkpoint's metadata; only then does the generator begin.
        ready = data / "checkpoints" / name / "spark" / "metadata"
        while not ready.exists():
            if stream.poll() is not None or time.monotonic() - t_launch > 180:
                raise BenchError(f"{name}: the stream did not start: {tail(data / 'stream.err')}")
            time.sleep(0.1)
        stream_ready_s = time.monotonic() - t_launch
        args = ["generate", "--duration", str(gen_s), "--json"] + (["--rate", f"{rate:g}"] if rate else [])
        gen_started = time.time()
        gen = subprocess.Popen([sys.executable, "-m", "obslab.cli", *args], env=env, cwd=ROOT,
                               stdout=logs["generate"], stderr=errs["generate"], stdin=subprocess.DEVNULL,
                               start_new_session=True)
        sampler.add("generator", tree_of(gen.pid))
        store = Store(s.duckdb_path, lock_timeout_s=10)
        polls: list[tuple[float, float, float]] = []  # (poll time, max_event_time, updated_at), epoch seconds
        failed_polls = 0
        tick = time.monotonic()
        while gen.poll() is None:
            tick += POLL_S
            time.sleep(max(0.0, tick - time.monotonic()))
            try:
                rows = store.query("SELECT epoch(max_event_time), epoch(updated_at) FROM stream_state")
            except Exception:  # noqa: BLE001 - no store or no first batch yet
                failed_polls += 1
                continue
            now = time.time()  # when the read returned: a conservative poll time
            if rows and rows[0][0] is not None:
                polls.append((now, rows[0][0], rows[0][1]))
        gen_ended = time.time()
        if gen.returncode != 0:
            raise BenchError(f"{name}: the generator failed: {tail(data / 'generate.err')}")
        stream.wait(timeout=stream_s + 120)
        if stream.returncode != 0:
            raise BenchError(f"{name}: the stream failed: {tail(data / 'stream.err')}")
    finally:
        stop_process(gen)
        stop_process(stream)
        for f in (*logs.values(), *errs.values()):
            f.close()
    usage = sampler.finish()
    generated = json.loads((data / "generate.out").read_text())["run"]
    report = json.loads((data / "stream.out").read_text())
    stored, batches = _store_totals(store)
    kept = [p for p in polls if gen_started + WARMUP_S <= p[0] <= gen_ended]
    lags = [p[0] - p[1] for p in kept]
    commits = sorted({(p[2], p[1]) for p in kept})  # distinct commits: (updated_at, max_event_time)
    return {
        "scenario": scenario, "events_per_second": rate or generated["events_sent"] / gen_s,
        "trigger_seconds": s.trigger_seconds, "generator_seconds": gen_s, "stream_seconds": stream_s,
        "stream_start_to_query_s": round(stream_ready_s, 1),
        "events_generated": generated["events_acked"], "events_in_store": stored,
        "stream_events": report["events"], "batches": report["batches"], "dead_letters": report["dead_letters"],
        "median_events_per_batch": median_of([b for b in batches]),
        "lag_samples": len(lags), "failed_polls": failed_polls,
        "lag_p50_s": round(percentile(lags, 50), 2), "lag_p95_s": round(percentile(lags, 95), 2),
        "lag_min_s": round(min(lags), 2) if lags else None, "lag_max_s": round(max(lags), 2) if lags else None,
        # How old the newest event of a batch was when the sink wrote it (updated_at is stamped as the
        # store transaction starts, tens of ms before its commit): the floor of the lag.
        "lag_at_write_median_s": round(median_of([u - m for u, m in commits]), 2),
        "meets_lag_target": percentile(lags, 95) <= s.trigger_seconds + 3,
        "meets_rss_target": usage["peak_rss_mib"] <= TARGET_RSS_MIB,
        **usage,
    }


def _store_totals(store: Store) -> tuple[int, list[int]]:
    total = store.query("SELECT coalesce(sum(request_count), 0) FROM service_metrics")[0][0]
    batches = [r[0] for r in store.query("SELECT events FROM stream_batches ORDER BY batch_id")]
    return int(total), batches


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


# ---------------------------------------------------------------------------- throughput


def preload(s: Settings, n: int, events_file: Path) -> dict:
    """N events into the topic (max rate) and the same N events into a JSONL file; fails unless both hold N."""
    topic = s.topic_raw_events
    before = sum(end_offsets(s, [topic]).get(topic, {}).values())
    t0 = time.perf_counter()
    with Lab(s) as lab:
        report, _ = generate(RunPlan(max_rate=True, count=n, start=START, store_truth=False), s, sink=lab.events)
    publish_s = time.perf_counter() - t0
    appended = sum(end_offsets(s, [topic]).get(topic, {}).values()) - before
    t0 = time.perf_counter()
    file_report, _ = generate(RunPlan(to_file=events_file, count=n, start=START, store_truth=False), s)
    file_s = time.perf_counter() - t0
    with events_file.open("rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    if not (report.events_acked == appended == file_report.events_sent == lines == n):
        raise BenchError(f"preload: {report.events_acked} acked, {appended} appended to {topic!r}, "
                         f"{lines} lines in {events_file}; expected {n} each")
    if report.event_time_end != file_report.event_time_end or report.run_id != file_report.run_id:
        raise BenchError("preload: the topic's and the file's events do not span the same event time")
    return {"events": n, "publish_s": round(publish_s, 1), "file_s": round(file_s, 1),
            "event_time_span_s": (report.event_time_end - START).total_seconds(),
            "file_mib": round(events_file.stat().st_size / 2**20, 1)}


def reference_sql(events_file: Path, window_seconds: int) -> str:
    path = str(events_file).replace("'", "''")
    w = int(window_seconds)
    return f"""
        SELECT service, floor(epoch(event_time) / {w}) * {w} AS window_start, count(*) AS request_count,
               count(*) FILTER (WHERE status_code >= 400) AS error_count, avg(latency_ms) AS avg_latency_ms,
               quantile_cont(latency_ms, 0.50) AS p50, quantile_cont(latency_ms, 0.95) AS p95,
               quantile_cont(latency_ms, 0.99) AS p99
        FROM read_json_auto('{path}')
        GROUP BY ALL ORDER BY window_start, service"""


def run_reference(events_file: Path, s: Settings, n: int, broker_pid: int | None) -> tuple[dict, list[tuple]]:
    """One DuckDB query over the JSONL file, on a fresh in-memory connection."""
    import duckdb

    sampler = Sampler({"bench": only(os.getpid()), "broker": tree_of(broker_pid)})
    con = duckdb.connect()
    try:
        t0 = time.perf_counter()
        rows = con.execute(reference_sql(events_file, s.window_seconds)).fetchall()
        seconds = time.perf_counter() - t0
    finally:
        con.close()
    counted = sum(r[2] for r in rows)
    if counted != n:
        raise BenchError(f"reference: DuckDB counted {counted} events, expected {n}")
    return {"seconds": round(seconds, 3), "events_per_s": round(n / seconds, 1), "windows": len(rows),
            **sampler.finish()}, rows


class ProgressLog:
    """Spark's progress report of each micro-batch, by query name (a StreamingQueryListener)."""

    def __init__(self, spark):
        from pyspark.sql.streaming import StreamingQueryListener

        log = self.progress = []

        class Listener(StreamingQueryListener):
            def onQueryStarted(self, event): pass
            def onQueryIdle(self, event): pass
            def onQueryTerminated(self, event): pass

            def onQueryProgress(self, event):
                p = event.progress
                log.append({"name": p.name, "batch": p.batchId, "rows": p.numInputRows,
                            "duration_ms": dict(p.durationMs)})

        spark.streams.addListener(Listener())

    def of(self, name: str, timeout: float = 10.0) -> list[dict]:
        # Listener events arrive asynchronously, possibly after the query has stopped.
        deadline = time.monotonic() + timeout
        while not [p for p in self.progress if p["name"] == name] and time.monotonic() < deadline:
            time.sleep(0.1)
        return [p for p in self.progress if p["name"] == name]


def run_stream_once(spark, s: Settings, n: int, run_no: int, progress: ProgressLog, broker_pid: int | None,
                    spark_group=None) -> dict:
    """run_stream_job(available_now) over the whole topic with a fresh checkpoint and store."""
    from obslab.stream.job import run_stream_job

    name = f"throughput-{run_no}"
    rs = s.model_copy(update={"checkpoint_name": name, "duckdb_path": s.data_dir / f"{name}.duckdb"})
    store = Lab(rs).store  # created and migrated, as a Lab gives it to the stream
    own = os.getpid()
    sampler = Sampler({"bench": only(own), "broker": tree_of(broker_pid),
                       "spark": spark_group or children_of(own, but=broker_pid)}, rss_group="spark")
    sampler.start()
    t0 = time.perf_counter()
    report = run_stream_job(rs, available_now=True, spark=spark, store=store)
    seconds = time.perf_counter() - t0
    usage = sampler.finish()
    stored, batches = _store_totals(store)
    if report.counters.events != n or stored != n or report.counters.dead_letters:
        raise BenchError(f"{name}: the stream counted {report.counters.events} events ({stored} in service_metrics, "
                         f"{report.counters.dead_letters} dead letters); expected exactly {n}")
    steps = progress.of(f"obslab_stream_{name}".replace("-", "_"))
    durations: dict[str, int] = {}
    for p in steps:
        for k, v in p["duration_ms"].items():
            durations[k] = durations.get(k, 0) + v
    return {"seconds": round(seconds, 2), "events_per_s": round(n / seconds, 1),
            "job_seconds": round(report.seconds, 2),
            "batches": report.counters.batches, "store_events": stored, "referred": report.counters.referred, "spark_duration_ms": durations,
            "spark_jvm_peak_rss_mib": usage.pop("peak_rss_mib"), **{k: v for k, v in usage.items()
                                                                 if k not in ("peak_rss_detail_mib", "rss_samples")}}


def compare(store_path: Path, rows: list[tuple]) -> dict:
    """The stream's service windows against the DuckDB reference: counts must be equal, percentiles close."""
    store = Store(store_path)
    got = {(r[0], r[1]): r[2:] for r in store.query(
        "SELECT service, epoch(window_start), request_count, error_count, avg_latency_ms, p50_latency_ms, "
        "p95_latency_ms, p99_latency_ms FROM service_metrics")}
    want = {(r[0], float(r[1])): r[2:] for r in rows}
    if set(got) != set(want):
        raise BenchError(f"the stream has {len(got)} service windows, the reference {len(want)}; they differ")
    worst = {"avg": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0}
    for key, w in want.items():
        g = got[key]
        if (g[0], g[1]) != (w[0], w[1]):
            raise BenchError(f"window {key}: stream counted {g[0]} events / {g[1]} errors, reference {w[0]} / {w[1]}")
        for i, k in enumerate(worst, start=2):
            worst[k] = max(worst[k], abs(g[i] - w[i]) / abs(w[i]))
    return {"windows": len(want), "counts_equal": True,
            "max_relative_difference": {k: float(f"{v:.2g}") for k, v in worst.items()}}


ARROW_SLICE = 250_000  # records per toArrow in the breakdown's DuckDB comparison


def breakdown(spark, s: Settings, n: int) -> dict:
    """Where the stream's time goes: the same Kafka read, parse and aggregation as static Spark jobs.

    Then the same batch another way, for comparison: the Kafka records shipped to Python as Arrow, parsed,
    validated (the same reasons, as the evaluation's DuckDB twin writes them) and aggregated to the same
    partials by one DuckDB query."""
    from pyspark.sql import functions as F

    from obslab.stream.job import CONSUMER_OPTIONS, aggregate_static
    from obslab.stream.transform import batch_outcome, kafka_text, parse_events, with_window

    reader = (spark.read.format("kafka").option("kafka.bootstrap.servers", s.kafka_bootstrap_servers)
              .option("subscribe", s.topic_raw_events).option("startingOffsets", "earliest")
              .option("endingOffsets", "latest").option("minPartitions", str(2 * _cores(s))))
    reader = reader.options(**CONSUMER_OPTIONS)  # the stream's own consumer options
    raw = reader.load()
    store = Store(s.data_dir / "static.duckdb")
    store.migrate()
    shipped: dict = {"tables": [], "counted": 0, "dead": 0}

    def to_arrow():
        # In offset ranges of at most ARROW_SLICE records: 2M records at once, or one partition's 670k, are
        # more than a 1g driver keeps for the client (TaskResultLost).
        topic = s.topic_raw_events
        for p, end in sorted(end_offsets(s, [topic])[topic].items()):
            for start in range(0, end, ARROW_SLICE):
                part = (spark.read.format("kafka").option("kafka.bootstrap.servers", s.kafka_bootstrap_servers)
                        .option("assign", json.dumps({topic: [p]}))
                        .option("startingOffsets", json.dumps({topic: {str(p): start}}))
                        .option("endingOffsets", json.dumps({topic: {str(p): min(end, start + ARROW_SLICE)}}))
                        .options(**CONSUMER_OPTIONS).load())
                shipped["tables"].append(kafka_text(part, "raw_payload").toArrow())

    def in_duckdb():
        for table in shipped["tables"]:
            partials, dead = duckdb_outcome(table, s)
            shipped["counted"] += sum(partials["count"])
            shipped["dead"] += dead

    steps = {
        "kafka_read": lambda: raw.select(F.sum(F.length("value"))).collect(),
        "kafka_read_parse": lambda: parse_events(raw, s.endpoint_max_length).groupBy("reason").count().collect(),
        "kafka_read_parse_aggregate": lambda: batch_outcome(with_window(parse_events(raw, s.endpoint_max_length), s.window_seconds)).toArrow(),
        "whole_batch_with_duckdb_merge": lambda: aggregate_static(spark, raw, s, store),
        "kafka_read_to_arrow": to_arrow,
        "duckdb_parse_validate_aggregate": in_duckdb,
    }
    out = {}
    for name, step in steps.items():
        t0 = time.perf_counter()
        try:
            step()
        except Exception as err:  # noqa: BLE001 - a failed comparison step must not lose the stream's figures
            out[f"{name}_error"] = str(err).strip().splitlines()[0][:300]
            break
        out[f"{name}_s"] = round(time.perf_counter() - t0, 2)
    if "duckdb_parse_validate_aggregate_s" in out and (shipped["counted"] != n or shipped["dead"]):
        raise BenchError(f"breakdown: DuckDB counted {shipped['counted']} events and {shipped['dead']} dead letters; "
                         f"expected {n} and none")
    return out


def _cores(s: Settings) -> int:
    """N of a local[N] master (2 otherwise), as the stream's minPartitions reads it."""
    import re

    found = re.fullmatch(r"local\[(\d+)\]", s.spark_master)
    return int(found.group(1)) if found else 2


def duckdb_outcome(table, s: Settings) -> tuple:
    """Kafka records as Arrow (topic, kafka_partition, kafka_offset, raw_payload) -> (partial rows'
    `count` column as a list, dead letters), parsed and validated with the evaluation's DuckDB twin of
    the transform's reasons, aggregated to the stream's partial keys."""
    import duckdb

    from obslab.evaluation.replay import _EVENT_FIELDS, _reason_sql
    from obslab.schema import ENDPOINT_PATTERN
    from obslab.stream.buckets import bucket_sql

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("records", table)
        con.execute(f"""
            CREATE TEMP TABLE fields AS
            SELECT topic, kafka_partition, kafka_offset, raw_payload, j,
                   {", ".join(f"j->>'{f}' AS {f}_text" for f in _EVENT_FIELDS)},
                   try_cast(j->>'event_time' AS TIMESTAMPTZ) AS event_time,
                   try_cast(j->>'latency_ms' AS DOUBLE) AS latency_ms,
                   try_cast(j->>'status_code' AS INTEGER) AS status_code
            FROM (SELECT *, CASE WHEN json_valid(raw_payload) AND json_type(raw_payload::JSON) = 'OBJECT'
                                 THEN raw_payload::JSON END AS j FROM records)""")
        con.execute(f"CREATE TEMP TABLE parsed AS SELECT *, {_reason_sql()} AS reason FROM fields",
                    [s.endpoint_max_length, ENDPOINT_PATTERN])
        w = int(s.window_seconds)
        counts = [r[0] for r in con.execute(f"""
            SELECT count(*) FROM (SELECT *, floor(epoch_us(event_time) / {1_000_000 * w}) * {w} AS start_s
                                  FROM parsed WHERE reason IS NULL)
            GROUP BY service_text, endpoint_text, start_s, {bucket_sql("latency_ms")},
                     CASE WHEN status_code >= 400 THEN status_code END""").fetchall()]
        dead = con.execute("SELECT count(*) FROM parsed WHERE reason IS NOT NULL").fetchall()[0][0]
    finally:
        con.close()
    return {"count": counts}, dead


def connect_server_pid(url: str) -> int | None:
    """The pid of the Spark Connect server on this machine that listens on the port of `url` (sc://host:port)."""
    import psutil

    port = int(url.rsplit(":", 1)[-1].split("/")[0].split(";")[0])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    return None


def throughput(s: Settings, n: int, runs: int, warmup: int, broker: LocalBroker, with_breakdown: bool,
               spark_server: str | None = None, transform_too: bool = False) -> dict:
    from obslab.stream.session import build_session

    events_file = s.data_dir / "events.jsonl"
    loaded = preload(s, n, events_file)
    print(f"preloaded {n:,} events ({loaded['publish_s']} s to Kafka, {loaded['file_s']} s to "
          f"{loaded['file_mib']} MiB of JSONL; {loaded['event_time_span_s'] / 60:.1f} min of event time)",
          file=sys.stderr)
    t0 = time.perf_counter()
    spark_group = None
    if spark_server:  # a Spark Connect server started beforehand: the stream is its client
        from pyspark.sql import SparkSession

        server_pid = connect_server_pid(spark_server)
        if server_pid is None:
            raise BenchError(f"no Spark Connect server process found for {spark_server} on this machine")
        spark = SparkSession.builder.remote(spark_server).getOrCreate()
        spark_group = tree_of(server_pid)
    else:
        spark = build_session(s, app_name="obslab-bench-stream")
    session_s = time.perf_counter() - t0
    progress = ProgressLog(spark)
    stream_runs, ref_runs, transform_runs, check = [], [], [], None
    try:
        # Interleaved, so drift (page cache, JIT, log segment rolls) spreads over both alike. The warm-up
        # rounds are reported but left out of the medians: the first query of a fresh JVM runs its code
        # interpreted and compiles it meanwhile (about twice as slow), as a one-shot `--available-now` would.
        for run_no in range(1, warmup + runs + 1):
            label = f"warm-up {run_no}/{warmup}" if run_no <= warmup else f"round {run_no - warmup}/{runs}"
            r = run_stream_once(spark, s, n, run_no, progress, broker.pid(), spark_group)
            r["warmup"] = run_no <= warmup
            stream_runs.append(r)
            print(f"{label} stream   : {r['events_per_s']:>12,.0f} events/s ({r['seconds']:.1f} s; "
                  f"CPU s: bench {r['bench_cpu_s']:.1f}, Spark JVM {r['spark_cpu_s']:.1f}, "
                  f"broker {r['broker_cpu_s']:.1f}, other {r['other_cpu_s']:.1f})", file=sys.stderr)
            if transform_too:  # the same stream with every record through Spark's parse (STREAM_FAST_PATH=false)
                t = run_stream_once(spark, s.model_copy(update={"stream_fast_path": False}), n, f"transform-{run_no}",
                                    progress, broker.pid(), spark_group)
                t["warmup"] = run_no <= warmup
                transform_runs.append(t)
                print(f"{label} transform: {t['events_per_s']:>12,.0f} events/s ({t['seconds']:.1f} s; "
                      f"CPU s: Spark JVM {t['spark_cpu_s']:.1f}, broker {t['broker_cpu_s']:.1f})", file=sys.stderr)
            ref, rows = run_reference(events_file, s, n, broker.pid())
            ref["warmup"] = run_no <= warmup
            ref_runs.append(ref)
            print(f"{label} reference: {ref['events_per_s']:>12,.0f} events/s ({ref['seconds']:.2f} s; "
                  f"CPU s: bench {ref['bench_cpu_s']:.1f}, other {ref['other_cpu_s']:.1f})", file=sys.stderr)
            if check is None:
                check = compare(s.data_dir / f"throughput-{run_no}.duckdb", rows)
        parts = breakdown(spark, s, n) if with_breakdown else None
    finally:
        spark.stop()
    med_stream = median_of([r["events_per_s"] for r in stream_runs if not r["warmup"]])
    med_ref = median_of([r["events_per_s"] for r in ref_runs if not r["warmup"]])

    def stats(all_runs: list[dict]) -> dict:
        rs = [r for r in all_runs if not r["warmup"]]
        rates = [r["events_per_s"] for r in rs]
        keys = [k for k in rs[0] if k.endswith("_cpu_s")]
        return {"median_events_per_s": round(median_of(rates), 1), "min": min(rates), "max": max(rates),
                "warmup_events_per_s": [r["events_per_s"] for r in all_runs if r["warmup"]],
                "median_seconds": median_of([r["seconds"] for r in rs]),
                **{f"median_{k}": round(median_of([r[k] for r in rs]), 2) for k in keys}, "runs": all_runs}

    return {"preload": loaded, "scenario": THROUGHPUT_SCENARIO, "event_rate": THROUGHPUT_RATE,
            "spark": spark_server or f"in-process {s.spark_master}",
            "spark_session_start_s": round(session_s, 1), "stream": stats(stream_runs), "reference": stats(ref_runs),
            "ratio_stream_to_reference": round(med_stream / med_ref, 3),
            "meets_target": med_stream >= TARGET_EVENTS_PER_S,
            "check_against_reference": check, "breakdown": parts,
            **({"transform": stats(transform_runs), "ratio_stream_to_transform":
                round(med_stream / median_of([r["events_per_s"] for r in transform_runs if not r["warmup"]]), 3)}
               if transform_runs else {})}


# ---------------------------------------------------------------------------- report


def versions() -> dict:
    import duckdb
    import pyspark

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "lib/obslab/stream", "lib/obslab/store.py",
                            "lib/obslab/generator"], cwd=ROOT, capture_output=True, text=True).stdout
    return {"pyspark": pyspark.__version__, "duckdb": duckdb.__version__, "git_head": head.strip(),
            "uncommitted_in_measured_code": [line[3:] for line in dirty.splitlines()]}


def text_report(out: dict) -> str:
    m = out["machine"]
    lines = [f"{out['date_utc']}  {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM"]
    if "throughput" in out:
        t = out["throughput"]
        lines += [f"throughput: {t['preload']['events']:,} events, Spark ({t['spark']}) session start "
                  f"{t['spark_session_start_s']} s",
                  "| variant | median events/s | min | max | median s | ratio to DuckDB | warm-up events/s |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for name, key in (("stream (available_now)", "stream"), ("stream, every record through Spark's parse",
                                                                 "transform"), ("reference: DuckDB over JSONL", "reference")):
            if key not in t:
                continue
            v = t[key]
            ratio = v["median_events_per_s"] / t["reference"]["median_events_per_s"]
            lines.append(f"| {name} | {v['median_events_per_s']:,.0f} | {v['min']:,.0f} | {v['max']:,.0f} | "
                         f"{v['median_seconds']:.2f} | {ratio:.3f} | "
                         f"{', '.join(f'{x:,.0f}' for x in v['warmup_events_per_s'])} |")
        lines.append(f"meets >= {TARGET_EVENTS_PER_S:,} events/s: {t['meets_target']}; breakdown: {t['breakdown']}")
    for name in ("freshness", "memory"):
        if name in out:
            r = out[name]
            lines.append(f"{name}: {r['events_per_second']:g} events/s ({r['scenario']}), lag p50 {r['lag_p50_s']} s, "
                         f"p95 {r['lag_p95_s']} s over {r['lag_samples']} polls; peak RSS {r['peak_rss_mib']} MiB; "
                         f"{r['events_in_store']:,} of {r['events_generated']:,} events in the store")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000,
                        help="events preloaded for throughput (default 2000000)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of the stream and of DuckDB (default 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="stream and DuckDB runs before the timed ones, reported apart (default 1; 0 to skip)")
    parser.add_argument("--only", choices=PHASES, help="run one benchmark (default: all three)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the static jobs that show where time goes")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a summary")
    parser.add_argument("--transform-too", action="store_true",
                        help="throughput: each round also runs the stream without its fast path (STREAM_FAST_PATH=false)")
    parser.add_argument("--spark-server", metavar="sc://127.0.0.1:PORT",
                        help="throughput: run the stream as a client of this Spark Connect server (started beforehand, "
                             "with the Kafka connector jars) instead of a Spark inside this process")
    args = parser.parse_args(argv)
    if args.events < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--events and --runs must be positive")
    if args.spark_server and not args.spark_server.startswith("sc://"):
        parser.error(f"--spark-server must be a Spark Connect address sc://HOST:PORT, not {args.spark_server!r}")

    started = datetime.now(timezone.utc)
    out: dict = {"benchmark": "stream (issue 4)", "date_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ")}
    with bench_broker(bench_settings) as (settings, broker):
        for phase in PHASES:  # live runs first: the throughput run's Spark JVM lives until this process exits
            if args.only not in (None, phase):
                continue
            print(f"{phase} ...", file=sys.stderr)
            if phase == "throughput":
                out[phase] = throughput(settings, args.events, args.runs, args.warmup, broker,
                                        not args.no_breakdown, args.spark_server, args.transform_too)
            else:
                out[phase] = live_run(settings, phase, broker)
                r = out[phase]
                print(f"{phase}: lag p50 {r['lag_p50_s']} s, p95 {r['lag_p95_s']} s; peak RSS "
                      f"{r['peak_rss_mib']} MiB; CPU s: stream {r['stream_cpu_s']}, generator "
                      f"{r['generator_cpu_s']}, broker {r['broker_cpu_s']}, other {r['other_cpu_s']}",
                      file=sys.stderr)
    out["finished_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out["machine"] = {**machine(), **versions()}
    out["settings"] = {k: getattr(settings, k) for k in ("spark_master", "spark_driver_memory", "window_seconds",
                                                          "watermark_seconds", "trigger_seconds", "kafka_partitions",
                                                          "kafka_heap", "kafka_client", "seed")}
    print(json.dumps(out, indent=2, default=str) if args.json else text_report(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

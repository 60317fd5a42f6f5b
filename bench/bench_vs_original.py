"""The original design's Spark job against `obslab stream --available-now` (issue 25), side by side.

Starts its own real Kafka broker (same code as `obslab broker start`, in a temporary data dir on free
ports), preloads N events (default 1,000,000) of the `mixed` scenario at 1,000 events/s of event time
into its topic at max rate (confluent-kafka), starts the lab's Spark (a Spark Connect server on a free
port of 127.0.0.1, as `obslab spark start` does) once, then runs R rounds (default 3), each in this order:

  original        bench/original/streaming_job.py (the original's spark/streaming_job.py, adapted only
                  as its header lists) as a fresh process with its own JVM, a fresh checkpoint and a fresh
                  DuckDB file created by its own init_db.py
  obslab          `obslab stream --available-now` as a fresh process, a client of the Spark already up
                  (SPARK_SERVER=sc://127.0.0.1:PORT), a fresh checkpoint and store
  obslab-local    the same with SPARK_SERVER=local: a Spark of its own in the process (for context)

With --warmup W (default 1), W untimed obslab runs on the server come first, reported apart: a lab's
server has served runs before, and the first query of a fresh JVM runs its code interpreted meanwhile.

Time = wall time of the process, from its launch to its exit. Each run must put all N events into its
table (sum of request_count in service_metrics) or the benchmark fails. CPU seconds of each process tree,
of the Spark server, of the broker and of the rest of the machine are sampled every 0.25 s (up to 0.25 s
of an exiting process's CPU can be missed); the peak RSS is that of the fresh process's tree.
Target (issue 25): median obslab / median original <= 0.33. Results go to
bench/results/vs-original-<date>.json and BENCHMARKS.md.

    .venv/bin/python bench/bench_vs_original.py [--events N] [--runs R] [--warmup W] [--no-local] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench_stream import (START, BenchError, Sampler, median_of, settings_env, stop_process, tail,  # bench/ on sys.path
                          tree_of, versions)
from common import bench_broker, free_port, isolated_settings, machine, processes, rss_mib

from obslab.broker import end_offsets
from obslab.generator.run import RunPlan, generate
from obslab.lab import Lab
from obslab.settings import Settings
from obslab.store import Store
from obslab.stream.session import kafka_connector_jars

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = ROOT / "bench" / "original"
RESULTS = ROOT / "bench" / "results"
SCENARIO, EVENT_RATE, SEED = "mixed", 1000.0, 42
TARGET_RATIO = 0.33  # obslab / original, median wall seconds
RUN_TIMEOUT_S = 900
VARIANTS = ("original", "obslab", "obslab-local")


def bench_settings(data_dir: Path) -> Settings:
    """An isolated lab; every value that changes the measurement is pinned, not read from .env."""
    return isolated_settings(
        data_dir, duckdb_path=data_dir / "observability.duckdb", kafka_partitions=3, kafka_heap="512m",
        kafka_client="confluent-kafka", scenario=SCENARIO, seed=SEED, events_per_second=EVENT_RATE,
        backfill_minutes=0.0, spark_master="local[2]", spark_driver_memory="1g", spark_connect_port=free_port(),
        window_seconds=60, watermark_seconds=120, trigger_seconds=5.0, max_offsets_per_trigger=None,
        checkpoint_name="stream")


def preload(s: Settings, n: int) -> dict:
    """N events into the topic at max rate; fails unless the topic grew by exactly N."""
    topic = s.topic_raw_events
    before = sum(end_offsets(s, [topic]).get(topic, {}).values())
    t0 = time.perf_counter()
    with Lab(s) as lab:
        report, _ = generate(RunPlan(max_rate=True, count=n, start=START, store_truth=False), s, sink=lab.events)
    seconds = time.perf_counter() - t0
    appended = sum(end_offsets(s, [topic]).get(topic, {}).values()) - before
    if not report.events_acked == appended == n:
        raise BenchError(f"preload: {report.events_acked} acked, {appended} appended to {topic!r}; expected {n}")
    return {"events": n, "publish_s": round(seconds, 1), "events_per_s": round(n / seconds),
            "event_time_start": START.isoformat(), "event_time_end": report.event_time_end.isoformat()}


# ---------------------------------------------------------------------------- the lab's Spark


class ConnectServer:
    """The lab's Spark Connect server for the bench's data folder, on its own free port."""

    def __init__(self, s: Settings):
        self.settings = s
        self.url = f"sc://127.0.0.1:{s.spark_connect_port}"
        self.proc: subprocess.Popen | None = None
        self.lab_server = None
        self.how = ""

    def start(self) -> float:
        """Start it and wait until it runs a query; returns the seconds that took."""
        t0 = time.perf_counter()
        try:
            from obslab.stream.server import SparkServer
        except ImportError:  # before `obslab spark start` landed: by hand, as notes/common.md did
            self._start_by_hand()
        else:
            self.lab_server = SparkServer(self.settings)
            status = self.lab_server.start()
            self.url, self.how = status.url, "obslab.stream.server.SparkServer (as `obslab spark start`)"
        return time.perf_counter() - t0

    def pid(self) -> int | None:
        return self.lab_server.pid() if self.lab_server is not None else (self.proc.pid if self.proc else None)

    def stop(self) -> None:
        if self.lab_server is not None:
            print(self.lab_server.stop(), file=sys.stderr)
        stop_process(self.proc)

    def _start_by_hand(self) -> None:
        import pyspark

        s, home = self.settings, Path(pyspark.__file__).parent
        cmd = [str(home / "bin" / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
               "--master", s.spark_master, "--driver-memory", s.spark_driver_memory,
               "--jars", ",".join(kafka_connector_jars(s))]
        for key, value in {"spark.connect.grpc.binding.address": "127.0.0.1",
                           "spark.connect.grpc.binding.port": s.spark_connect_port, "spark.ui.enabled": "false",
                           "spark.sql.session.timeZone": "UTC"}.items():
            cmd += ["--conf", f"{key}={value}"]
        env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
        log = s.data_dir / "spark-connect.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen([*cmd, "spark-internal"], stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.how = "spark-submit of SparkConnectServer by hand (notes/common.md)"
        probe = ("import sys; from pyspark.sql import SparkSession; "
                 "s = SparkSession.builder.remote(sys.argv[1]).getOrCreate(); s.range(1).collect()")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the Spark Connect server exited while starting:\n{tail(log)}")
            if subprocess.run([sys.executable, "-c", probe, self.url], capture_output=True, timeout=60).returncode == 0:
                return
            time.sleep(1)
        raise BenchError(f"the Spark Connect server did not answer at {self.url} within 180 s:\n{tail(log)}")


# ---------------------------------------------------------------------------- one run


def original_command(s: Settings, run_dir: Path) -> tuple[list[str], dict[str, str], Path]:
    """The adapted original job, its environment (as its compose file sets it) and its DuckDB file."""
    sys.path.insert(0, str(ORIGINAL))
    from init_db import init_database  # the original's own schema script, unchanged

    db = run_dir / "observability.db"
    init_database(str(db))
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(KAFKA_BROKER=s.kafka_bootstrap_servers, KAFKA_RAW_EVENTS_TOPIC=s.topic_raw_events, DUCKDB_PATH=str(db),
               SPARK_CHECKPOINT_DIR=str(run_dir / "checkpoints"), SPARK_EVENT_LOG_DIR=str(run_dir / "spark-events"),
               SPARK_JARS=",".join(kafka_connector_jars(s)), SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    return [sys.executable, str(ORIGINAL / "streaming_job.py")], env, db


def obslab_command(s: Settings, run_dir: Path, name: str, spark_server: str) -> tuple[list[str], dict[str, str], Path]:
    """`obslab stream --available-now` with a fresh checkpoint and store, settings through the environment."""
    db = run_dir / "observability.duckdb"
    rs = s.model_copy(update={"duckdb_path": db, "checkpoint_name": name.replace("-", "_"), "spark_server": spark_server})
    return [sys.executable, "-m", "obslab.cli", "stream", "--available-now", "--json"], settings_env(rs), db


def stored_events(variant: str, db: Path) -> tuple[int, int]:
    """(sum of request_count, rows) in service_metrics: the original's own table, or obslab's store."""
    sql = "SELECT coalesce(sum(request_count), 0), count(*) FROM service_metrics"
    if variant == "original":
        import duckdb

        con = duckdb.connect(str(db), read_only=True)
        try:
            total, rows = con.execute(sql).fetchone()
        finally:
            con.close()
    else:
        total, rows = Store(db).query(sql)[0]
    return int(total), int(rows)


def windows(variant: str, db: Path) -> dict[tuple[str, float], int]:
    """(service, window start epoch seconds) -> request_count, to check both counted the same windows."""
    sql = "SELECT service, epoch(window_start), request_count FROM service_metrics"
    if variant == "original":
        import duckdb

        con = duckdb.connect(str(db), read_only=True)
        try:
            rows = con.execute(sql).fetchall()
        finally:
            con.close()
    else:
        rows = Store(db).query(sql)
    return {(r[0], float(r[1])): int(r[2]) for r in rows}


def last_lines(path: Path, lines: int = 20) -> str:
    """The end of a process's output without Java stack frames (the run folder is deleted on exit)."""
    text = tail(path, 2000).splitlines()
    return "\n".join([line for line in text if not line.lstrip().startswith(("at ", "..."))][-lines:])


def run_once(variant: str, s: Settings, n: int, round_no: int, server: ConnectServer, broker_pid: int | None) -> dict:
    """One fresh process of `variant` over the whole topic; fails unless it stored all N events."""
    name = f"{variant}-{round_no}" if round_no > 0 else f"{variant}-warmup{-round_no}"
    run_dir = s.data_dir / "runs" / name
    run_dir.mkdir(parents=True)
    if variant == "original":
        cmd, env, db = original_command(s, run_dir)
    else:
        cmd, env, db = obslab_command(s, run_dir, name, server.url if variant == "obslab" else "local")
    groups = {"broker": tree_of(broker_pid)}
    if variant == "obslab":
        groups["spark_server"] = tree_of(server.pid())
    sampler = Sampler(groups, rss_group="process", interval=0.25)
    out, err = (run_dir / "stdout").open("wb"), (run_dir / "stderr").open("wb")
    proc, load_before = None, round(os.getloadavg()[0], 2)  # a busy machine shows here and in other_cpu_s
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=run_dir if variant == "original" else ROOT, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        sampler.add("process", tree_of(proc.pid))
        sampler.start()
        proc.wait(timeout=RUN_TIMEOUT_S)
        seconds = time.perf_counter() - t0
    finally:
        stop_process(proc)
        out.close()
        err.close()
    usage = sampler.finish()
    if proc.returncode != 0:
        raise BenchError(f"{name}: exited with code {proc.returncode}:\n{last_lines(run_dir / 'stderr')}")
    counted, rows = stored_events(variant, db)
    if counted != n:
        raise BenchError(f"{name}: service_metrics holds {counted:,} events in {rows} rows; expected {n:,}. "
                         f"Its output:\n{last_lines(run_dir / 'stderr')}")
    result = {"variant": variant, "round": round_no, "seconds": round(seconds, 2), "events_counted": counted,
              "service_windows": rows, "load_average_1m_before": load_before, "db": str(db)}
    if variant != "original":
        report = json.loads((run_dir / "stdout").read_text().strip().splitlines()[-1])
        result.update(reported_events=report.get("events"), dead_letters=report.get("dead_letters"),
                      batches=report.get("batches"), job_seconds=round(report.get("seconds", float("nan")), 2))
    # CPU the run cost wherever it ran: the process, and the server's JVM and Python workers for obslab
    result["work_cpu_s"] = round(usage["process_cpu_s"] + usage.get("spark_server_cpu_s", 0.0), 2)
    result["peak_rss_mib"] = usage.pop("peak_rss_mib")
    for key in ("peak_rss_detail_mib", "rss_samples"):
        usage.pop(key)
    return {**result, **usage}


# ---------------------------------------------------------------------------- the benchmark


def summary(runs: list[dict]) -> dict:
    secs = [r["seconds"] for r in runs]
    cpu_keys = [k for k in runs[0] if k.endswith("_cpu_s")]
    loads = [r["load_average_1m_before"] for r in runs]
    return {"runs": len(runs), "median_s": round(median_of(secs), 2), "min_s": min(secs), "max_s": max(secs),
            "seconds": secs, "load_average_1m_before": [min(loads), max(loads)],
            "median_peak_rss_mib": round(median_of([r["peak_rss_mib"] for r in runs]), 1),
            **{f"median_{k}": round(median_of([r[k] for r in runs]), 2) for k in cpu_keys}}


def benchmark(s: Settings, n: int, rounds: int, warmup: int, variants: tuple[str, ...], broker_pid: int | None) -> dict:
    loaded = preload(s, n)
    print(f"preloaded {n:,} events in {loaded['publish_s']} s", file=sys.stderr)
    server = ConnectServer(s)
    try:
        start_s = round(server.start(), 1) if "obslab" in variants else None
        if start_s is not None:
            print(f"Spark Connect server up at {server.url} in {start_s:.1f} s ({server.how})", file=sys.stderr)
        runs: list[dict] = []
        warmups = []
        for k in range(1, warmup + 1 if "obslab" in variants else 1):  # a lab's server has served runs before
            r = run_once("obslab", s, n, -k, server, broker_pid)
            warmups.append(r)
            print(f"warm-up {k}/{warmup} obslab {r['seconds']:7.2f} s (not in the medians)", file=sys.stderr)
        for round_no in range(1, rounds + 1):  # interleaved: drift on a shared machine spreads over all alike
            for variant in variants:
                r = run_once(variant, s, n, round_no, server, broker_pid)
                runs.append(r)
                print(f"round {round_no}/{rounds} {variant:<13} {r['seconds']:7.2f} s, {r['events_counted']:,} events; "
                      f"CPU s: process {r['process_cpu_s']:.1f}"
                      + (f", Spark server {r['spark_server_cpu_s']:.1f}" if "spark_server_cpu_s" in r else "")
                      + f", broker {r['broker_cpu_s']:.1f}, other {r['other_cpu_s']:.1f}", file=sys.stderr)
        server_rss = round(sum(rss_mib(p) for p in tree_of(server.pid())(processes())), 1) if server.pid() else None
    finally:
        server.stop()
    by_variant = {v: summary([r for r in runs if r["variant"] == v]) for v in variants}
    same = None
    if "obslab" in variants:
        first = {r["variant"]: r["db"] for r in runs if r["round"] == 1}
        same = windows("original", Path(first["original"])) == windows("obslab", Path(first["obslab"]))
    ratios = {f"{v}/original": round(by_variant[v]["median_s"] / by_variant["original"]["median_s"], 3)
              for v in variants if v != "original"}
    # On a shared machine the wall time depends on the others; the CPU a run cost much less.
    cpu_ratios = {f"{v}/original": round(by_variant[v]["median_work_cpu_s"] / by_variant["original"]["median_work_cpu_s"], 3)
                  for v in variants if v != "original"}
    return {"preload": loaded, "spark_server": {"url": server.url, "how": server.how, "start_s": start_s,
                                                "rss_mib_after_runs": server_rss},
            "variants": by_variant, "ratio_of_medians": ratios, "ratio_of_median_work_cpu": cpu_ratios,
            "meets_target": ratios.get("obslab/original", float("inf")) <= TARGET_RATIO,
            "same_windows_and_counts_round_1": same, "warmup_runs": warmups, "runs": runs}


def text_report(out: dict) -> str:
    m, b = out["machine"], out["result"]
    lines = [f"{out['date_utc']}  commit {m['git_head']} (at the end {m['git_head_at_end']})  {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM",
             f"{b['preload']['events']:,} events; Spark server start {b['spark_server']['start_s']} s",
             "| variant | median s | min s | max s | per run s | ratio to original | median CPU s (process + server) "
             "| CPU ratio | median peak RSS MiB (process) | load avg before |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for v, st in b["variants"].items():
        ratio = 1.0 if v == "original" else b["ratio_of_medians"][f"{v}/original"]
        cpu_ratio = 1.0 if v == "original" else b["ratio_of_median_work_cpu"][f"{v}/original"]
        lines.append(f"| {v} | {st['median_s']:.2f} | {st['min_s']:.2f} | {st['max_s']:.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in st['seconds'])} | {ratio:.3f} | "
                     f"{st['median_work_cpu_s']:.1f} | {cpu_ratio:.3f} | {st['median_peak_rss_mib']:.0f} | "
                     f"{st['load_average_1m_before'][0]:g}-{st['load_average_1m_before'][1]:g} |")
    if b["warmup_runs"]:
        lines.append("warm-up (obslab on the server, not in the medians): "
                     + ", ".join(f"{r['seconds']:.2f} s" for r in b["warmup_runs"]))
    lines.append(f"obslab/original <= {TARGET_RATIO}: {b['meets_target']}; same windows and counts (round 1): "
                 f"{b['same_windows_and_counts_round_1']}")
    return "\n".join(lines)


def results_path(day: str) -> Path:
    path, k = RESULTS / f"vs-original-{day}.json", 2
    while path.exists():
        path, k = RESULTS / f"vs-original-{day}-{k}.json", k + 1
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events preloaded into the topic (default 1000000)")
    parser.add_argument("--runs", type=int, default=3, help="rounds, each one run of every variant (default 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed obslab runs on the Spark server before the rounds, reported apart (default 1)")
    parser.add_argument("--no-local", action="store_true", help="skip obslab with a Spark of its own (SPARK_SERVER=local)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a summary")
    args = parser.parse_args(argv)
    if args.events < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--events and --runs must be positive")
    variants = tuple(v for v in VARIANTS if not (args.no_local and v == "obslab-local"))

    started = datetime.now(timezone.utc)
    out: dict = {"benchmark": "original job vs obslab stream --available-now (issue 25)",
                 "original": {"repository": "modiashu/STREAMING-OBSERVABILITY-WITH-LLM", "file": "spark/streaming_job.py",
                              "commit": "8922f15e706077c0edb11b4f0cd10fc235c33250", "adapted": "bench/original"},
                 "date_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "command": " ".join([".venv/bin/python", "bench/bench_vs_original.py", *(argv or sys.argv[1:])])}
    at_start = versions()  # the code measured is the working tree while the runs ran: its commit then
    with bench_broker(bench_settings) as (settings, broker):
        out["result"] = benchmark(settings, args.events, args.runs, args.warmup, variants, broker.pid())
    out["finished_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    at_end = versions()
    out["machine"] = {**machine(), **at_start, "git_head_at_end": at_end["git_head"],
                      "uncommitted_in_measured_code_at_end": at_end["uncommitted_in_measured_code"]}
    out["settings"] = {k: getattr(settings, k) for k in ("scenario", "events_per_second", "seed", "spark_master",
                                                          "spark_driver_memory", "window_seconds", "watermark_seconds",
                                                          "kafka_partitions", "kafka_heap", "kafka_client")}
    path = results_path(started.strftime("%Y-%m-%d"))
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(json.dumps(out, indent=2, default=str) if args.json else text_report(out))
    print(f"results in {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

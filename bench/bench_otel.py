"""OpenTelemetry spans (issue 23): how fast spans go through Collector -> Kafka -> windows, and how
long a fault switched on in the shop takes to become a narrated incident.

  throughput  N SERVER spans (default 200,000; the shop's three services and four routes, one in 20
              answering 500), made with the OpenTelemetry SDK beforehand (not timed), then sent with
              its OTLP/HTTP exporter (`OTLPSpanExporter.export`, batches of 512 as the SDK's batch
              processor sends them; --senders processes share the spans) to the built Collector, on
              this script's own broker, a new topic per round. Per round:
                send     first export -> last export answered (the Collector has them all)
                topic    first export -> all N spans on the topic (a consumer process counts the
                         spans in the records as they arrive); more than N fails the run
                stream   `run_stream_job(available_now=True)` over that topic, fresh checkpoint and
                         store, on one Spark session built once (not counted); it must count
                         exactly N requests with no dead letter
                end to end  N / (topic + stream)
              Reference, in the same round on the same broker and session: N generator events (the
              `mixed` scenario at 1,000 events/s of event time) published at max rate to a new raw
              topic (the events' way onto Kafka) and counted by the same stream (STREAM_SOURCE=events).
              One warm-up round (reported apart), then R rounds; medians, and spans/events per leg.
  fault       R runs of `obslab demo --source spans` (what `make demo-otel` runs) with every setting
              at its default (60-s windows, 120-s watermark, 5-s trigger and polls, narrator auto) in
              a temporary data dir on free ports (the shop started first on free ports, as the demo
              takes a running shop). Once the demo says every service has its history, the command it
              prints, `obslab shop fault payment error_surge --size 0.3 --seconds 180`; then seconds
              from the fault's start (injected_incidents.start_time) to the first anomaly on payment,
              its incident, and that incident's first narrative (incident_summaries.created_at).

CPU seconds of the Collector, the broker, Spark's JVM, this script and the rest of the machine are
recorded per leg, so a run that shared the cores shows it. Raw results go to --out as JSON.

    .venv/bin/python bench/bench_otel.py [--spans 200000] [--runs 3] [--warmup 1] [--senders 1]
                                         [--only throughput|fault] [--out bench/results/otel-2026-12-05]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench_stream import Sampler, children_of, only, tree_of  # bench/ is on sys.path
from common import bench_broker, busy_cpu_seconds, free_port, isolated_settings, machine

from obslab.lab import Lab
from obslab.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("throughput", "fault")
SEED = 42
START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)  # event time of the first reference event
BATCH = 512  # spans per export: the SDK's BatchSpanProcessor default (max_export_batch_size)
ERROR_SHARE = 0.05  # of the spans answer 500
ROUTES = (("frontend", "/checkout"), ("frontend", "/browse"), ("cart", "/cart/items"), ("payment", "/payment/charge"))
TOPIC_BOUND_S = 600  # bounds on a busy machine, not measurements
WARM_UP_BOUND_S = 1500
NARRATED_BOUND_S = 600
FAULT = ["shop", "fault", "payment", "error_surge", "--size", "0.3", "--seconds", "180"]


class BenchError(RuntimeError):
    """A run did not do what it was asked to; its figures would be meaningless."""


def median_of(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else float("nan")


def bench_settings(data_dir: Path) -> Settings:
    """An isolated lab; every value that changes a measurement is pinned, none read from .env."""
    grpc, http = free_port(), free_port()
    while http == grpc:
        http = free_port()
    return isolated_settings(
        data_dir, duckdb_path=data_dir / "observability.duckdb", kafka_partitions=3, kafka_heap="512m",
        kafka_client="confluent-kafka", scenario="mixed", seed=SEED, events_per_second=1000.0,
        backfill_minutes=0.0, spark_master="local[2]", spark_driver_memory="1g", window_seconds=60,
        watermark_seconds=120, trigger_seconds=5.0, max_offsets_per_trigger=None, otlp_grpc_port=grpc,
        otlp_http_port=http)


# ---------------------------------------------------------------------------- spans


def make_spans(n: int, seed: int) -> dict[str, list]:
    """service -> its finished SDK spans (ReadableSpan): n SERVER spans over ROUTES in turn, ERROR_SHARE of them 500."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    rng = random.Random(seed)
    kept, tracers = {}, {}
    for service in sorted({s for s, _ in ROUTES}):
        kept[service] = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(kept[service]))
        tracers[service] = provider.get_tracer("obslab-bench")
    for i in range(n):
        service, route = ROUTES[i % len(ROUTES)]
        status = 500 if rng.random() < ERROR_SHARE else 200
        tracers[service].start_span(f"GET {route}", kind=SpanKind.SERVER, attributes={
            "http.request.method": "GET", "http.route": route, "http.response.status_code": status}).end()
    return {service: list(exporter.get_finished_spans()) for service, exporter in kept.items()}


def send(endpoint: str, spans: dict[str, list], go, times) -> None:
    """Export `spans` in batches of BATCH once `go` is set; put (first export began, last answered) on `times`."""
    import requests
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    session = requests.Session()
    session.trust_env = False  # a proxy in the environment must not carry loopback traffic
    exporter = OTLPSpanExporter(endpoint=endpoint, session=session, timeout=60)
    batches = [batch[i:i + BATCH] for batch in spans.values() for i in range(0, len(batch), BATCH)]
    go.wait()
    began = time.time()
    for batch in batches:
        if exporter.export(batch) is not SpanExportResult.SUCCESS:
            times.put(("failed", began, time.time()))
            return
    times.put(("ok", began, time.time()))


def sender(endpoint: str, n: int, seed: int, ready, go, times) -> None:
    """A sender process: makes its n spans, says it is ready, sends them when told."""
    spans = make_spans(n, seed)
    ready.put(sum(len(v) for v in spans.values()))
    send(endpoint, spans, go, times)


def count_spans(bootstrap: str, topic: str, partitions: int, n: int, ready, result) -> None:
    """A consumer process: reads the topic from its start and counts the spans in its records (one
    `"spanId"` key each in OTLP JSON); puts (time N were there, spans, records, bytes) once N are, then
    reads on for 3 s more to see that no more come."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-otel-{topic}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    ready.put(True)
    spans = records = size = 0
    reached = None
    deadline = time.time() + TOPIC_BOUND_S
    while time.time() < deadline and (reached is None or time.time() < reached + 3):
        for message in consumer.consume(num_messages=1000, timeout=0.2):
            if message.error():
                continue
            value = message.value()
            spans += value.count(b'"spanId"')
            records += 1
            size += len(value)
        if reached is None and spans >= n:
            reached = time.time()
    consumer.close()
    result.put((reached, spans, records, size))


# ---------------------------------------------------------------------------- throughput


def spans_round(s: Settings, spark, n: int, senders: int, name: str, broker_pid: int | None) -> dict:
    """Send n spans through the Collector onto a new topic, then count them with the stream."""
    from obslab.broker import LocalBroker
    from obslab.otel.collector import LocalCollector, build, otlp_http_endpoint

    rs = s.model_copy(update={"topic_otlp_spans": f"spans-{name}", "stream_source": "spans",
                              "checkpoint_name": f"spans-{name}", "duckdb_path": s.data_dir / f"spans-{name}.duckdb"})
    LocalBroker(rs).ensure_topics()
    collector = LocalCollector(rs, binary=build(rs))
    status = collector.start()
    ctx = mp.get_context("spawn")
    ready, times, counted, go = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
    try:
        share = [n // senders + (1 if i < n % senders else 0) for i in range(senders)]
        procs = [ctx.Process(target=sender, args=(f"{otlp_http_endpoint(rs)}/v1/traces", k, SEED + i, ready, go, times))
                 for i, k in enumerate(share)]
        counter = ctx.Process(target=count_spans, args=(rs.kafka_bootstrap_servers, rs.topic_otlp_spans,
                                                        rs.kafka_partitions, n, ready, counted))
        for p in [*procs, counter]:
            p.start()
        got = [ready.get(timeout=900) for _ in range(senders + 1)]  # the senders' span counts and the counter's True
        if sum(x for x in got if x is not True) != n:
            raise BenchError(f"{name}: the senders made {got} spans, not {n}")
        pids = {"sender": [p.pid for p in procs], "counter": [counter.pid]}
        sampler = Sampler({"collector": only(status.pid), "broker": tree_of(broker_pid),
                           "senders": lambda procs_, ids=pids["sender"]: set(ids),
                           "counter": lambda procs_, ids=pids["counter"]: set(ids),
                           "spark": children_of(os.getpid(), but=broker_pid)})  # what is left of this script's children
        sampler.start()
        go.set()
        sent = [times.get(timeout=TOPIC_BOUND_S) for _ in procs]
        reached, spans, records, size = counted.get(timeout=TOPIC_BOUND_S + 60)
        usage = sampler.finish()
        for p in [*procs, counter]:
            p.join(timeout=60)
    finally:
        collector.stop()
    if any(ok != "ok" for ok, _, _ in sent):
        raise BenchError(f"{name}: an export failed")
    if reached is None or spans != n:
        raise BenchError(f"{name}: {spans} spans on the topic, expected exactly {n}")
    began = min(b for _, b, _ in sent)
    send_s, topic_s = max(e for _, _, e in sent) - began, reached - began
    stream = stream_once(rs, spark, n, broker_pid)
    return {"spans": n, "senders": senders, "send_s": round(send_s, 2), "send_per_s": round(n / send_s),
            "topic_s": round(topic_s, 2), "topic_per_s": round(n / topic_s), "records": records,
            "topic_mib": round(size / 2**20, 1), "bytes_per_span": round(size / n), **_prefixed("ingest", usage),
            **stream, "end_to_end_s": round(topic_s + stream["stream_s"], 2),
            "end_to_end_per_s": round(n / (topic_s + stream["stream_s"]))}


def events_round(s: Settings, spark, n: int, name: str, broker_pid: int | None) -> dict:
    """Publish n generator events at max rate onto a new raw topic, then count them with the stream."""
    from obslab.broker import LocalBroker
    from obslab.generator.run import RunPlan, generate

    rs = s.model_copy(update={"topic_raw_events": f"raw-{name}", "stream_source": "events",
                              "checkpoint_name": f"events-{name}", "duckdb_path": s.data_dir / f"events-{name}.duckdb"})
    LocalBroker(rs).ensure_topics()
    sampler = Sampler({"generator": only(os.getpid()), "broker": tree_of(broker_pid)})
    t0 = time.perf_counter()
    with Lab(rs) as lab:
        report, _ = generate(RunPlan(max_rate=True, count=n, start=START, store_truth=False), rs, sink=lab.events)
    publish_s = time.perf_counter() - t0
    usage = sampler.finish()
    if report.events_acked != n:
        raise BenchError(f"{name}: {report.events_acked} events acknowledged, expected {n}")
    stream = stream_once(rs, spark, n, broker_pid)
    return {"events": n, "topic_s": round(publish_s, 2), "topic_per_s": round(n / publish_s),
            **_prefixed("ingest", usage), **stream, "end_to_end_s": round(publish_s + stream["stream_s"], 2),
            "end_to_end_per_s": round(n / (publish_s + stream["stream_s"]))}


def stream_once(rs: Settings, spark, n: int, broker_pid: int | None) -> dict:
    """run_stream_job(available_now) over rs's topic into a fresh store; exactly n requests or BenchError."""
    from obslab.stream.job import run_stream_job

    store = Lab(rs).store
    own = os.getpid()
    sampler = Sampler({"bench": only(own), "broker": tree_of(broker_pid), "spark": children_of(own, but=broker_pid)})
    t0 = time.perf_counter()
    report = run_stream_job(rs, available_now=True, spark=spark, store=store)
    seconds = time.perf_counter() - t0
    usage = sampler.finish()
    stored = store.query("SELECT coalesce(sum(request_count), 0) FROM service_metrics")[0][0]
    c = report.counters
    if c.events != n or stored != n or c.dead_letters:
        raise BenchError(f"stream of {rs.stream_topic}: {c.events} counted, {stored} in service_metrics, "
                         f"{c.dead_letters} dead letters; expected exactly {n}")
    return {"stream_s": round(seconds, 2), "stream_per_s": round(n / seconds), "stream_batches": c.batches,
            "skipped_spans": c.skipped_spans, **_prefixed("stream", usage)}


def _prefixed(prefix: str, usage: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in usage.items()}


def throughput(s: Settings, n: int, runs: int, warmup: int, senders: int, broker_pid: int | None) -> dict:
    from obslab.stream.session import build_session

    t0 = time.perf_counter()
    spark = build_session(s, app_name="obslab-bench-otel")
    session_s = time.perf_counter() - t0
    rounds = []
    for i in range(warmup + runs):
        name = f"warmup-{i}" if i < warmup else f"run-{i - warmup + 1}"
        load = os.getloadavg()[0]
        spans = spans_round(s, spark, n, senders, name, broker_pid)
        events = events_round(s, spark, n, name, broker_pid)
        rounds.append({"round": name, "loadavg_1m_before": round(load, 2), "spans": spans, "events": events})
        print(f"{name}: spans send {spans['send_per_s']:,}/s, topic {spans['topic_per_s']:,}/s, stream "
              f"{spans['stream_per_s']:,}/s, end to end {spans['end_to_end_per_s']:,}/s | events topic "
              f"{events['topic_per_s']:,}/s, stream {events['stream_per_s']:,}/s, end to end "
              f"{events['end_to_end_per_s']:,}/s", file=sys.stderr)
    timed = [r for r in rounds if r["round"].startswith("run-")]
    legs = ("send", "topic", "stream", "end_to_end")
    medians = {"spans": {f"{leg}_per_s": median_of([r["spans"][f"{leg}_per_s"] for r in timed]) for leg in legs},
               "events": {f"{leg}_per_s": median_of([r["events"][f"{leg}_per_s"] for r in timed])
                          for leg in legs if leg != "send"}}
    medians["spans_per_event"] = {f"{leg}": round(medians["spans"][f"{leg}_per_s"] / medians["events"][f"{leg}_per_s"],
                                                  3) for leg in legs if leg != "send"}
    return {"spans": n, "senders": senders, "spark_session_s": round(session_s, 1), "rounds": rounds,
            "medians": medians}


# ---------------------------------------------------------------------------- fault to narrative


def fault_run(run_no: int) -> dict:
    """`obslab demo --source spans` in a temporary lab; a payment surge once it is warmed up; seconds to its narrative."""
    from obslab.shop.topology import SERVICES
    from obslab.store import Store

    data = Path(tempfile.mkdtemp(prefix="obslab-bench-otel-"))
    ports = [free_port() for _ in range(8)]
    while len(set(ports)) < len(ports):
        ports = [free_port() for _ in range(8)]
    kafka, controller, grpc, http, web, *shop_ports = ports
    # Every setting at its default (none inherited from this environment), the lab's folder and ports apart.
    env = {**{k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields},
           "DATA_DIR": str(data), "KAFKA_PORT": str(kafka), "KAFKA_CONTROLLER_PORT": str(controller),
           "OTLP_GRPC_PORT": str(grpc), "OTLP_HTTP_PORT": str(http)}
    window_s = Settings.model_fields["window_seconds"].default
    cli = [sys.executable, "-m", "obslab.cli"]
    shop = subprocess.run([*cli, "shop", "start", *[a for s, p in zip(SERVICES, shop_ports) for a in (f"--{s}-port", str(p))]],
                          env=env, capture_output=True, text=True, timeout=180)
    if shop.returncode != 0:
        raise BenchError(f"shop start: {shop.stdout}{shop.stderr}")
    began = time.time()
    proc = subprocess.Popen([*cli, "demo", "--source", "spans", "--port", str(web), "--minutes", "45"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: [lines.append((time.time(), ln.rstrip())) for ln in proc.stdout],
                              daemon=True)
    reader.start()
    store = Store(data / "observability.duckdb", lock_timeout_s=10)
    out: dict = {"run": run_no, "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}
    try:
        ready = _wait(lambda: next((t for t, ln in lines if ln.startswith("the detectors have")), None),
                      WARM_UP_BOUND_S, proc)
        out["warmed_up_after_s"] = round(ready - began, 1)
        busy0, t_fault = busy_cpu_seconds(), time.time()
        switched = subprocess.run([*cli, *FAULT], env=env, capture_output=True, text=True, timeout=120)
        if switched.returncode != 0:
            raise BenchError(f"shop fault: {switched.stdout}{switched.stderr}")
        out["fault"] = switched.stdout.strip()
        start = store.query("SELECT max(start_time) FROM injected_incidents WHERE service = 'payment'")[0][0]

        def narrated():
            rows = store.query(
                "SELECT s.incident_id, min(s.created_at), arg_min(s.backend, s.created_at), "
                "arg_min(s.title, s.created_at), arg_min(s.fallback_reason, s.created_at) "
                "FROM incident_summaries s JOIN incidents i USING (incident_id) "
                "WHERE i.service = 'payment' AND i.kind = 'errors' AND i.opened_at >= ? GROUP BY 1 ORDER BY 2",
                [start - timedelta(seconds=window_s)])
            return rows[0] if rows else None

        first = _wait(narrated, NARRATED_BOUND_S, proc)
        incident_id, summarised, backend, title, fallback = first
        anomaly, detected = store.query(
            "SELECT min(window_start), min(detected_at) FROM anomalies WHERE incident_id = ?", [incident_id])[0]
        opened = store.query("SELECT opened_at, detectors, origin_service FROM incidents WHERE incident_id = ?",
                             [incident_id])[0]
        said = next((ln for _, ln in lines if ln.startswith("incident narrated") and title in ln), "")
        out.update({"fault_start": start.isoformat(), "incident_id": incident_id, "detectors": opened[1],
                    "origin_service": opened[2], "first_anomaly_window_start": anomaly.isoformat(),
                    "detected_after_s": round((detected - start).total_seconds(), 1),
                    "narrated_after_s": round((summarised - start).total_seconds(), 1),
                    "narrator_backend": backend, "fallback_reason": fallback, "title": title, "demo_said": said,
                    "machine_busy_cpu_s_fault_to_narrative": round(busy_cpu_seconds() - busy0, 1),
                    "wall_s_fault_to_narrative": round(time.time() - t_fault, 1)})
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=10)
        out["demo_output"] = [ln for _, ln in lines]
        for command in (["shop", "stop"], ["otelcol", "stop"], ["broker", "stop"]):  # a demo that never got going
            subprocess.run([*cli, *command], env=env, capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)
    print(f"fault run {run_no}: warmed up after {out.get('warmed_up_after_s')} s; fault -> anomaly "
          f"{out.get('detected_after_s')} s, -> narrative {out.get('narrated_after_s')} s ({out.get('narrator_backend')})",
          file=sys.stderr)
    return out


def _wait(found, bound_s: float, proc: subprocess.Popen):
    """found()'s first truthy value, polled every second; BenchError after bound_s or when the demo ends."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        try:
            value = found()
        except Exception:  # noqa: BLE001 - the store may be busy or not there yet; ask again
            value = None
        if value:
            return value
        if proc.poll() is not None:
            raise BenchError(f"the demo ended (code {proc.returncode}) before it was there")
        time.sleep(1.0)
    raise BenchError(f"not there within {bound_s:.0f} s")


def fault(runs: int) -> dict:
    done = [fault_run(i + 1) for i in range(runs)]
    return {"runs": done, "medians": {k: median_of([r[k] for r in done]) for k in
                                      ("warmed_up_after_s", "detected_after_s", "narrated_after_s")}}


# ---------------------------------------------------------------------------- main


def versions() -> dict:
    from importlib.metadata import version

    import duckdb
    import pyspark

    from obslab.otel.collector import BUILDER_VERSION

    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "lib/obslab"], cwd=ROOT, capture_output=True,
                           text=True).stdout
    return {"pyspark": pyspark.__version__, "duckdb": duckdb.__version__, "collector": BUILDER_VERSION,
            "opentelemetry_sdk": version("opentelemetry-sdk"), "locust": version("locust"),
            "git_head": head.strip(), "uncommitted_in_lib": [line[3:] for line in dirty.splitlines()]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=200_000, help="spans (and reference events) per round")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds / fault runs (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="throughput rounds before the timed ones (default 1)")
    parser.add_argument("--senders", type=int, default=1, help="sender processes sharing the spans (default 1)")
    parser.add_argument("--only", choices=PHASES, help="one of the two benchmarks (default: both)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "otel-2026-12-05",
                        help="folder of the raw JSON (throughput.json, fault.json)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join([".venv/bin/python", "bench/bench_otel.py", *(argv if argv is not None else sys.argv[1:])]),
            "machine": {**machine(), **versions()}}
    if args.only in (None, "throughput"):
        began = datetime.now(timezone.utc)
        with bench_broker(bench_settings) as (settings, broker):
            result = throughput(settings, args.spans, args.runs, args.warmup, args.senders, broker.pid())
        result = {"benchmark": "OpenTelemetry spans: throughput (issue 23)", "date_utc": f"{began:%Y-%m-%dT%H:%M:%SZ}",
                  "finished_utc": f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}", **meta,
                  "settings": {k: getattr(settings, k) for k in ("kafka_partitions", "kafka_heap", "kafka_client",
                                                                  "spark_master", "spark_driver_memory",
                                                                  "window_seconds", "watermark_seconds")},
                  **result}
        (args.out / "throughput.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(json.dumps(result["medians"], indent=1))
    if args.only in (None, "fault"):
        began = datetime.now(timezone.utc)
        result = fault(args.runs)
        result = {"benchmark": "OpenTelemetry spans: fault to narrated incident (issue 23)",
                  "date_utc": f"{began:%Y-%m-%dT%H:%M:%SZ}",
                  "finished_utc": f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}", **meta,
                  "fault_command": "obslab " + " ".join(FAULT), **result}
        (args.out / "fault.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(json.dumps(result["medians"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generator throughput (issue 3): sustained events/s from one process into a local broker, acks=all.

Starts its own real Kafka broker (same code as `obslab broker start`, in a temporary data dir on free
ports), then measures, R times each with N events, interleaved round by round:

  reference        bare kafka-python KafkaProducer sending N identical pre-serialized events
                   (acks=all, idempotent, linger 20 ms, batch 256 KiB) - the "kafka-python anchor"
  kafka-python     `obslab.generator.run.generate(RunPlan(max_rate=True, count=N))`, KAFKA_CLIENT=kafka-python
  confluent-kafka  the same with KAFKA_CLIENT=confluent-kafka (librdkafka)

events/s = acked events / wall seconds from the first send to the end of the final flush (client setup
and metadata fetch excluded). Every run must have exactly N events acknowledged - checked both by the
client and by the growth of the topic's end offsets - or the benchmark fails. CPU seconds of this
process, of the broker and of everything else on the machine are recorded per run, so a run that shared
the cores with another workload shows it. Results go to BENCHMARKS.md.

    .venv/bin/python bench/bench_generator.py [--events N] [--runs R] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from common import bench_broker, busy_cpu_seconds, cpu_seconds, isolated_settings, machine

from obslab.broker import end_offsets
from obslab.generator.events import EventStream
from obslab.generator.run import RunPlan, generate
from obslab.generator.scenario import load_scenario
from obslab.lab import Lab
from obslab.settings import Settings

VARIANTS = ("reference", "kafka-python", "confluent-kafka")
TARGET_EVENTS_PER_S = 30_000
SCENARIO = "clean"
SEED = 42


class BenchError(RuntimeError):
    """A benchmark run did not deliver what it was asked to; the figures would be meaningless."""


def bench_settings(data_dir: Path) -> Settings:
    """Settings of an isolated lab; every value that changes the measurement is pinned, not read from .env."""
    return isolated_settings(data_dir, scenario=SCENARIO, seed=SEED, events_per_second=None, backfill_minutes=0.0)


# ---------------------------------------------------------------------------- variants


def sample_event(settings: Settings) -> bytes:
    """One event of the clean scenario, exactly as the generator serializes it."""
    stream = EventStream(load_scenario(settings.scenario), settings.seed, datetime.now(timezone.utc))
    return stream.tick(stream.start, 1.0).json_lines()[0].encode()


def run_reference(settings: Settings, n: int, value: bytes) -> tuple[int, float]:
    """Bare kafka-python producer: (events acknowledged per the client, seconds from first send to flushed)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                             enable_idempotence=True, linger_ms=20, batch_size=256 * 1024,
                             client_id="obslab-bench-reference")
    try:
        topic = settings.topic_raw_events
        producer.partitions_for(topic)  # metadata outside the timed part, as the sinks do in their constructor
        failed = 0

        def on_error(_err) -> None:
            nonlocal failed
            failed += 1

        send = producer.send
        t0 = time.perf_counter()
        for _ in range(n):
            send(topic, value=value, key=b"checkout").add_errback(on_error)
        producer.flush()
        seconds = time.perf_counter() - t0
    finally:
        producer.close()
    return n - failed, seconds


def run_generator(settings: Settings, client: str, n: int) -> tuple[int, float]:
    """The obslab generator at max rate: (events acknowledged, seconds of the send loop plus final flush)."""
    s = settings.model_copy(update={"kafka_client": client})
    with Lab(s) as lab:  # report.seconds times the send loop and final flush, not the sink's set-up
        report, backfill = generate(RunPlan(max_rate=True, count=n, store_truth=False), s, sink=lab.events)
    if backfill is not None:
        raise BenchError("a backfill ran; BACKFILL_MINUTES must be 0 for this benchmark")
    if report.stopped_early:
        raise BenchError(f"{client}: run stopped early ({report.stopped_early}; {report.first_error})")
    if report.events_sent != n:
        raise BenchError(f"{client}: sent {report.events_sent} events, expected {n}")
    return report.events_acked, report.seconds


def measure(variant: str, settings: Settings, n: int, value: bytes, broker_pid: int | None) -> dict:
    """One timed run; fails unless exactly n events were acknowledged and appended to the topic."""
    topic = settings.topic_raw_events
    before = sum(end_offsets(settings, [topic]).get(topic, {}).values())
    own0, busy0 = cpu_seconds(os.getpid()), busy_cpu_seconds()
    broker0 = cpu_seconds(broker_pid) if broker_pid else 0.0
    if variant == "reference":
        acked, seconds = run_reference(settings, n, value)
    else:
        acked, seconds = run_generator(settings, variant, n)
    # CPU seconds over the whole run including client setup: informative, not part of events/s.
    # `other` is everything else the machine did meanwhile (kernel networking, and any other
    # workload): more than a few tenths of a second means the run shared the cores.
    own = cpu_seconds(os.getpid()) - own0
    broker_cpu = (cpu_seconds(broker_pid) - broker0) if broker_pid else 0.0
    other = busy_cpu_seconds() - busy0 - own - broker_cpu
    appended = sum(end_offsets(settings, [topic]).get(topic, {}).values()) - before
    if acked != n or appended != n:
        raise BenchError(f"{variant}: {acked} acknowledged by the client and {appended} appended to {topic!r}, "
                         f"expected {n}. See the broker log under {settings.logs_dir}.")
    return {"events": n, "acked": acked, "seconds": round(seconds, 4), "events_per_s": round(acked / seconds, 1),
            "client_cpu_s": round(own, 2), "broker_cpu_s": round(broker_cpu, 2), "other_cpu_s": round(other, 2)}


# ---------------------------------------------------------------------------- report


def summarize(results: dict[str, list[dict]]) -> dict[str, dict]:
    ref = statistics.median(r["events_per_s"] for r in results["reference"])
    out = {}
    for variant, runs in results.items():
        rates = [r["events_per_s"] for r in runs]
        median = statistics.median(rates)
        out[variant] = {"median": round(median, 1), "min": min(rates), "max": max(rates),
                        "ratio_to_reference": round(median / ref, 2),
                        "meets_target": median >= TARGET_EVENTS_PER_S,
                        **{f"median_{k}": round(statistics.median(r[k] for r in runs), 2)
                           for k in ("client_cpu_s", "broker_cpu_s", "other_cpu_s")},
                        "runs": runs}
    return out


def table(summary: dict[str, dict]) -> str:
    lines = ["| variant | median events/s | min | max | median / reference | >= 30,000 "
             "| CPU s per run: client / broker / other (medians) |",
             "|---|---:|---:|---:|---:|---|---|"]
    for variant, s in summary.items():
        lines.append(f"| {variant} | {s['median']:,.0f} | {s['min']:,.0f} | {s['max']:,.0f} | "
                     f"{s['ratio_to_reference']:.2f} | {'yes' if s['meets_target'] else 'no'} | "
                     f"{s['median_client_cpu_s']:.1f} / {s['median_broker_cpu_s']:.1f} / "
                     f"{s['median_other_cpu_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per run (default 200000)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per variant (default 5)")
    parser.add_argument("--warmup", type=int, default=20_000,
                        help="events of one untimed warm-up run per variant (default 20000; 0 to skip)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    if args.events < 1 or args.runs < 1:
        parser.error("--events and --runs must be positive")

    started = datetime.now(timezone.utc)
    with bench_broker(bench_settings) as (settings, broker):
        value = sample_event(settings)
        if args.warmup:
            for variant in VARIANTS:
                measure(variant, settings, args.warmup, value, broker.pid())
        results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        # Interleaved, so drift (page cache, JIT, log segment rolls) spreads over all variants alike.
        for round_no in range(1, args.runs + 1):
            for variant in VARIANTS:
                r = measure(variant, settings, args.events, value, broker.pid())
                results[variant].append(r)
                print(f"round {round_no}/{args.runs} {variant:>15}: {r['events_per_s']:>10,.0f} events/s "
                      f"({r['seconds']:.2f} s; CPU s: client {r['client_cpu_s']:.1f}, "
                      f"broker {r['broker_cpu_s']:.1f}, other {r['other_cpu_s']:.1f})", file=sys.stderr)

    summary = summarize(results)
    out = {"benchmark": "generator throughput (issue 3)", "date_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
           "machine": machine(), "events_per_run": args.events, "runs": args.runs, "warmup_events": args.warmup,
           "scenario": SCENARIO, "event_bytes": len(value), "partitions": settings.kafka_partitions,
           "kafka_heap": settings.kafka_heap, "target_events_per_s": TARGET_EVENTS_PER_S, "variants": summary}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        m = out["machine"]
        print(f"{out['date_utc']}  {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; "
              f"N={args.events}, runs={args.runs}, acks=all")
        print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

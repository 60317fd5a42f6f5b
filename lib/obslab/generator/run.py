"""One generator run, assembled from settings: what `obslab generate` and notebook 01 call."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from obslab.generator.clock import SimulatedClock, WallClock
from obslab.generator.events import EventStream
from obslab.generator.producer import (FileGroundTruth, FileSink, RunReport, StoreGroundTruth,
                                       backfill_stream, faults_file_for, kafka_sink, run_stream)
from obslab.generator.scenario import load_scenario
from obslab.settings import Settings, get_settings


@dataclass(frozen=True)
class RunPlan:
    """Where events go and how time passes."""

    to_file: Path | None = None  # JSONL instead of Kafka
    realtime: bool = False  # with to_file: wait like a live run
    max_rate: bool = False  # with Kafka: simulated time, as fast as possible (benchmarks)
    store_truth: bool = True  # ground truth into the store (else beside the file)
    duration_s: float | None = None
    count: int | None = None
    start: datetime | None = None  # event time of the first event; default now

    @classmethod
    def ending_now(cls, seconds: float, to_file: Path | None = None, store_truth: bool = True) -> "RunPlan":
        """The last `seconds` of traffic, generated in simulated time (as fast as it goes), so no
        event is dated in the future and the stream's watermark stays at the wall clock."""
        start = _next_tick(datetime.now(timezone.utc) - timedelta(seconds=seconds))
        return cls(to_file=to_file, max_rate=to_file is None, store_truth=store_truth, duration_s=seconds,
                   start=start)


def generate(plan: RunPlan, settings: Settings | None = None, store=None, stop: threading.Event | None = None,
             progress: Callable[[RunReport], None] | None = None) -> tuple[RunReport, RunReport | None]:
    """Run the configured scenario; returns (main report, backfill report or None)."""
    s = settings or get_settings()
    scenario = load_scenario(s.scenario)
    start = plan.start or _next_tick(datetime.now(timezone.utc))
    stream = EventStream(scenario, s.seed, start, s.events_per_second)
    simulated = plan.max_rate or (plan.to_file is not None and not plan.realtime)
    duration = plan.duration_s
    if duration is None and plan.count is None:
        duration = scenario.duration_seconds

    if plan.to_file is not None:
        sink = FileSink(plan.to_file)
    else:
        sink = kafka_sink(s)
    truth = None
    if plan.store_truth:
        if store is None:
            from obslab.store import Store

            store = Store.from_settings(s)
        store.migrate()
        truth = StoreGroundTruth(store, stream.run_id, scenario.name)
    elif plan.to_file is not None:
        truth = FileGroundTruth(faults_file_for(plan.to_file), stream.run_id, scenario.name)

    backfill = None
    try:
        if s.backfill_minutes > 0:
            history = backfill_stream(stream, s.backfill_minutes)
            backfill = run_stream(history, SimulatedClock(history.start), sink, None,
                                  duration_s=s.backfill_minutes * 60, stop=stop)
        clock = SimulatedClock(start) if simulated else WallClock()
        report = run_stream(stream, clock, sink, truth, duration_s=duration,
                            count=plan.count, stop=stop, progress=progress)
    finally:
        sink.close()
    return report, backfill


def per_minute(events_file: Path):
    """Requests, error rate and mean latency per service and minute of a JSONL events file."""
    import pandas as pd

    df = pd.read_json(events_file, lines=True, convert_dates=["event_time"])
    df["minute"] = df["event_time"].dt.floor("min")
    df["error"] = df["status_code"] >= 400
    return (df.groupby(["service", "minute"])
              .agg(requests=("event_id", "size"), error_rate=("error", "mean"), avg_latency_ms=("latency_ms", "mean"))
              .round(3).reset_index())


def _next_tick(now: datetime) -> datetime:
    # Start on a whole 100 ms so live ticks line up with event-time windows.
    return now.replace(microsecond=(now.microsecond // 100_000) * 100_000) + timedelta(milliseconds=100)

"""Publish an event stream through a clock into a sink (Kafka or a JSONL file), recording ground truth.

    (clock) --tick--> EventStream --EventBatch--> sink (Kafka | file)        generator.sinks
                                     \\--fault started/ended--> ground truth  generator.truth

The loop is the same for live runs (wall clock, ticks of 0.1 s, waits between them) and for
simulated runs (no waiting: backfill, `--to-file`, `--max-rate`; ticks sized to about 2,000
events, between 1 s and 60 s, see `simulated_tick`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from obslab.generator.clock import SimulatedClock, WallClock
from obslab.generator.events import EventBatch, EventStream, Fault
from obslab.generator.sinks import Sink
from obslab.generator.truth import GroundTruth
from obslab.jsonform import plain


@dataclass
class RunReport:
    """What one generator run did."""

    run_id: str
    scenario: str
    seed: int
    started_at: datetime
    event_time_end: datetime | None = None
    events_sent: int = 0
    events_acked: int = 0
    events_failed: int = 0
    seconds: float = 0.0
    faults: list[dict] = field(default_factory=list)
    stopped_early: str | None = None  # why the run stopped before its duration or count
    first_error: str | None = None

    @property
    def rate(self) -> float:
        return self.events_sent / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        """The `obslab generate --json` form: every field, datetimes as ISO text, and the rate."""
        out = asdict(self)
        out["rate"] = round(self.rate, 1)
        return plain(out)

    def describe(self) -> str:
        """One line for a person: acknowledged events, rate, faults and benign events, why it stopped early."""
        benign = sum(1 for f in self.faults if f["benign"])
        return (f"run {self.run_id}: {self.events_acked:,} of {self.events_sent:,} events acknowledged in "
                f"{self.seconds:.1f} s ({self.rate:,.0f}/s); {len(self.faults) - benign} faults injected (cascade "
                f"effects included), {benign} benign events"
                + (f"; stopped early: {self.stopped_early}" if self.stopped_early else ""))

    def progress_line(self) -> str:
        """The running count a terminal shows while the run goes on."""
        faults = sum(1 for f in self.faults if not f["benign"])
        return f"{self.events_sent:>10,} events  {self.rate:>9,.1f}/s  {faults} faults done"


def publish_events(
    stream: EventStream,
    clock: WallClock | SimulatedClock,
    sink: Sink,
    truth: GroundTruth | None,
    duration_s: float | None = None,
    count: int | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[RunReport], None] | None = None,
    tick_seconds: float | None = None,
) -> RunReport:
    """Generate until the duration (in event time) or count is reached, or `stop` is set.

    Always flushes the sink before returning, and closes the ground truth of faults still active.
    """
    if duration_s is None and count is None:
        raise ValueError("give a duration or a count (or both)")
    stop = stop or threading.Event()
    tick = tick_seconds or (simulated_tick(stream.rate) if clock.simulated else 0.1)
    report = RunReport(stream.run_id, stream.scenario.name, stream.seed, stream.start)
    t = stream.start
    end = stream.start + timedelta(seconds=duration_s) if duration_s is not None else None
    wall0 = time.monotonic()
    last_progress = wall0
    sent0, failed0 = sink.sent, sink.failed  # a sink may be shared with an earlier run (backfill)
    open_faults: dict[str, Fault] = {}
    if truth:
        truth.begin(stream.services)
    try:
        while not stop.is_set():
            if end is not None and t >= end:
                break
            if count is not None and report.events_sent >= count:
                break
            span = tick if end is None else min(tick, (end - t).total_seconds())
            clock.sleep_until(t + timedelta(seconds=span))
            batch = stream.tick(t, span)
            if count is not None and report.events_sent + len(batch) > count:
                batch = _truncate(batch, count - report.events_sent)
            for fault in batch.started:
                open_faults[fault.fault_id] = fault
                if truth:
                    truth.started(fault)
            sink.send(batch)
            report.events_sent = sink.sent - sent0
            for fault in batch.ended:
                open_faults.pop(fault.fault_id, None)
                if truth:
                    truth.ended(fault, fault.end)
                report.faults.append(_fault_summary(fault, fault.end))
            if truth:
                truth.flush()  # what a held store kept waiting, if anything
            t += timedelta(seconds=span)
            if sink.failed:
                report.stopped_early = "the broker stopped acknowledging events"
                break
            now = time.monotonic()
            if progress and now - last_progress >= 1.0:
                report.seconds = now - wall0
                progress(report)
                last_progress = now
        if stop.is_set():
            report.stopped_early = report.stopped_early or "stopped by signal"
    finally:
        sink.flush()
        report.event_time_end = t
        report.seconds = time.monotonic() - wall0
        report.events_sent = sink.sent - sent0
        report.events_failed = sink.failed - failed0
        report.events_acked = report.events_sent - report.events_failed
        report.first_error = sink.first_error
        # Faults cut short by the end of the run end when the run ended.
        for fault in open_faults.values():
            closed_at = min(fault.end, t)
            if truth:
                truth.ended(fault, closed_at)
            report.faults.append(_fault_summary(fault, closed_at))
        if truth:
            truth.flush(final=True)
    return report


def simulated_tick(rate: float) -> float:
    """Tick length in simulated time: about 2,000 events a tick (1 s to 60 s), so per-tick cost stays small."""
    return max(1.0, min(60.0, 2000.0 / rate))


def _fault_summary(fault: Fault, end: datetime) -> dict:
    return {"fault_id": fault.fault_id, "type": fault.type, "service": fault.service, "endpoint": fault.endpoint,
            "start": fault.start.isoformat(), "end": end.isoformat(), "magnitude": fault.magnitude,
            "benign": fault.benign, "root_cause": fault.root_cause or fault.service,
            "cause_fault_id": fault.cause_fault_id}


def _truncate(batch: EventBatch, n: int) -> EventBatch:
    return EventBatch(batch.event_ids[:n], batch.times_ms[:n], batch.endpoint_index[:n], batch.latency_ms[:n],
                      batch.status_code[:n], batch.started, batch.ended, endpoints=batch.endpoints)


def backfill_stream(stream: EventStream, minutes: float) -> EventStream:
    """A history of `minutes` before the stream's start, with the same services and traffic (rhythm and
    noise included) but no fault and no benign event."""
    clean = stream.scenario.model_copy(update={"faults": [], "benign": [], "random": stream.scenario.random.model_copy(
        update={"anomaly_probability": 0.0})})
    return EventStream(clean, stream.seed + 1_000_003, stream.start - timedelta(minutes=minutes), stream.rate)

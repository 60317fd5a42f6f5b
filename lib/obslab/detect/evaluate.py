"""Detection quality against the generator's ground truth: precision, recall, time to detect.

How one evaluation runs (all in a scratch store of its own, never the lab's):

    scenario --EventStream, simulated time--> events (JSONL) + injected_incidents (ground truth)
      --Spark: parse_events, with_window, batch_outcome (the stream's transform, static form)-->
         partials split by trigger interval: what each live micro-batch would have held
      --replay, one interval at a time--> StreamSink.merge (the stream's sink) -> run_detection
      --> incidents matched to injected faults

An event from second e of the run reaches the live store in the micro-batch that starts at the
next trigger boundary; that batch is assumed to take up to one more trigger interval to commit,
and the detector, polling every DETECT_POLL_SECONDS, may see it up to one poll later. So a
detection made on the data of the interval ending at T is recorded at

    T + TRIGGER_SECONDS + DETECT_POLL_SECONDS        (an upper bound of the live delay)

and time to detect (TTD) = that time - the fault's start. Open windows are judged as they fill,
exactly as `obslab detect` sees them between triggers.

Matching: an incident matches a fault when it is on the fault's service, of a kind the fault
type causes (FAULT_KINDS), and its anomalous windows overlap the fault (the first starts before
the fault ends, the last ends after it starts). A fault is detected when an incident matches it,
and is reported with every incident that matches it. One fault should raise one incident: the
first of them to be detected counts, and every other incident is a false incident, whether it
matches no fault or only faults an earlier incident already detected (`duplicate`).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import median

from obslab.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Which incident kinds each fault type is expected to cause.
FAULT_KINDS = {"error_surge": {"errors"}, "endpoint_outage": {"errors"}, "latency_spike": {"latency"},
               "latency_degradation": {"latency"}, "traffic_drop": {"traffic"}}

# Fixed start of the simulated run (a Monday, on a window boundary): the same inputs give the same report.
EVALUATION_START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


@dataclass
class FaultResult:
    type: str
    service: str
    endpoint: str | None
    start: datetime
    end: datetime
    detected: bool = False
    ttd_seconds: float | None = None
    incident_ids: list[str] = field(default_factory=list)


@dataclass
class IncidentResult:
    incident_id: str
    service: str
    kind: str
    opened_at: datetime
    last_anomaly_at: datetime
    first_detected_at: datetime
    early: bool  # first raised on an open (partial) window
    matched: bool = False  # the first incident detected for some fault
    duplicate: bool = False  # matches only faults that an earlier incident already detected


@dataclass
class Evaluation:
    """The report of one evaluation; `as_dict()` is the `obslab evaluate --json` contract."""

    scenario: str
    seed: int
    events_per_second: float
    duration_seconds: float
    events: int
    window_seconds: int
    trigger_seconds: float
    poll_seconds: float
    faults: list[FaultResult]
    incidents: list[IncidentResult]
    store_path: str | None
    seconds: float

    @property
    def recall(self) -> float | None:
        return sum(f.detected for f in self.faults) / len(self.faults) if self.faults else None

    @property
    def precision(self) -> float | None:
        return sum(i.matched for i in self.incidents) / len(self.incidents) if self.incidents else None

    @property
    def false_incidents(self) -> int:
        return sum(not i.matched for i in self.incidents)

    @property
    def false_incidents_per_hour(self) -> float:
        return self.false_incidents / (self.duration_seconds / 3600)

    @property
    def median_ttd_seconds(self) -> float | None:
        ttds = [f.ttd_seconds for f in self.faults if f.ttd_seconds is not None]
        return median(ttds) if ttds else None

    def as_dict(self) -> dict:
        def plain(obj: dict) -> dict:
            return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in obj.items()}

        return {
            "scenario": self.scenario, "seed": self.seed, "events_per_second": self.events_per_second,
            "duration_seconds": self.duration_seconds, "events": self.events,
            "window_seconds": self.window_seconds, "trigger_seconds": self.trigger_seconds,
            "poll_seconds": self.poll_seconds,
            "precision": self.precision, "recall": self.recall, "median_ttd_seconds": self.median_ttd_seconds,
            "false_incidents": self.false_incidents,
            "false_incidents_per_hour": round(self.false_incidents_per_hour, 3),
            "faults": [plain(asdict(f)) for f in self.faults],
            "incidents": [plain(asdict(i)) for i in self.incidents],
            "store_path": self.store_path, "seconds": round(self.seconds, 1),
        }


def evaluate(scenario: str | Path, settings: Settings | None = None, seed: int | None = None,
             events_per_second: float | None = None, minutes: float | None = None, spark=None,
             workdir: Path | None = None, keep_store: bool = True) -> Evaluation:
    """Generate, aggregate, replay and detect one scenario; match incidents to the injected faults.

    The scratch store is left in `workdir` (default DATA_DIR/runs/evaluate-<scenario>-<seed>) for
    notebooks to plot, unless `keep_store` is false.
    """
    from obslab.generator.clock import SimulatedClock
    from obslab.generator.events import EventStream
    from obslab.generator.producer import FileSink, StoreGroundTruth, run_stream
    from obslab.generator.scenario import load_scenario
    from obslab.store import Store

    started = time.monotonic()
    base = settings or get_settings()
    plan = load_scenario(scenario)
    seed = base.seed if seed is None else seed
    workdir = workdir or base.data_dir / "runs" / f"evaluate-{plan.name}-{seed}"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    s = base.model_copy(update={"data_dir": workdir, "duckdb_path": workdir / "evaluation.duckdb"})
    store = Store.from_settings(s)
    store.migrate()

    stream = EventStream(plan, seed, EVALUATION_START, events_per_second)
    duration = minutes * 60 if minutes is not None else plan.duration_seconds
    events_file = workdir / "events.jsonl"
    sink = FileSink(events_file)
    try:
        report = run_stream(stream, SimulatedClock(EVALUATION_START), sink,
                            StoreGroundTruth(store, stream.run_id, plan.name), duration_s=duration)
    finally:
        sink.close()
    partials, dead = _interval_partials(spark, events_file, s)
    events_file.unlink()
    with store.held():
        _replay(store, s, partials, dead)
        faults, incidents = match_incidents(store)
    result = Evaluation(plan.name, seed, stream.rate, duration, report.events_sent, s.window_seconds,
                        s.trigger_seconds, s.detect_poll_seconds, faults, incidents,
                        str(s.duckdb_path) if keep_store else None, time.monotonic() - started)
    if not keep_store:
        shutil.rmtree(workdir)
    return result


def _interval_partials(spark, events_file: Path, s: Settings):
    """(partials with an `interval` column, dead letters) of the events, by the stream's transform."""
    from pyspark.sql import functions as F

    from obslab.stream.session import build_session
    from obslab.stream.transform import batch_outcome, parse_events, split_outcome, with_window

    spark = spark or build_session(s, app_name="obslab-evaluate")
    raw = spark.read.text(str(events_file)).select(
        F.lit(s.topic_raw_events).alias("topic"), F.lit(0).alias("partition"),
        F.monotonically_increasing_id().alias("offset"), F.col("value"))
    framed = with_window(parse_events(raw), s.window_seconds)
    trigger_micros = int(round(s.trigger_seconds * 1_000_000))
    framed = framed.withColumn("interval", F.floor(F.unix_micros("event_time") / F.lit(trigger_micros)))
    partials, dead = split_outcome(batch_outcome(framed, extra_keys=("interval",)).toArrow(), ("interval",))
    return partials.sort_by("interval"), dead


def _replay(store, s: Settings, partials, dead) -> None:
    """Merge the partials one trigger interval at a time with the stream's sink, detecting after each."""
    import numpy as np

    from obslab.detect.run import run_detection
    from obslab.stream.sink import StreamSink

    sink = StreamSink(store, s, "evaluation", publish=False)
    delay = timedelta(seconds=s.trigger_seconds + s.detect_poll_seconds)
    intervals = partials["interval"].to_numpy()
    bounds = np.flatnonzero(np.diff(intervals)) + 1
    starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(intervals)]])
    columns = [c for c in partials.column_names if c != "interval"]
    batch_id = 0
    for lo, hi in zip(starts, ends):
        batch = partials.slice(lo, hi - lo)
        interval_end = _interval_end(int(intervals[lo]), s.trigger_seconds)
        sink.merge(batch_id, batch.select(columns), dead if batch_id == 0 else dead.slice(0, 0))
        run_detection(store, s, now=interval_end + delay)
        batch_id += 1
    # The end of the input: every window is final (the live stream's watermark would get there).
    sink.merge(batch_id, partials.slice(0, 0).select(columns), dead.slice(0, 0), finalize_all=True)
    last = _interval_end(int(intervals[-1]), s.trigger_seconds) if len(intervals) else EVALUATION_START
    run_detection(store, s, now=last + delay)


def _interval_end(interval: int, trigger_seconds: float) -> datetime:
    return datetime.fromtimestamp((interval + 1) * trigger_seconds, tz=timezone.utc)


def match_incidents(store) -> tuple[list[FaultResult], list[IncidentResult]]:
    """The injected faults and the incidents of a store, matched (see the module's docstring)."""
    faults = [FaultResult(*row) for row in store.query(
        "SELECT fault_type, service, endpoint, start_time, end_time FROM injected_incidents ORDER BY start_time")]
    incidents = [IncidentResult(*row) for row in store.query("""
        SELECT i.incident_id, i.service, i.kind, i.opened_at, i.last_anomaly_at,
               min(a.detected_at), arg_min(a.used_partial_window, a.detected_at)
        FROM incidents i JOIN anomalies a USING (incident_id)
        GROUP BY ALL ORDER BY i.opened_at, i.service, i.kind""")]
    detections = store.query("SELECT incident_id, window_end, detected_at FROM anomalies")
    for f in faults:
        matching = sorted((i for i in incidents if i.service == f.service and i.kind in FAULT_KINDS[f.type]
                           and i.opened_at < f.end and i.last_anomaly_at > f.start),
                          key=lambda i: (i.first_detected_at, i.opened_at))
        f.incident_ids = [i.incident_id for i in matching]
        if matching:
            matching[0].matched = True
        # The first anomaly of a matching incident raised after the fault began, in a window it reaches.
        times = [at for incident_id, window_end, at in detections
                 if incident_id in f.incident_ids and window_end > f.start and at >= f.start]
        if times:
            f.detected = True
            f.ttd_seconds = (min(times) - f.start).total_seconds()
    reported = {incident_id for f in faults for incident_id in f.incident_ids}
    for i in incidents:
        i.duplicate = not i.matched and i.incident_id in reported
    return faults, incidents


def timeline_chart(report: Evaluation):
    """Per service: injected faults as bands, the first detection of each incident as a mark
    (filled when it matched a fault, a cross when it was false). An Altair chart."""
    import altair as alt
    import pandas as pd

    services = sorted({f.service for f in report.faults} | {i.service for i in report.incidents}) or ["-"]
    bands = pd.DataFrame([{"service": f.service, "start": f.start, "end": f.end, "fault": f.type,
                           "detected": f.detected, "ttd_seconds": f.ttd_seconds} for f in report.faults],
                         columns=["service", "start", "end", "fault", "detected", "ttd_seconds"])
    marks = pd.DataFrame([{"service": i.service, "detected_at": i.first_detected_at, "incident": i.incident_id,
                           "kind": i.kind, "result": "matched a fault" if i.matched else "false incident",
                           "early": i.early} for i in report.incidents],
                         columns=["service", "detected_at", "incident", "kind", "result", "early"])
    scale = alt.Scale(domain=[EVALUATION_START, EVALUATION_START + timedelta(seconds=report.duration_seconds)])
    y = alt.Y("service:N", sort=services, title=None)
    fault_layer = alt.Chart(bands).mark_bar(opacity=0.35, height=28).encode(
        x=alt.X("start:T", scale=scale, title="event time (UTC)"), x2="end:T", y=y,
        color=alt.Color("fault:N", title="injected fault"),
        tooltip=["fault", "service", "start:T", "end:T", "detected", "ttd_seconds"])
    mark_layer = alt.Chart(marks).mark_point(size=120, filled=True, color="black").encode(
        x="detected_at:T", y=y,
        shape=alt.Shape("result:N", scale=alt.Scale(domain=["matched a fault", "false incident"],
                                                    range=["triangle-down", "cross"]), title="detection"),
        tooltip=["incident", "kind", "detected_at:T", "early", "result"])
    return (fault_layer + mark_layer).properties(
        width=760, height=60 * len(services),
        title=f"{report.scenario}: faults (bands) and first detections (marks)")

"""Detection quality against the generator's ground truth: recall, precision, time to detect, per fault type.

It drives the generator, the stream's transform and sink, and detection, so it belongs to none of them.

How an evaluation runs (each run in a scratch store of its own, never the lab's):

    scenario --EventStream, simulated time--> events (JSONL) + injected_incidents, service_catalog
      --Spark, ONE job for every run of a batch: parse_events, with_window, batch_outcome (the
        stream's transform, static form)--> partials keyed by (run, trigger interval): what each
        live micro-batch of each run would have held
      --window_versions--> per run: the endpoint and service windows exactly as the stream's sink
        leaves them after each micro-batch (running sums, histogram percentiles, watermark)
      --replay, one interval at a time--> those rows into the store -> run_detection (timed)
      --> incidents matched to the injected faults and benign events

`replay="sink"` merges each interval through the stream's sink itself (`StreamSink.merge`) instead
of writing the precomputed rows: the same windows (a test checks that both replays raise the same
anomalies at the same times), in about twice the time. The versions path computes what the
sink would write in one pass: running sums per window, percentiles with the sink's own SQL over
the running histograms, windows final once the watermark (newest event - WATERMARK_SECONDS) passes
their end, endpoint names beyond ENDPOINT_MAX_PER_SERVICE folded into `other` in the sink's order.

Timing. An event of second e reaches the live store in the micro-batch that starts at the next
trigger boundary; that batch is assumed to take up to one more trigger interval to commit, and
the detector, polling every DETECT_POLL_SECONDS, may start its run up to one poll later. The run
itself takes time too: the replay measures the wall time of every run_detection call. So a
detection made on the data of the interval ending at T is dated

    T + TRIGGER_SECONDS + DETECT_POLL_SECONDS + (wall time of that detection run)

and time to detect (TTD) = that time - the fault's start. Open windows are judged as they fill,
exactly as `obslab detect` sees them between triggers. At the end of the input every window is
made final (the live watermark would get there) and detection runs once more, dated like a
micro-batch one interval after the last.

Matching. Ground-truth rows with `benign` are not faults: they are the benign events (flash
crowds, drifts, deploy blips) that should not page. Every other row is a fault to detect, a
cascade's effect on a caller included (its `cause_fault_id` names the root fault). An incident
matches a fault when it is on the fault's service, of a kind the fault type causes (FAULT_KINDS),
and its anomalous windows overlap the fault (the first starts before the fault ends, the last ends
after it starts). A fault is detected when an incident matches it, and is reported with every
incident that matches it; one fault should raise one incident: the first of them to be detected
counts (`matched`), each other one is false (`duplicate`). Every incident that is neither is false
and gets a cause: `benign` (it overlaps a benign event on its service, in any kind: a benign event
that paged), `other_kind` (it overlaps a fault on its service of a kind that fault does not cause)
or `spurious` (nothing at all).

Root cause. A cascade is a root fault with at least one effect row. It is named correctly when at
least one incident matched its rows and every incident matched to the root or to an effect has
origin_service = the root's root_cause; a cascade nobody detected counts as not named.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Callable

from obslab.jsonform import plain
from obslab.settings import Settings

if TYPE_CHECKING:
    from obslab.generator.scenario import Scenario

log = logging.getLogger(__name__)

# Which incident kinds each fault type is expected to cause.
FAULT_KINDS = {"error_surge": {"errors"}, "endpoint_outage": {"errors"}, "latency_spike": {"latency"},
               "latency_degradation": {"latency"}, "traffic_drop": {"traffic"}}

# The per-type row under which a cascade's effects (faults on a caller) are reported.
CASCADE_EFFECT = "cascade_effect"

# Fixed start of the simulated run (a Monday, on a window boundary): the same inputs give the same report.
EVALUATION_START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


@dataclass
class FaultResult:
    fault_id: str
    type: str
    service: str
    endpoint: str | None
    start: datetime
    end: datetime
    magnitude: float | None = None
    root_cause: str | None = None
    cause_fault_id: str | None = None  # set on a cascade's effect: the root fault's id
    detected: bool = False
    ttd_seconds: float | None = None
    incident_ids: list[str] = field(default_factory=list)
    detectors: list[str] = field(default_factory=list)  # detectors with an anomaly in it (matching incidents)


@dataclass
class BenignResult:
    fault_id: str
    type: str
    service: str
    start: datetime
    end: datetime
    magnitude: float | None = None
    paged: bool = False  # an incident that matches no fault overlaps it on its service
    incident_ids: list[str] = field(default_factory=list)


@dataclass
class IncidentResult:
    incident_id: str
    service: str
    kind: str
    opened_at: datetime
    last_anomaly_at: datetime
    first_detected_at: datetime  # including the wall time of the detection run that raised it
    early: bool  # first raised on an open (partial) window
    origin_service: str | None = None
    matched: bool = False  # the first incident detected for some fault
    duplicate: bool = False  # matches only faults that an earlier incident already detected
    cause: str = "spurious"  # fault | duplicate | benign | other_kind | spurious


@dataclass
class CascadeResult:
    root_fault_id: str
    root_cause: str
    effect_fault_ids: list[str]
    origins: dict[str, str | None]  # incident id -> origin_service, for every incident matched to it
    correct: bool


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
    benign: list[BenignResult] = field(default_factory=list)
    cascades: list[CascadeResult] = field(default_factory=list)
    detect_run_seconds: list[float] = field(default_factory=list)  # wall time of every run_detection call

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

    @property
    def benign_paged(self) -> int:
        return sum(b.paged for b in self.benign)

    @property
    def root_cause_accuracy(self) -> float | None:
        return sum(c.correct for c in self.cascades) / len(self.cascades) if self.cascades else None

    def as_dict(self) -> dict:
        pooled = pool([self])
        return plain({
            "scenario": self.scenario, "seed": self.seed, "events_per_second": self.events_per_second,
            "duration_seconds": self.duration_seconds, "events": self.events,
            "window_seconds": self.window_seconds, "trigger_seconds": self.trigger_seconds,
            "poll_seconds": self.poll_seconds,
            "precision": self.precision, "recall": self.recall, "median_ttd_seconds": self.median_ttd_seconds,
            "p90_ttd_seconds": pooled["overall"]["p90_ttd_seconds"],
            "false_incidents": self.false_incidents,
            "false_incidents_per_hour": round(self.false_incidents_per_hour, 3),
            "benign_events": len(self.benign), "benign_paged": self.benign_paged,
            "root_cause_accuracy": self.root_cause_accuracy,
            "by_type": pooled["by_type"], "false_by_cause": pooled["overall"]["false_by_cause"],
            "detect_run_seconds": _spread(self.detect_run_seconds),
            "faults": self.faults, "benign": self.benign, "cascades": self.cascades, "incidents": self.incidents,
            "store_path": self.store_path, "seconds": round(self.seconds, 1),
        })

    def describe(self, each_fault: bool = False) -> str:
        """For a person: the summary line, after one line per fault, benign event, cascade and false
        incident when `each_fault`."""
        lines = []
        if each_fault:
            for f in self.faults:
                where = f.service + (f" {f.endpoint}" if f.endpoint else "")
                found = f"detected after {f.ttd_seconds:g} s" if f.detected else "MISSED"
                effect = f" (effect of {f.cause_fault_id})" if f.cause_fault_id else ""
                lines.append(f"{f.start:%H:%M:%S}  {f.type:<20} {where:<26} {found}{effect}")
            for b in self.benign:
                lines.append(f"{b.start:%H:%M:%S}  benign {b.type:<13} {b.service:<26} "
                             f"{'PAGED: ' + ', '.join(b.incident_ids) if b.paged else 'did not page'}")
            for c in self.cascades:
                named = ", ".join(f"{i} -> {o or 'none'}" for i, o in c.origins.items()) or "no incident"
                lines.append(f"cascade {c.root_fault_id} from {c.root_cause}: root cause "
                             f"{'named' if c.correct else 'NOT named'} ({named})")
            lines += [f"{i.opened_at:%H:%M:%S}  false incident {i.incident_id} ({i.cause})"
                      for i in self.incidents if not i.matched]
        ttd = self.median_ttd_seconds
        lines.append(f"{self.scenario} (seed {self.seed}, {self.events:,} events, {self.duration_seconds / 60:g} min): "
                     f"recall {_pct(self.recall)}, precision {_pct(self.precision)}, median time to detect "
                     f"{'n/a' if ttd is None else f'{ttd:g} s'}, {self.false_incidents} false incidents "
                     f"({self.false_incidents_per_hour:g}/h), benign events paged {self.benign_paged} of "
                     f"{len(self.benign)}; store: {self.store_path or 'not kept'}")
        return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


# ------------------------------------------------------------------ pooled figures


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (the value at rank ceil(q * n)): a value that occurred, never an interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _spread(values: list[float]) -> dict:
    return {"runs": len(values), "median": _quantile(values, 0.5), "p90": _quantile(values, 0.9),
            "max": max(values) if values else None}


def fault_group(f: FaultResult) -> str:
    """The per-type row a fault is reported under: its type, or CASCADE_EFFECT for a cascade's effect."""
    return CASCADE_EFFECT if f.cause_fault_id else f.type


def pool(reports: list[Evaluation]) -> dict:
    """Figures pooled over evaluations: per fault type, per benign type, and overall.

    Per fault type: recall; median and p90 TTD (nearest rank); incidents per detected fault
    (fragmentation: 1 is ideal); precision = the type's first incidents / (those + their
    duplicates + the false incidents of the kind the type causes that are not duplicates). A false
    incident of a kind is charged to every type causing that kind, so per-type precision can only
    be lower than a split would give; the overall precision counts each incident once.
    """
    faults = [f for r in reports for f in r.faults]
    incidents = {(n, i.incident_id): i for n, r in enumerate(reports) for i in r.incidents}
    owner: dict[tuple[int, str], str] = {}  # (report, incident) -> group of the fault it is first or extra for
    for n, r in enumerate(reports):
        for f in r.faults:
            for incident_id in f.incident_ids:
                owner.setdefault((n, incident_id), fault_group(f))
    unexplained = {}  # kind -> false incidents that are no fault's duplicate
    for i in incidents.values():
        if i.cause not in ("fault", "duplicate"):
            unexplained[i.kind] = unexplained.get(i.kind, 0) + 1
    by_type = {}
    for group in sorted({fault_group(f) for f in faults}):
        mine = [f for f in faults if fault_group(f) == group]
        detected = [f for f in mine if f.detected]
        ttds = [f.ttd_seconds for f in detected if f.ttd_seconds is not None]
        first = sum(1 for key, i in incidents.items() if i.matched and owner.get(key) == group)
        extra = sum(1 for key, i in incidents.items() if i.duplicate and owner.get(key) == group)
        kinds = set().union(*(FAULT_KINDS[f.type] for f in mine))
        charged = sum(unexplained.get(k, 0) for k in kinds)
        by_type[group] = {
            "faults": len(mine), "detected": len(detected),
            "recall": len(detected) / len(mine),
            "precision": first / (first + extra + charged) if first + extra + charged else None,
            "median_ttd_seconds": _quantile(ttds, 0.5), "p90_ttd_seconds": _quantile(ttds, 0.9),
            "incidents_per_fault": (sum(len(f.incident_ids) for f in detected) / len(detected)) if detected else None,
            "max_incidents_per_fault": max((len(f.incident_ids) for f in detected), default=None),
            "duplicates": extra, "false_of_kind": charged,
        }
    benign = [b for r in reports for b in r.benign]
    by_benign = {}
    for kind in sorted({b.type for b in benign}):
        mine = [b for b in benign if b.type == kind]
        by_benign[kind] = {"events": len(mine), "paged": sum(b.paged for b in mine),
                           "incidents": len({i for b in mine for i in b.incident_ids})}
    cascades = [c for r in reports for c in r.cascades]
    causes = {}
    for i in incidents.values():
        if not i.matched:
            causes[i.cause] = causes.get(i.cause, 0) + 1
    ttds = [f.ttd_seconds for f in faults if f.ttd_seconds is not None]
    warm = [f for r in reports for f in r.faults if f.start >= warmed_up(r.window_seconds)]
    hours = sum(r.duration_seconds for r in reports) / 3600
    n_incidents = len(incidents)
    matched = sum(i.matched for i in incidents.values())
    overall = {
        "runs": len(reports), "simulated_hours": round(hours, 3), "events": sum(r.events for r in reports),
        "faults": len(faults), "detected": sum(f.detected for f in faults),
        "recall": sum(f.detected for f in faults) / len(faults) if faults else None,
        # faults that began once a series could have a calibrated baseline, and the recall on them
        "faults_after_warm_up": len(warm),
        "recall_after_warm_up": sum(f.detected for f in warm) / len(warm) if warm else None,
        "incidents": n_incidents, "precision": matched / n_incidents if n_incidents else None,
        "false_incidents": n_incidents - matched,
        "false_incidents_per_hour": round((n_incidents - matched) / hours, 3) if hours else None,
        "false_by_cause": causes,
        "median_ttd_seconds": _quantile(ttds, 0.5), "p90_ttd_seconds": _quantile(ttds, 0.9),
        "benign_events": len(benign), "benign_paged": sum(b.paged for b in benign),
        "cascades": len(cascades), "cascades_named": sum(c.correct for c in cascades),
        "root_cause_accuracy": sum(c.correct for c in cascades) / len(cascades) if cascades else None,
        "detect_run_seconds": _spread([x for r in reports for x in r.detect_run_seconds]),
    }
    return {"overall": overall, "by_type": by_type, "benign_by_type": by_benign}


def warmed_up(window_seconds: int) -> datetime:
    """When an evaluation's series first have a calibrated baseline: the first windows learn the
    history (`min_history`) and then calibrate its noise (`min_calibration`) before anything but
    errors against their prior, an SLA or silence can be judged. A fault that starts earlier, on
    a service with no history, is counted like any other; this only says how many there were."""
    from obslab.detect.detectors import DetectorConfig

    cfg = DetectorConfig()
    return EVALUATION_START + timedelta(seconds=window_seconds * (cfg.min_history + cfg.min_calibration))


def type_table(pooled: dict) -> str:
    """The per-type figures of `pool()` as a markdown table (what `obslab evaluate` and the bench print)."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f} %"

    def sec(x):
        return "-" if x is None else f"{x:.1f} s"

    def ms(x):
        return "-" if x is None else f"{1000 * x:.0f} ms"

    lines = ["| fault type | faults | recall | precision | median TTD | p90 TTD | incidents per fault | "
             "duplicates | false of its kind |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for group, t in pooled["by_type"].items():
        frag = "-" if t["incidents_per_fault"] is None else f"{t['incidents_per_fault']:.2f}"
        lines.append(f"| {group} | {t['faults']} | {pct(t['recall'])} | {pct(t['precision'])} | "
                     f"{sec(t['median_ttd_seconds'])} | {sec(t['p90_ttd_seconds'])} | {frag} | {t['duplicates']} | "
                     f"{t['false_of_kind']} |")
    o = pooled["overall"]
    lines.append(f"| **all** | {o['faults']} | {pct(o['recall'])} | {pct(o['precision'])} | "
                 f"{sec(o['median_ttd_seconds'])} | {sec(o['p90_ttd_seconds'])} | | | {o['false_incidents']} false |")
    benign = ", ".join(f"{k} {v['paged']}/{v['events']}" for k, v in pooled["benign_by_type"].items()) or "none"
    causes = ", ".join(f"{k} {v}" for k, v in sorted(o["false_by_cause"].items())) or "none"
    run = o["detect_run_seconds"]
    lines += ["", f"benign events that paged: {o['benign_paged']} of {o['benign_events']} ({benign}); "
                  f"false incidents by cause: {causes}; root cause named in {o['cascades_named']} of {o['cascades']} "
                  f"cascades ({pct(o['root_cause_accuracy'])}); detection run: median {ms(run['median'])}, "
                  f"p90 {ms(run['p90'])}, max {ms(run['max'])} over {run['runs']} runs"]
    return "\n".join(lines)


# ------------------------------------------------------------------ running evaluations


@dataclass(frozen=True)
class EvaluationRun:
    """One evaluation to do: a scenario (shipped name, YAML path or parsed Scenario), a seed, and
    optionally another rate or length than the scenario's."""

    scenario: "str | Path | Scenario"
    seed: int
    events_per_second: float | None = None
    minutes: float | None = None


def evaluate(scenario, settings: Settings, seed: int | None = None,
             events_per_second: float | None = None, minutes: float | None = None, spark=None,
             workdir: Path | None = None, keep_store: bool = True, replay: str = "versions") -> Evaluation:
    """Generate, aggregate, replay and detect one scenario; match incidents to the injected faults.

    The scratch store is left in `workdir` (default DATA_DIR/runs/evaluate-<scenario>-<seed>) for
    notebooks to plot, unless `keep_store` is false.
    """
    from obslab.generator.scenario import load_scenario

    base = settings
    plan = _plan(scenario, load_scenario)
    seed = base.seed if seed is None else seed
    workdir = workdir or base.data_dir / "runs" / f"evaluate-{plan.name}-{seed}"
    run = EvaluationRun(plan, seed, events_per_second, minutes)
    return _evaluate_all([run], base, spark, [Path(workdir)], Path(workdir) / "events", 1, replay, keep_store)[0]


def evaluate_many(runs: list[EvaluationRun], settings: Settings, spark=None, workers: int = 1,
                  root: Path | None = None, keep_store: bool = False, replay: str = "versions",
                  progress: Callable[[int, Evaluation], None] | None = None,
                  events_dir: Path | None = None) -> list[Evaluation]:
    """Evaluate many runs with ONE Spark aggregation; generation and replays in `workers` processes.

    Returns the reports in the order of `runs`; `progress(index, report)` is called as each finishes.
    Stores go to `root` (default DATA_DIR/runs/evaluate-batch), one folder per run; the events,
    deleted once aggregated, to `events_dir` (default root/events).
    """
    from obslab.generator.scenario import load_scenario

    base = settings
    root = Path(root or base.data_dir / "runs" / "evaluate-batch")
    runs = [EvaluationRun(_plan(r.scenario, load_scenario), r.seed, r.events_per_second, r.minutes) for r in runs]
    workdirs = [root / f"{n:03d}-{r.scenario.name}-{r.seed}" for n, r in enumerate(runs)]
    return _evaluate_all(runs, base, spark, workdirs, Path(events_dir or root / "events"), workers, replay, keep_store,
                         progress)


def _plan(scenario, load_scenario):
    from obslab.generator.scenario import Scenario

    return scenario if isinstance(scenario, Scenario) else load_scenario(scenario)


def _run_settings(base: Settings, workdir: Path) -> Settings:
    return base.model_copy(update={"data_dir": workdir, "duckdb_path": workdir / "evaluation.duckdb"})


# Runs are aggregated in Spark jobs of at most this many events (one run at least): a job's partials
# are collected into this process, and the replays of one job run while Spark works on the next.
CHUNK_EVENTS = 3_000_000


def _evaluate_all(runs, base: Settings, spark, workdirs: list[Path], events_root: Path, workers: int, replay: str,
                  keep_store: bool, progress=None) -> list[Evaluation]:
    if replay not in ("versions", "sink"):
        raise ValueError(f"replay must be 'versions' or 'sink', not {replay!r}")
    started = time.monotonic()
    if events_root.exists():
        shutil.rmtree(events_root)
    jobs = [(n, run, _run_settings(base, w), events_root / f"run={n}" / "events.jsonl")
            for n, (run, w) in enumerate(zip(runs, workdirs))]
    pool_ = _worker_pool(workers) if workers > 1 and len(runs) > 1 else None
    results: list[Evaluation | None] = [None] * len(runs)
    futures = {}  # future -> run index
    try:
        generated = list(pool_.map(_generate_job, jobs)) if pool_ else [_generate_job(j) for j in jobs]
        for chunk in _chunks([g["events"] for g in generated], CHUNK_EVENTS):
            for n, (partials, dead) in zip(chunk, _aggregate(spark, events_root, base, chunk)):
                s = jobs[n][2]
                _write_arrow(s.data_dir / "partials.arrow", partials)
                _write_arrow(s.data_dir / "dead.arrow", dead)
                shutil.rmtree(events_root / f"run={n}")
                # Generation and Spark serve every run: each report carries an even share of the time
                # spent before its replay began.
                job = (n, s, replay, keep_store, generated[n], (time.monotonic() - started) / len(runs))
                if pool_:
                    futures[pool_.submit(_replay_job, job)] = n
                else:
                    results[n] = _replay_job(job)
                    if progress:
                        progress(n, results[n])
        if pool_:
            from concurrent.futures import as_completed

            for future in as_completed(futures):
                n = futures[future]
                results[n] = future.result()
                if progress:
                    progress(n, results[n])
    finally:
        if pool_:
            pool_.shutdown(cancel_futures=True)
        if events_root.exists():
            shutil.rmtree(events_root)
    return results


def _chunks(events: list[int], limit: int) -> list[list[int]]:
    """Consecutive run indices grouped so that a group holds at most `limit` events (or one run)."""
    out: list[list[int]] = []
    total = 0
    for n, count in enumerate(events):
        if not out or total + count > limit:
            out.append([])
            total = 0
        out[-1].append(n)
        total += count
    return out


def _worker_pool(workers: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent holds a JVM gateway and its threads, which a fork would copy mid-state.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _write_arrow(path: Path, table) -> None:
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _read_arrow(path: Path):
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _generate_job(job) -> dict:
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


def _aggregate(spark, events_root: Path, s: Settings, runs: list[int]):
    """[(partials with an `interval` column, dead letters)] for each of `runs`, from ONE Spark job.

    The files sit in `events_root/run=<n>/`, so Spark reads the run number as a column; it rides
    through the transform in the Kafka partition column (static input has no partitions). The
    outcome is written as Parquet, one folder per run, rather than collected: a run at 1,000
    events/s for hours has millions of partial rows, more than the driver should hold at once.
    """
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


def _replay_job(job) -> Evaluation:
    """Replay one run's intervals into its store with detection after each, then match (in a worker or not)."""
    from obslab.store import Store

    n, s, replay, keep_store, gen, spent = job
    started = time.monotonic()
    partials, dead = _read_arrow(s.data_dir / "partials.arrow"), _read_arrow(s.data_dir / "dead.arrow")
    store = Store.from_settings(s)
    with store.held():
        with store.writer() as con:
            # One thread per store: the statements are small, and the bench runs a replay per core.
            con.execute("SET threads TO 1")
        if replay == "sink":
            run_seconds = _replay_through_sink(store, s, partials, dead)
        else:
            run_seconds = _replay_versions(store, s, partials, dead)
        matched = match_incidents(store, run_seconds)
    (s.data_dir / "partials.arrow").unlink()
    (s.data_dir / "dead.arrow").unlink()
    faults, incidents, benign, cascades = matched
    report = Evaluation(gen["scenario"], gen["seed"], gen["rate"], gen["duration"], gen["events"], s.window_seconds,
                        s.trigger_seconds, s.detect_poll_seconds, faults, incidents,
                        str(s.duckdb_path) if keep_store else None, spent + time.monotonic() - started,
                        benign, cascades, list(run_seconds.values()))
    if not keep_store:
        shutil.rmtree(s.data_dir)
    return report


def _delay(s: Settings) -> timedelta:
    return timedelta(seconds=s.trigger_seconds + s.detect_poll_seconds)


def _interval_end(interval: int, trigger_seconds: float) -> datetime:
    return datetime.fromtimestamp((interval + 1) * trigger_seconds, tz=timezone.utc)


def _interval_of(t: datetime, trigger_seconds: float) -> int:
    return int(t.timestamp() // trigger_seconds)


def _timed_detection(store, s: Settings, now: datetime, run_seconds: dict) -> None:
    from obslab.detect.run import run_detection

    t0 = time.perf_counter()
    run_detection(store, s, now=now)
    run_seconds[now] = time.perf_counter() - t0


def _replay_through_sink(store, s: Settings, partials, dead) -> dict[datetime, float]:
    """Merge the partials one trigger interval at a time with the stream's sink, detecting after each.

    Returns {detection time recorded: wall seconds of that run_detection call}."""
    import numpy as np

    from obslab.stream.sink import StreamSink

    sink = StreamSink(store, s, "evaluation")
    run_seconds: dict[datetime, float] = {}
    intervals = partials["interval"].to_numpy()
    bounds = np.flatnonzero(np.diff(intervals)) + 1
    starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(intervals)]])
    columns = [c for c in partials.column_names if c != "interval"]
    batch_id = 0
    for lo, hi in zip(starts, ends):
        batch = partials.slice(lo, hi - lo)
        sink.merge(batch_id, batch.select(columns), dead if batch_id == 0 else dead.slice(0, 0))
        _timed_detection(store, s, _interval_end(int(intervals[lo]), s.trigger_seconds) + _delay(s), run_seconds)
        batch_id += 1
    # The end of the input: every window is final (the live stream's watermark would get there).
    # It is dated like a micro-batch one interval after the last one.
    sink.merge(batch_id, partials.slice(0, 0).select(columns), dead.slice(0, 0), finalize_all=True)
    last = int(intervals[-1]) + 1 if len(intervals) else _interval_of(EVALUATION_START, s.trigger_seconds)
    _timed_detection(store, s, _interval_end(last, s.trigger_seconds) + _delay(s), run_seconds)
    return run_seconds


def _replay_versions(store, s: Settings, partials, dead) -> dict[datetime, float]:
    """Write each interval's window rows (see `window_versions`) and detect after each; as `_replay_through_sink`."""
    endpoint_rows, service_rows, steps, end = window_versions(partials, s)
    if dead.num_rows:
        now = datetime.now(timezone.utc)
        store.upsert("dead_letter_events", dead.append_column(
            "received_at", _constant_timestamps(now, dead.num_rows)))
    run_seconds: dict[datetime, float] = {}
    if not steps:  # no event at all: one detection run, as at the end of an empty input
        _timed_detection(store, s, _interval_end(_interval_of(EVALUATION_START, s.trigger_seconds), s.trigger_seconds)
                         + _delay(s), run_seconds)
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
            _timed_detection(store, s, _interval_end(int(step), s.trigger_seconds) + _delay(s), run_seconds)
    finally:
        with store.writer() as con:
            con.execute("DROP TABLE IF EXISTS endpoint_metrics_versions")
            con.execute("DROP TABLE IF EXISTS service_metrics_versions")
    _write_window_details(store, s, partials)
    return run_seconds


def _write_window_details(store, s: Settings, partials) -> None:
    """The error mix of every window (status_counts), as the sink leaves it at the end of the input.
    Detection does not read it, so it is written once, after the replay; the narrator's facts do.
    (The sink drops a window's latency histogram once the window is final, and at the end of the input
    every window is.)"""
    from obslab.stream.sink import add_status_counts

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
    """The endpoint_metrics and service_metrics rows the stream's sink leaves after each micro-batch.

    `partials` are the transform's partials with an `interval` column (one micro-batch per
    interval, in order). Returns (endpoint rows, service rows, the intervals in order, END), each
    table sorted by a `step` column: the interval after whose merge the row has these values, or
    END (after the last interval) for the end-of-input merge that makes every window final. Only
    rows that change are listed: a window's values at each interval that brings it events, and
    once more when the watermark makes it final.
    """
    import duckdb
    import numpy as np
    import pyarrow as pa

    from obslab.stream.sink import _percentiles_sql

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
            tables.append(_versions_of(con, keys, end, now, _percentiles_sql))
    finally:
        con.close()
    return tables[0], tables[1], steps, end


def _versions_of(con, keys: tuple[str, ...], end: int, now: datetime, percentiles_sql):
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
    """Endpoint names beyond the per-service cap renamed OTHER_ENDPOINT, admitted as the sink admits
    them: per micro-batch, new names busiest first (ties by name), while the service has room."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from obslab.stream.sink import OTHER_ENDPOINT

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


# ------------------------------------------------------------------ matching


def match_incidents(store, run_seconds: dict[datetime, float] | None = None):
    """(faults, incidents, benign events, cascades) of a store, matched (see the module's docstring).

    `run_seconds` maps a recorded detection time to the wall time of the run that recorded it;
    that time is added to every detection the run made (none when not given).
    """
    run_seconds = run_seconds or {}
    rows = store.query("""
        SELECT fault_id, fault_type, service, endpoint, start_time, end_time, magnitude,
               coalesce(benign, false), root_cause, cause_fault_id
        FROM injected_incidents ORDER BY start_time, fault_id""")
    faults = [FaultResult(*r[:6], magnitude=r[6], root_cause=r[8] or r[2], cause_fault_id=r[9])
              for r in rows if not r[7]]
    benign = [BenignResult(r[0], r[1], r[2], r[4], r[5], magnitude=r[6]) for r in rows if r[7]]
    detections = [(incident_id, detector, window_end, at + timedelta(seconds=run_seconds.get(at, 0.0)), partial)
                  for incident_id, detector, window_end, at, partial in store.query(
                      "SELECT incident_id, detector, window_end, detected_at, used_partial_window FROM anomalies")]
    first: dict[str, tuple[datetime, bool]] = {}
    for incident_id, _, _, at, partial in detections:
        if incident_id not in first or at < first[incident_id][0]:
            first[incident_id] = (at, partial)
    incidents = [IncidentResult(incident_id, service, kind, opened, last, *first[incident_id], origin_service=origin)
                 for incident_id, service, kind, opened, last, origin in store.query(
                     "SELECT incident_id, service, kind, opened_at, last_anomaly_at, origin_service FROM incidents "
                     "ORDER BY opened_at, service, kind") if incident_id in first]

    def overlaps(i: IncidentResult, start: datetime, end: datetime) -> bool:
        return i.opened_at < end and i.last_anomaly_at > start

    for f in faults:
        matching = sorted((i for i in incidents if i.service == f.service and i.kind in FAULT_KINDS[f.type]
                           and overlaps(i, f.start, f.end)), key=lambda i: (i.first_detected_at, i.opened_at))
        f.incident_ids = [i.incident_id for i in matching]
        if matching:
            matching[0].matched = True
        # The first anomaly of a matching incident raised after the fault began, in a window it reaches.
        mine = [(detector, at) for incident_id, detector, window_end, at, _ in detections
                if incident_id in f.incident_ids and window_end > f.start and at >= f.start]
        if mine:
            f.detected = True
            f.ttd_seconds = round((min(at for _, at in mine) - f.start).total_seconds(), 3)
            f.detectors = sorted({detector for detector, _ in mine})
    reported = {incident_id for f in faults for incident_id in f.incident_ids}
    for i in incidents:
        i.duplicate = not i.matched and i.incident_id in reported
        if i.matched or i.duplicate:
            i.cause = "fault" if i.matched else "duplicate"
        elif any(b.service == i.service and overlaps(i, b.start, b.end) for b in benign):
            i.cause = "benign"
        elif any(f.service == i.service and overlaps(i, f.start, f.end) for f in faults):
            i.cause = "other_kind"
    for b in benign:
        b.incident_ids = [i.incident_id for i in incidents
                          if i.cause == "benign" and i.service == b.service and overlaps(i, b.start, b.end)]
        b.paged = bool(b.incident_ids)
    return faults, incidents, benign, _cascades(faults, incidents)


def _cascades(faults: list[FaultResult], incidents: list[IncidentResult]) -> list[CascadeResult]:
    origin = {i.incident_id: i.origin_service for i in incidents}
    out = []
    for root in faults:
        effects = [f for f in faults if f.cause_fault_id == root.fault_id]
        if not effects or root.cause_fault_id:
            continue
        named = {incident_id: origin[incident_id] for f in [root, *effects] for incident_id in f.incident_ids}
        cause = root.root_cause or root.service
        out.append(CascadeResult(root.fault_id, cause, [f.fault_id for f in effects], named,
                                 bool(named) and all(o == cause for o in named.values())))
    return out


# ------------------------------------------------------------------ chart


def timeline_chart(report: Evaluation):
    """Per service: injected faults as bands (benign events grey), the first detection of each incident
    as a mark (filled when it matched a fault, a cross when it was false). An Altair chart."""
    import altair as alt
    import pandas as pd

    services = sorted({f.service for f in report.faults} | {b.service for b in report.benign}
                      | {i.service for i in report.incidents}) or ["-"]
    bands = pd.DataFrame([{"service": f.service, "start": f.start, "end": f.end, "fault": f.type,
                           "detected": f.detected, "ttd_seconds": f.ttd_seconds} for f in report.faults]
                         + [{"service": b.service, "start": b.start, "end": b.end, "fault": f"benign: {b.type}",
                             "detected": b.paged, "ttd_seconds": None} for b in report.benign],
                         columns=["service", "start", "end", "fault", "detected", "ttd_seconds"])
    marks = pd.DataFrame([{"service": i.service, "detected_at": i.first_detected_at, "incident": i.incident_id,
                           "kind": i.kind, "result": "matched a fault" if i.matched else "false incident",
                           "cause": i.cause, "early": i.early} for i in report.incidents],
                         columns=["service", "detected_at", "incident", "kind", "result", "cause", "early"])
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
        tooltip=["incident", "kind", "detected_at:T", "early", "result", "cause"])
    return (fault_layer + mark_layer).properties(
        width=760, height=60 * len(services),
        title=f"{report.scenario}: faults (bands) and first detections (marks)")

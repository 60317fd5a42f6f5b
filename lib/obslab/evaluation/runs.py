"""The driver: generate every run, aggregate them in Spark, replay each with detection, and match."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from obslab.evaluation.matching import in_time_allowance, match_incidents
from obslab.evaluation.replay import aggregate_with, generate, read_arrow, replay, write_arrow
from obslab.evaluation.results import Evaluation
from obslab.settings import Settings

if TYPE_CHECKING:
    from obslab.generator.scenario import Scenario

# Runs are aggregated in Spark jobs of at most this many events (one run at least): a job's partials
# are collected into this process, and the replays of one job run while Spark works on the next.
CHUNK_EVENTS = 3_000_000


@dataclass(frozen=True)
class EvaluationRun:
    """One evaluation to do: a scenario (shipped name, YAML path or parsed Scenario), a seed, and optionally
    another rate or length than the scenario's."""

    scenario: "str | Path | Scenario"
    seed: int
    events_per_second: float | None = None
    minutes: float | None = None


def evaluate(scenario, settings: Settings, seed: int | None = None, events_per_second: float | None = None,
             minutes: float | None = None, spark=None, workdir: Path | None = None, keep_store: bool = True,
             replay: str = "versions", aggregator: str = "spark") -> Evaluation:
    """Evaluate one scenario; its store stays in `workdir` (default DATA_DIR/runs/evaluate-<scenario>-<seed>).
    `aggregator`: spark (the stream's own transform) or duckdb (its SQL twin, no JVM)."""
    seed = settings.seed if seed is None else seed
    run = EvaluationRun(_plan(scenario), seed, events_per_second, minutes)
    workdir = Path(workdir or settings.data_dir / "runs" / f"evaluate-{run.scenario.name}-{seed}")
    return _evaluate_all([run], settings, spark, [workdir], workdir / "events", 1, replay, keep_store,
                         aggregator=aggregator)[0]


def evaluate_many(runs: list[EvaluationRun], settings: Settings, spark=None, workers: int = 1,
                  root: Path | None = None, keep_store: bool = False, replay: str = "versions",
                  progress: Callable[[int, Evaluation], None] | None = None,
                  events_dir: Path | None = None) -> list[Evaluation]:
    """Evaluate many runs with ONE Spark aggregation, in order; `progress(index, report)` as each finishes."""
    root = Path(root or settings.data_dir / "runs" / "evaluate-batch")
    runs = [EvaluationRun(_plan(r.scenario), r.seed, r.events_per_second, r.minutes) for r in runs]
    workdirs = [root / f"{n:03d}-{r.scenario.name}-{r.seed}" for n, r in enumerate(runs)]
    return _evaluate_all(runs, settings, spark, workdirs, Path(events_dir or root / "events"), workers, replay,
                         keep_store, progress)


def _evaluate_all(runs, base: Settings, spark, workdirs: list[Path], events_root: Path, workers: int, replay: str,
                  keep_store: bool, progress=None, aggregator: str = "spark") -> list[Evaluation]:
    if replay not in ("versions", "sink"):
        raise ValueError(f"replay must be 'versions' or 'sink', not {replay!r}")
    started = time.monotonic()
    if events_root.exists():
        shutil.rmtree(events_root)
    jobs = [(n, run, _run_settings(base, w), events_root / f"run={n}" / "events.jsonl")
            for n, (run, w) in enumerate(zip(runs, workdirs))]
    workers_ = _worker_pool(workers) if workers > 1 and len(runs) > 1 else None
    results: list[Evaluation | None] = [None] * len(runs)
    futures = {}  # future -> run index

    def done(n: int, report: Evaluation) -> None:
        results[n] = report
        if progress:
            progress(n, report)

    try:
        generated = list(workers_.map(generate, jobs)) if workers_ else [generate(j) for j in jobs]
        for chunk in _chunks([g["events"] for g in generated], CHUNK_EVENTS):
            for n, (partials, dead) in zip(chunk, aggregate_with(aggregator, spark, events_root, base, chunk)):
                s = jobs[n][2]
                write_arrow(s.data_dir / "partials.arrow", partials)
                write_arrow(s.data_dir / "dead.arrow", dead)
                shutil.rmtree(events_root / f"run={n}")
                # Generation and Spark serve every run: each report carries an even share of that time.
                job = (s, replay, keep_store, generated[n], (time.monotonic() - started) / len(runs))
                if workers_:
                    futures[workers_.submit(replay_job, job)] = n
                else:
                    done(n, replay_job(job))
        if workers_:
            from concurrent.futures import as_completed

            for future in as_completed(futures):
                done(futures[future], future.result())
    finally:
        if workers_:
            workers_.shutdown(cancel_futures=True)
        if events_root.exists():
            shutil.rmtree(events_root)
    return results


def replay_job(job) -> Evaluation:
    """Replay one run into its store with detection after each interval, then match (in a worker or not)."""
    from obslab.store import Store

    s, mode, keep_store, gen, spent = job
    started = time.monotonic()
    partials, dead = read_arrow(s.data_dir / "partials.arrow"), read_arrow(s.data_dir / "dead.arrow")
    store = Store.from_settings(s)
    with store.held():
        run_seconds = replay(store, s, partials, dead, mode)
        allowance = in_time_allowance(s.window_seconds, s.trigger_seconds, s.detect_poll_seconds)
        faults, incidents, benign, cascades = match_incidents(store, run_seconds, allowance)
    (s.data_dir / "partials.arrow").unlink()
    (s.data_dir / "dead.arrow").unlink()
    report = Evaluation(gen["scenario"], gen["seed"], gen["rate"], gen["duration"], gen["events"], s.window_seconds,
                        s.trigger_seconds, s.detect_poll_seconds, faults, incidents,
                        str(s.duckdb_path) if keep_store else None, spent + time.monotonic() - started,
                        benign, cascades, list(run_seconds.values()))
    if not keep_store:
        shutil.rmtree(s.data_dir)
    return report


def _plan(scenario) -> "Scenario":
    from obslab.generator.scenario import Scenario, load_scenario

    return scenario if isinstance(scenario, Scenario) else load_scenario(scenario)


def _run_settings(base: Settings, workdir: Path) -> Settings:
    return base.model_copy(update={"data_dir": workdir, "duckdb_path": workdir / "evaluation.duckdb"})


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

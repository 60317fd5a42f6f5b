"""A scratch store made by replaying a scenario offline: what notebooks 03 and 04 read on a laptop with no
broker, Spark or JVM.

    replay_store(settings, scenario, seed, minutes, name)   the scenario's last `minutes`, ending now, written
                                                             to a JSONL file (ground truth into the store),
                                                             aggregated in DuckDB (the stream's transform as SQL)
                                                             and merged by the stream's own sink as ONE
                                                             micro-batch, as notebook 02 leaves the lab's store
    store_settings(source, settings, ...)                   the settings of the store a notebook reads: that
                                                             scratch store (`replay`) or the lab's own (`store`)

The scratch store lives in DATA_DIR/runs/<name>-replay and is made anew each time; the lab's own store
is not touched.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from obslab.errors import ConfigError
from obslab.settings import Settings

SOURCES = ("replay", "store")  # replay: a scratch store made offline; store: the lab's own (notebook 02 fills it)


@dataclass(frozen=True)
class Replayed:
    """What `replay_store` made: the scratch store's settings and what went into it."""

    settings: Settings  # DATA_DIR and DUCKDB_PATH point at the scratch store
    scenario: str
    seed: int
    events: int
    dead_letters: int
    service_windows: int
    incidents: int  # 0 unless detection ran

    def describe(self) -> str:
        """One line for a notebook: what the scratch store holds and where."""
        return (f"replay: {self.events:,} events of {self.scenario!r} (seed {self.seed}) ending now, "
                f"{self.service_windows} service windows, {self.dead_letters} dead letters, "
                f"{self.incidents} incidents, in the scratch store {self.settings.duckdb_path}")


def replay_store(settings: Settings, scenario: str, seed: int = 42, minutes: float | None = None,
                 name: str = "scratch", detect: bool = False) -> Replayed:
    """Generate `scenario` (its own length, or `minutes`) ending now into a fresh scratch store under
    DATA_DIR/runs/<name>-replay, aggregate and merge it as the stream would; with `detect`, run detection once."""
    from obslab.detect.run import run_detection
    from obslab.evaluation.replay import aggregate_duckdb
    from obslab.generator.run import RunPlan, generate
    from obslab.generator.scenario import load_scenario
    from obslab.lab import Lab
    from obslab.stream.sink import StreamSink

    plan = load_scenario(scenario)
    seconds = plan.duration_seconds if minutes is None else minutes * 60
    if seconds < 0:
        raise ConfigError(f"minutes={minutes}: a replay needs a length of 0 or more minutes (0: nothing)")
    workdir = settings.data_dir / "runs" / f"{name}-replay"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    s = settings.model_copy(update={"data_dir": workdir, "duckdb_path": workdir / "observability.duckdb",
                                    "scenario": scenario, "seed": seed})
    lab = Lab(s)
    store = lab.store
    events_root = workdir / "events"
    report, _ = generate(RunPlan.ending_now(seconds, to_file=events_root / "run=0" / "events.jsonl"), s,
                         store=store)
    [(partials, dead)] = aggregate_duckdb(events_root, s, [0])
    # One micro-batch of everything, as notebook 02's available-now run: windows the watermark has
    # passed are final, the newest are still open.
    StreamSink(store, s, "replay").merge(0, partials.drop_columns(["interval"]), dead)
    incidents = len(run_detection(store, s).incidents) if detect else 0
    windows = store.query("SELECT count(*) FROM service_metrics")[0][0]
    return Replayed(s, plan.name, seed, report.events_sent, dead.num_rows, windows, incidents)


def store_settings(source: str, settings: Settings, scenario: str = "demo", seed: int = 42,
                   minutes: float | None = None, name: str = "scratch", detect: bool = False) -> tuple[Settings, str]:
    """(settings of the store to read, a line saying which): a fresh scratch store for `replay`
    (see `replay_store`), the lab's own store for `store`."""
    if source == "store":
        return settings, f"store: the lab's own store {settings.duckdb_path} (what notebook 02 and the demo wrote)"
    if source == "replay":
        made = replay_store(settings, scenario, seed, minutes, name, detect)
        return made.settings, made.describe()
    raise ConfigError(f"source={source!r}: use 'replay' (a scratch store made offline, needs nothing running) "
                      "or 'store' (the lab's own store: run notebook 02 first)")

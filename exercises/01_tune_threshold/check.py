"""Check of exercise 1: the learner's detector thresholds, judged by an evaluation against ground truth.

Not the Spark replay of `obslab evaluate` (a minute or more): the detection part on stored windows.

    scenario (45 min: a latency creep and a traffic drop to find, a flash crowd that should not page)
      --real generator, simulated time--> events --one final window per minute--> a fresh store,
        with the ground truth (injected_incidents) and the service catalogue
      --after each window: run_detection with the learner's thresholds--> anomalies, incidents
      --obslab.evaluation.match_incidents--> faults detected, benign events paged, false incidents

Solved when every fault is detected, no benign event pages, and no other incident is false.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import harness

# Thresholds a learner may set here (every other setting keeps its default).
TUNABLE = ("error_surge_factor", "error_confidence_z", "latency_spike_factor", "shift_z", "burn_threshold")
SCENARIO = """
name: exercise-1
description: a slow latency creep and a traffic drop to find, a flash crowd to leave alone
traffic:
  events_per_second: 20
  dispersion: 0.1            # traffic varies more than Poisson, as real traffic does
faults:
  - {type: latency_degradation, service: payments, start_seconds: 1200, duration_seconds: 600, magnitude: 2.5}
  - {type: traffic_drop, service: search, start_seconds: 2100, duration_seconds: 300, magnitude: 0.75}
benign:
  - {type: flash_crowd, service: checkout, start_seconds: 1500, duration_seconds: 240, magnitude: 2.5}
"""
MINUTES = 45
SEED = 5


def check(folder: Path, scratch: Path) -> harness.Result:
    result = harness.Result()
    thresholds = read_thresholds(folder / "thresholds.yaml")
    result.notes.append("thresholds: " + (", ".join(f"{k}={v}" for k, v in thresholds.items()) or "the defaults"))
    faults, incidents, benign = evaluate(thresholds, scratch)
    for f in faults:
        result.notes.append(f"fault {f.type} on {f.service} {f.start:%H:%M}-{f.end:%H:%M}: "
                            + (f"detected after {f.ttd_seconds:.0f} s" if f.detected else "MISSED"))
        result.need(f.detected, f"the {f.type} on {f.service} ({f.start:%H:%M}-{f.end:%H:%M}, "
                                f"magnitude {f.magnitude:g}) was missed: a threshold is too high")
    for b in benign:
        result.notes.append(f"benign {b.type} on {b.service} {b.start:%H:%M}-{b.end:%H:%M}: "
                            + ("PAGED" if b.paged else "quiet"))
        result.need(not b.paged, f"the {b.type} on {b.service} ({b.start:%H:%M}-{b.end:%H:%M}, "
                                 f"magnitude {b.magnitude:g}) paged: a threshold is too low")
    false = [i for i in incidents if not i.matched and i.cause != "benign"]
    for i in false:
        result.problems.append(f"false incident: {i.kind} on {i.service} from {i.opened_at:%H:%M} "
                               f"({_CAUSES[i.cause]}): a threshold is too low")
    result.notes.append(f"{len(incidents)} incidents, {sum(i.matched for i in incidents)} matched a fault")
    return result


_CAUSES = {"spurious": "nothing happened there", "other_kind": "a fault ran there, but not of this kind",
           "duplicate": "a second incident for one fault", "benign": "a benign event"}


def read_thresholds(path: Path) -> dict:
    """The thresholds of the learner's YAML file, validated as settings (errors name the key and what to do)."""
    import yaml

    from obslab.errors import ConfigError
    from obslab.settings import load_settings

    if not path.is_file():
        raise harness.LearnerError(f"{path} is missing: restore it with `git checkout -- {path.name}` in its folder")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise harness.LearnerError(f"{path.name} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise harness.LearnerError(f"{path.name} should hold `name: value` lines, like `error_surge_factor: 3`")
    unknown = sorted(set(data) - set(TUNABLE))
    if unknown:
        raise harness.LearnerError(f"{path.name} sets {unknown}: this exercise tunes only {list(TUNABLE)}")
    try:
        load_settings(**data)
    except ConfigError as err:
        raise harness.LearnerError(f"{path.name}: {err}") from None
    return data


def evaluate(thresholds: dict, scratch: Path):
    """(faults, incidents, benign events) of the exercise's run, matched, detected with these thresholds."""
    from obslab.evaluation import match_incidents
    from obslab.detect.run import run_detection
    from obslab.generator.events import EventStream
    from obslab.generator.truth import StoreGroundTruth
    from obslab.settings import load_settings

    settings = load_settings(data_dir=scratch, duckdb_path=scratch / "exercise-1.duckdb", **thresholds)
    plan = harness.scenario(SCENARIO)
    batches, faults = harness.generate(plan, SEED, MINUTES)
    store = harness.store_with(settings.duckdb_path, {}, plan)
    truth = StoreGroundTruth(store, EventStream(plan, SEED, harness.START).run_id, plan.name)
    for fault in faults:
        truth.started(fault)
        truth.ended(fault, fault.end)
    tables = harness.aggregate(batches)
    minute = timedelta(minutes=1)
    for k in range(MINUTES):
        start = harness.START + k * minute
        store.upsert_many({name: [r for r in rows if r["window_start"] == start] for name, rows in tables.items()})
        run_detection(store, settings, now=start + 2 * minute)
    faults, incidents, benign, _ = match_incidents(store)
    return faults, incidents, benign

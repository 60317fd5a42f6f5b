"""Check of exercise 1: the learner's detector thresholds, judged by an evaluation against ground truth.

Not the Spark replay of `obslab evaluate` (a minute or more): the detection part on stored windows.

    scenario (45 min: a latency creep and a traffic drop to find, a flash crowd that should not page)
      --real generator, simulated time--> events --one final window per minute--> a fresh store,
        with the ground truth (injected_incidents) and the service catalogue
      --after each window: run_detection with the learner's thresholds--> anomalies, incidents
      --obslab.evaluation.match_incidents--> faults detected, benign events paged, false incidents

The learner's value must pass, and so must the range they state (`shift_z_range: [low, high]`):
both ends pass, and a value RESOLUTION beyond either end fails. The file must set `shift_z`
itself: the library's default is a passing value, so an empty file would pass without any
measurement. Stating the range is what makes the learner measure both sides of the trade, which
is the exercise; one lucky value is not.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import harness

# Thresholds a learner may set here (every other setting keeps its default).
TUNABLE = ("error_surge_factor", "error_confidence_z", "latency_spike_factor", "shift_z", "burn_threshold")
KNOB = "shift_z"  # the threshold the exercise is about
RANGE = "shift_z_range"  # [low, high]: the passing range the learner measured
RESOLUTION = 0.5  # how close to the true ends the stated range must be: a value this far beyond must fail
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


class Outcome:
    """One evaluation of the run with one set of thresholds (a plain class: this module is loaded by
    path, not imported, and dataclasses need an imported module)."""

    def __init__(self, faults: list, incidents: list, benign: list):
        self.faults, self.incidents, self.benign = faults, incidents, benign  # FaultResult, IncidentResult, ...

    @property
    def false(self) -> list:
        return [i for i in self.incidents if not i.matched and i.cause != "benign"]

    @property
    def passed(self) -> bool:
        return all(f.detected for f in self.faults) and not any(b.paged for b in self.benign) and not self.false

    def why_not(self) -> str:
        """What failed, in a few words ('' when it passed)."""
        parts = [f"missed the {f.type} on {f.service}" for f in self.faults if not f.detected]
        parts += [f"paged on the {b.type}" for b in self.benign if b.paged]
        parts += [f"{len(self.false)} false incident(s)"] if self.false else []
        return ", ".join(parts)


def check(folder: Path, scratch: Path) -> harness.Result:
    result = harness.Result()
    thresholds, stated = read_thresholds(folder / "thresholds.yaml")
    if not result.need(KNOB in thresholds,
                       f"thresholds.yaml does not set {KNOB}: the exercise is to choose it by measurement. "
                       f"Set `{KNOB}: <value>` (the file started at `{KNOB}: 1.5`) and run the check again"):
        return result
    result.notes.append("thresholds: " + ", ".join(f"{k}={v}" for k, v in thresholds.items()))
    run = Run.generate()
    outcomes: dict[float, Outcome] = {}

    def evaluate(value: float) -> Outcome:
        if value not in outcomes:
            outcomes[value] = run.evaluate(thresholds | {KNOB: value}, scratch / f"{KNOB}-{len(outcomes)}")
        return outcomes[value]

    chosen = evaluate(thresholds[KNOB])
    for f in chosen.faults:
        result.notes.append(f"fault {f.type} on {f.service} {f.start:%H:%M}-{f.end:%H:%M}: "
                            + (f"detected after {f.ttd_seconds:.0f} s" if f.detected else "MISSED"))
        result.need(f.detected, f"the {f.type} on {f.service} ({f.start:%H:%M}-{f.end:%H:%M}, "
                                f"magnitude {f.magnitude:g}) was missed: a threshold is too high")
    for b in chosen.benign:
        result.notes.append(f"benign {b.type} on {b.service} {b.start:%H:%M}-{b.end:%H:%M}: "
                            + ("PAGED" if b.paged else "quiet"))
        result.need(not b.paged, f"the {b.type} on {b.service} ({b.start:%H:%M}-{b.end:%H:%M}, "
                                 f"magnitude {b.magnitude:g}) paged: a threshold is too low")
    for i in chosen.false:
        result.problems.append(f"false incident: {i.kind} on {i.service} from {i.opened_at:%H:%M} "
                               f"({_CAUSES[i.cause]}): a threshold is too low")
    matched = sum(i.matched for i in chosen.incidents)
    result.notes.append(f"{len(chosen.incidents)} incidents, {matched} matched a fault")
    if not chosen.passed:
        return result  # the range comes once one value passes
    if stated is None:
        result.problems.append(
            f"{KNOB}={thresholds[KNOB]:g} passes; now find the range of values that pass, to within "
            f"{RESOLUTION:g} at each end, and write it in thresholds.yaml as `{RANGE}: [low, high]`")
        return result
    low, high = stated
    result.need(low <= thresholds[KNOB] <= high,
                f"{KNOB}={thresholds[KNOB]:g} is outside the range you state, {RANGE}: [{low:g}, {high:g}]")
    # Each end must pass, and one step beyond it must not: the end is then known to RESOLUTION.
    for end, beyond, side, direction in ((low, low - RESOLUTION, "low", "lower"),
                                         (high, high + RESOLUTION, "high", "higher")):
        at_end = evaluate(end)
        result.notes.append(f"{KNOB}={end:g} (your {side} end): " + ("passes" if at_end.passed else at_end.why_not()))
        if not result.need(at_end.passed, f"the {side} end of your range, {KNOB}={end:g}, does not pass "
                                          f"({at_end.why_not()}): the passing range does not reach that far"):
            continue
        if beyond <= 0:
            continue  # nothing below 0 to try: the low end is as low as it goes
        past = evaluate(beyond)
        result.notes.append(f"{KNOB}={beyond:g} ({RESOLUTION:g} {'below' if side == 'low' else 'above'} it): "
                            + ("passes" if past.passed else past.why_not()))
        result.need(not past.passed, f"{KNOB}={beyond:g} passes too: the passing range reaches {direction} than "
                                     f"your {side} end {end:g}. Move it until the next {RESOLUTION:g} step fails")
    return result


_CAUSES = {"spurious": "nothing happened there", "other_kind": "a fault ran there, but not of this kind",
           "duplicate": "a second incident for one fault", "benign": "a benign event"}


def read_thresholds(path: Path) -> tuple[dict, tuple[float, float] | None]:
    """The thresholds of the learner's YAML file, validated as settings, and the range they state
    (None: not stated yet); errors name the key and what to do."""
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
        raise harness.LearnerError(f"{path.name} should hold `name: value` lines, like `{KNOB}: 3`")
    stated = data.pop(RANGE, None)
    unknown = sorted(set(data) - set(TUNABLE))
    if unknown:
        raise harness.LearnerError(f"{path.name} sets {unknown}: this exercise tunes only {list(TUNABLE)} "
                                   f"(and states `{RANGE}`)")
    try:
        load_settings(**data)
    except ConfigError as err:
        raise harness.LearnerError(f"{path.name}: {err}") from None
    return data, (None if stated is None else _range(stated, path.name))


def _range(stated, name: str) -> tuple[float, float]:
    if (not isinstance(stated, list) or len(stated) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in stated)):
        raise harness.LearnerError(f"{name}: {RANGE} should be two numbers, the low and the high end of the "
                                   f"values that pass, like `{RANGE}: [3, 8]`; got {stated!r}")
    low, high = float(stated[0]), float(stated[1])
    if not 0 < low <= high:
        raise harness.LearnerError(f"{name}: {RANGE} is [{low:g}, {high:g}]: give [low, high] with "
                                   "0 < low <= high")
    return low, high


class Run:
    """The exercise's run, generated once: its plan, faults and final windows."""

    def __init__(self, plan, faults: list, tables: dict):
        self.plan, self.faults, self.tables = plan, faults, tables  # faults as started; table -> rows

    @classmethod
    def generate(cls) -> "Run":
        plan = harness.scenario(SCENARIO)
        batches, faults = harness.generate(plan, SEED, MINUTES)
        return cls(plan, faults, harness.aggregate(batches))

    def evaluate(self, thresholds: dict, scratch: Path) -> Outcome:
        """Detection after each window, with these thresholds, on a fresh store; matched to the truth."""
        from obslab.detect.run import run_detection
        from obslab.detect.walk import SeriesMemory
        from obslab.evaluation import match_incidents
        from obslab.generator.events import EventStream
        from obslab.generator.truth import StoreGroundTruth
        from obslab.settings import load_settings

        settings = load_settings(data_dir=scratch, duckdb_path=scratch / "exercise-1.duckdb", **thresholds)
        store = harness.store_with(settings.duckdb_path, {}, self.plan)
        memory = SeriesMemory()  # one detection loop: each run resumes what the previous one learned
        minute = timedelta(minutes=1)
        with store.held():  # one connection for the whole loop: opening the file per step would dominate
            truth = StoreGroundTruth(store, EventStream(self.plan, SEED, harness.START).run_id, self.plan.name)
            for fault in self.faults:
                truth.started(fault)
                truth.ended(fault, fault.end)
            for k in range(MINUTES):
                start = harness.START + k * minute
                store.upsert_many({name: [r for r in rows if r["window_start"] == start]
                                   for name, rows in self.tables.items()})
                run_detection(store, settings, now=start + 2 * minute, memory=memory)
            faults, incidents, benign, _ = match_incidents(store)
        return Outcome(faults, incidents, benign)

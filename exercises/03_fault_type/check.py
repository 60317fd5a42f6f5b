"""Check of exercise 3: a `timeout` fault type in the generator (lib/obslab/generator), judged by its events.

    scenario    `type: timeout` is accepted; a magnitude outside (0, 1] is refused, naming the field;
                without one, the default applies
    events      (20 min, a timeout of 40 % on payments, one of 100 % on checkout's /api/cart)
                during it: that share of the hit requests fail with 504 and take TIMEOUT_MS;
                the rest, the other endpoints and services, and the time outside it: as usual
    truth       the fault is in the run's ground truth; the evaluation knows which incident kinds
                it causes (FAULT_KINDS)
    detection   the lab's own detectors, on the run's windows, raise an anomaly of such a kind during it
    seed        the same scenario and seed give the same events whatever the global random state
                (`random`, `np.random` seeded differently before each run), and generating leaves
                that global state as it was: every draw comes from the stream's own `rng`

A timeout, as README.md defines it: a hit request takes TIMEOUT_MS and fails with 504. A 500, or
a 504 that comes back fast, is another fault (the client did not wait out its timeout).
"""

from __future__ import annotations

import math
from pathlib import Path

import harness

TIMEOUT_MS = 5000.0  # what a timed-out request takes (README.md)
SCENARIO = """
name: exercise-3
traffic:
  events_per_second: 20
faults:
  - {type: timeout, service: payments, start_seconds: 480, duration_seconds: 300, magnitude: 0.4}
  - {type: timeout, service: checkout, endpoint: /api/cart, start_seconds: 600, duration_seconds: 240, magnitude: 1.0}
"""
MINUTES = 20
SEED = 3
SCENARIO_FILE = "lib/obslab/generator/scenario.py"


def check(folder: Path, scratch: Path) -> harness.Result:
    import numpy as np

    from obslab.errors import ScenarioError

    result = harness.Result()
    root = folder.parents[1]  # the tree checked: its lib/ is the one imported
    try:
        plan = harness.scenario(SCENARIO)
    except ScenarioError as err:
        result.problems.append(f"a scenario with `type: timeout` is refused ({err}): add the type to FaultType and "
                               f"FAULT_TYPES in {SCENARIO_FILE}")
        return result
    for magnitude in (0, 1.5):
        text = SCENARIO.replace("magnitude: 0.4", f"magnitude: {magnitude}")
        try:
            harness.scenario(text)
            result.problems.append(f"a timeout with magnitude {magnitude} was accepted: the magnitude is a share "
                                   "of requests, so FAULT_TYPES should allow only > 0 and <= 1")
        except ScenarioError as err:
            result.need("magnitude" in str(err), f"magnitude {magnitude} was refused, but the error does not name "
                                                 f"the magnitude: {err}")
    default = harness.scenario(SCENARIO.replace(", magnitude: 0.4", "")).faults[0].effective_magnitude
    result.need(0 < default <= 1, f"a timeout without a magnitude gets {default}: give it a default share in (0, 1]")

    try:
        batches, faults = harness.generate(plan, SEED, MINUTES)
    except Exception as err:  # noqa: BLE001 - the learner's generator code
        raise harness.LearnerError(f"generating the scenario raised {harness.innermost(err, root)}") from None
    _reproducible(plan, result)
    started = {(f.service, f.type) for f in faults}
    result.need(("payments", "timeout") in started and ("checkout", "timeout") in started,
                f"the run's ground truth lacks the timeout faults (it has {sorted(started)})")

    # One row per event: service, endpoint, time (ms), latency, status.
    services = np.concatenate([np.array(b.services(), dtype=object) for b in batches if len(b)])
    paths = np.concatenate([np.array([b.endpoints[i][1] for i in b.endpoint_index.tolist()], dtype=object)
                            for b in batches if len(b)])
    times = np.concatenate([b.times_ms for b in batches])
    latency = np.concatenate([b.latency_ms for b in batches])
    codes = np.concatenate([b.status_code for b in batches])
    start_ms = int(batches[0].times_ms[0]) // 60_000 * 60_000
    waited = np.abs(latency - TIMEOUT_MS) < 1  # took the client's whole timeout
    timeouts = (codes == 504) & waited

    def window(fault_start_s, duration_s):
        t0 = start_ms + fault_start_s * 1000
        return (times >= t0) & (times < t0 + duration_s * 1000)

    cases = [("payments", None, window(480, 300), 0.4), ("checkout", "/api/cart", window(600, 240), 1.0)]
    for service, endpoint, during, share in cases:
        hit = during & (services == service) & ((paths == endpoint) if endpoint else True)
        n = int(hit.sum())
        got = float(timeouts[hit].mean()) if n else 0.0
        sd = math.sqrt(share * (1 - share) / max(n, 1))
        where = f"{service}{' ' + endpoint if endpoint else ''}"
        result.notes.append(f"{where}, during its timeout ({share:.0%}): {n} requests, {got:.1%} took "
                            f"{TIMEOUT_MS:g} ms and failed with 504")
        result.need(n > 0 and abs(got - share) <= 5 * sd + 0.01,
                    f"during the {share:.0%} timeout on {where}, {got:.1%} of its {n} requests took {TIMEOUT_MS:g} ms "
                    f"and failed with 504; about {share:.0%} should (a request the fault hits times out with "
                    "probability `magnitude`: its latency is TIMEOUT_MS and its status 504)")
        unlike = _unlike_a_timeout(hit, waited, codes, latency)
        if unlike:
            result.problems.append(f"during the timeout on {where}, {unlike}")
        rest = hit & ~waited & (codes != 504)  # neither waited out the timeout nor failed like one
        if rest.any():
            result.need(float(np.median(latency[rest])) < TIMEOUT_MS / 4,
                        f"the requests of {where} that did not time out are slow too: leave them as they were")
    untouched = ~(cases[0][2] & (services == "payments")) & ~(cases[1][2] & (services == "checkout")
                                                              & (paths == "/api/cart"))
    stray = int((timeouts & untouched).sum())
    result.need(stray == 0, f"{stray} requests outside the faults (another service, endpoint or time) took "
                            f"{TIMEOUT_MS:g} ms with a 504: a timeout hits only its service (and endpoint) while "
                            "it lasts")
    slow = untouched & (latency >= TIMEOUT_MS / 2)
    result.need(not slow.any(), f"{int(slow.sum())} requests outside the faults took over {TIMEOUT_MS / 2:g} ms")

    try:
        from obslab.evaluation import FAULT_KINDS
    except Exception as err:  # noqa: BLE001
        raise harness.LearnerError(f"importing obslab.evaluation raised {harness.innermost(err, root)}") from None
    kinds = FAULT_KINDS.get("timeout")
    result.need(kinds == {"errors", "latency"},
                f"FAULT_KINDS['timeout'] in lib/obslab/evaluation/matching.py is {kinds!r}: the evaluation must know "
                "that a timeout causes errors (504s) and latency (each takes the whole timeout), or it counts "
                "the incidents it raises as false")

    # The lab's own detectors see it.
    from obslab.detect.detectors import DetectorConfig, detect_series

    rows = harness.aggregate(batches)["service_metrics"]
    fault = next(f for f in faults if f.service == "payments" and f.type == "timeout")
    found = [a for a in detect_series(harness.series(rows, "payments"), DetectorConfig())
             if a.window_start < fault.end and a.window_end > fault.start]
    result.notes.append("detectors during the payments timeout: " + (", ".join(sorted({a.detector for a in found}))
                                                                     or "none"))
    result.need(any(a.kind in (kinds or set()) for a in found),
                "the lab's detectors raised no anomaly of the kinds FAULT_KINDS names during the payments timeout")
    return result


def _unlike_a_timeout(hit, waited, codes, latency) -> str:
    """What the hit requests that look half like a timeout did instead ('' when none did)."""
    import numpy as np

    wrong_code = hit & waited & (codes != 504)
    if wrong_code.any():
        shown = ", ".join(f"{c} ({n})" for c, n in zip(*np.unique(codes[wrong_code], return_counts=True)))
        return (f"{int(wrong_code.sum())} requests took {TIMEOUT_MS:g} ms but ended with {shown}, not 504: a request "
                "that waited out the client's timeout gets the gateway's 504 (Gateway Timeout), whatever its error "
                "would have been")
    fast = hit & ~waited & (codes == 504)
    if fast.sum() > 0.5 * hit.sum():  # a few ordinary 504s are part of a service's usual errors
        median = float(np.median(latency[fast]))
        return (f"{int(fast.sum())} requests failed with 504 after a median of {median:.0f} ms, "
                f"not {TIMEOUT_MS:g} ms: a timed-out request takes the whole TIMEOUT_MS before it fails")
    return ""


GLOBAL_SEEDS = (101, 202)  # the global generators are seeded differently before each of two runs
RNG_HINT = ("draw the timeout's chance with the stream's `rng` (the argument of EventStream._shape), never with "
            "`random` or `np.random`")


def _reproducible(plan, result: harness.Result) -> None:
    """The same seed, the same events, whatever `random` and `np.random` hold; and neither is touched."""
    import random

    import numpy as np

    runs = []
    for global_seed in GLOBAL_SEEDS:
        random.seed(global_seed)
        np.random.seed(global_seed)
        before = (random.getstate(), _np_state())
        batches, _ = harness.generate(plan, SEED, MINUTES)
        after = (random.getstate(), _np_state())
        runs.append(_events(batches))
        touched = [name for name, b, a in (("random", before[0], after[0]), ("np.random", before[1], after[1]))
                   if b != a]
        if touched and len(runs) == 1:
            result.problems.append(f"generating the scenario changed the global random state of "
                                   f"{' and '.join(touched)}: {RNG_HINT}, so a run leaves other code's draws alone")
    first, second = runs[0], runs[-1]
    same = all(np.array_equal(a, b) for a, b in zip(first, second))
    if not same:
        differ = (int(np.sum(first[2] != second[2]) + np.sum(first[3] != second[3]))
                  if len(first[0]) == len(second[0]) else "the number of")
        result.problems.append(f"the same scenario with the same seed gave different events when the global random "
                               f"generators were seeded differently ({differ} latencies or statuses differ): "
                               f"{RNG_HINT}, so a run is reproducible from its seed")
    result.notes.append("same seed, global random state seeded differently: "
                        + ("the same events" if same else "DIFFERENT events"))


def _np_state() -> tuple:
    """numpy's global generator state, comparable with ==."""
    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return name, keys.tobytes(), pos, has_gauss, gauss


def _events(batches):
    """(times, endpoints, latencies, statuses) of all the batches' events."""
    import numpy as np

    return (np.concatenate([b.times_ms for b in batches]), np.concatenate([b.endpoint_index for b in batches]),
            np.concatenate([b.latency_ms for b in batches]), np.concatenate([b.status_code for b in batches]))

"""Check of exercise 2: the learner's `error_jump` detector, run on the real generator's windows.

    clean run   (55 min, four services, one of them quiet)      -> at most one false window, none on
                                                                    the quiet service
    fault run   (a 15-min error surge on payments, a 10-min one
                 on the quiet ledger)                            -> most fault windows flagged, to the
                                                                    end; nothing outside; one incident
    evidence    every anomaly: its window's rate, a usual rate below the threshold, below the value
    odd input   open and empty windows                          -> no exception, open ones not flagged
    baselines   (three runs: other seeds, other volumes) legacy   -> each surge flagged in most of its
                fails 10 % on a good day, auth 0.2 %; a surge on   windows, nothing outside the surges
                each (auth to 4 %, legacy to 30 %)

The baselines runs are what a detector that learns nothing of the series' own usual rate fails:
a fixed rate (`error_rate > 0.08`) pages all day on legacy and never sees auth's surge, at any
volume. They are judged once the detector flags anything in the fault run (before that, the
fault run's problems say what to do first, and the room's poll of the starting point stays short).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import harness

SERVICES = """
services:
  - name: checkout
  - name: payments
  - name: search
  - name: ledger             # quiet: about 20 requests a minute
    endpoints: [/api/ledger/post]
    latency_ms: 80
    error_rate: 0.02
    share: 0.05
traffic:
  events_per_second: 20
"""
CLEAN = "name: exercise-2-clean\n" + SERVICES
FAULTS = "name: exercise-2-faults\n" + SERVICES + """
faults:
  - {type: error_surge, service: payments, start_seconds: 1200, duration_seconds: 900, magnitude: 0.12}
  - {type: error_surge, service: ledger, start_seconds: 2400, duration_seconds: 600, magnitude: 0.5}
"""
MINUTES = 55
MAX_FALSE = 1  # false windows allowed on clean traffic (of about 220)
SEED = 7
BASELINES = """
name: exercise-2-baselines
services:
  - name: legacy             # fails about 10 % of its requests on a good day (its clients retry)
    endpoints: [/api/legacy/sync]
    latency_ms: 250
    error_rate: 0.10
  - name: auth               # busy, and almost never fails
    endpoints: [/api/auth/token]
    latency_ms: 30
    error_rate: 0.002
traffic:
  events_per_second: {eps}
faults:
  - {{type: error_surge, service: auth, start_seconds: 1200, duration_seconds: 600, magnitude: 0.04}}
  - {{type: error_surge, service: legacy, start_seconds: 2100, duration_seconds: 600, magnitude: 0.3}}
"""
BASELINE_RUNS = ((21, 12), (22, 40), (23, 12))  # (seed, events per second): about 360 or 1,200 requests a window
BASELINE_MINUTES = 45
BASELINE_LEAST = 0.7  # share of each surge's windows to flag
USUAL = {"legacy": 0.10, "auth": 0.002}  # the services' clean error rates, for the messages


def check(folder: Path, scratch: Path) -> harness.Result:
    from obslab.detect.detectors import DetectorConfig, Window
    from obslab.detect.incidents import build_incidents

    result = harness.Result()
    path = folder / "detector.py"
    learner = harness.load_module(path, "exercise_detector")
    if not result.need(callable(getattr(learner, "detect", None)), "detector.py has no function `detect(series, cfg)`"):
        return result
    name = getattr(learner, "NAME", None)
    cfg = DetectorConfig()

    def run(series):
        found = harness.call(path, learner.detect, list(series), cfg)
        if not isinstance(found, list):
            raise harness.LearnerError(f"detect() returned {type(found).__name__}, not a list of Anomaly")
        return found

    # Clean traffic: at most one false window in the whole run (about 220 windows), none on the quiet service.
    clean = harness.aggregate(harness.generate(harness.scenario(CLEAN), SEED, MINUTES)[0])["service_metrics"]
    false_windows = 0
    for service in ("checkout", "payments", "search", "ledger"):
        found = run(harness.series(clean, service))
        windows = harness.series(clean, service)
        result.notes.append(f"clean {service}: {len(found)} anomalies in {len(windows)} windows "
                            f"(about {sum(w.request_count for w in windows) / len(windows):.0f} requests each)")
        false_windows += len(found)
        if found and (false_windows > MAX_FALSE or service == "ledger"):
            first = found[0]
            result.problems.append(
                f"on clean traffic of {service} it flagged {len(found)} window(s), the first at "
                f"{first.window_start:%H:%M} ({getattr(first, 'value', '?')!r} vs threshold "
                f"{getattr(first, 'threshold', '?')!r}): judge the error COUNT against the noise of that many "
                "requests (binomial), not the rate alone" + (" - a quiet service has few requests per window"
                                                             if service == "ledger" else ""))

    # Faults: flagged from start to end, nothing outside, evidence that holds.
    plan = harness.scenario(FAULTS)
    batches, faults = harness.generate(plan, SEED, MINUTES)
    rows = harness.aggregate(batches)["service_metrics"]
    window = timedelta(minutes=1)
    for fault, least in ((_fault(faults, "payments"), 0.8), (_fault(faults, "ledger"), 0.5)):
        series = harness.series(rows, fault.service)
        found = run(series)
        bad = [a for a in found if not _is_anomaly(a)]
        if bad:
            result.problems.append(f"detect() returned {type(bad[0]).__name__} items: return Anomaly objects "
                                   "(use flag(w, usual_rate, threshold_rate))")
            return result
        inside = [w for w in series if w.window_start >= fault.start and w.window_end <= fault.end]
        flagged = {a.window_start for a in found}
        hit = [w for w in inside if w.window_start in flagged]
        result.notes.append(f"{fault.service} error surge ({fault.magnitude:g} of requests fail, "
                            f"{fault.start:%H:%M}-{fault.end:%H:%M}): {len(hit)} of its {len(inside)} windows flagged")
        result.need(len(hit) >= least * len(inside),
                    f"only {len(hit)} of the {len(inside)} windows of the {fault.service} error surge "
                    f"({fault.start:%H:%M}-{fault.end:%H:%M}) were flagged; at least {least:.0%} should be")
        tail = inside[-5:]
        if fault.service == "payments":
            result.need(sum(w.window_start in flagged for w in tail) >= 3,
                        "the last windows of the 15-minute payments surge were not flagged: the usual rate has "
                        "learned from the fault. Keep flagged windows out of the baseline")
        outside = [a for a in found if a.window_start < fault.start or a.window_start >= fault.end + window]
        result.need(not outside, f"{len(outside)} window(s) of {fault.service} outside its fault were flagged, "
                                 f"the first at {outside[0].window_start:%H:%M}" if outside else "")
        for a in found:
            w = next((w for w in series if w.window_start == a.window_start), None)
            problem = _evidence(a, w, name)
            if problem:
                result.problems.append(f"anomaly at {a.window_start:%H:%M} on {fault.service}: {problem}")
                break
        if fault.service == "payments" and hit:
            incidents, _ = build_incidents(found, series[-1].window_end, 60, 3)
            result.need(len(incidents) == 1, f"the payments surge became {len(incidents)} incidents, not one: "
                                             "windows in the middle of the surge went unflagged")

    # Odd input: an open window full of errors is not judged yet; an empty final window is no error.
    last = harness.series(rows, "payments")[-1]
    odd = harness.series(rows, "payments") + [
        Window("payments", None, last.window_end, last.window_end + window, 0, 0, 0.0, 0.0, True),
        Window("payments", None, last.window_end + window, last.window_end + 2 * window, 30, 30, 200.0, 300.0, False)]
    flagged_open = [a for a in run(odd) if a.window_start >= last.window_end]
    result.need(not flagged_open, "an open (not final) window was flagged: judge final windows only, as the "
                                  "starting point's loop does")

    if not any(run(harness.series(rows, f.service)) for f in faults if f.cause_fault_id is None):
        result.notes.append("services with other usual error rates (legacy 10 %, auth 0.2 %): judged once your "
                            "detector flags the surges above")
        return result
    _baselines(run, result)
    return result


def _baselines(run, result: harness.Result) -> None:
    """Surges on a service that usually fails 10 % and on one that usually fails 0.2 %, at two volumes
    and three seeds: flagged in most of their windows, nothing flagged outside them."""
    missed: dict[str, list[str]] = {}  # service -> "k of n (seed s)" of the runs where too few were flagged
    false: dict[str, list] = {}  # service -> anomalies outside its surge, every run
    for seed, eps in BASELINE_RUNS:
        batches, faults = harness.generate(harness.scenario(BASELINES.format(eps=eps)), seed, BASELINE_MINUTES)
        rows = harness.aggregate(batches)["service_metrics"]
        for service in USUAL:
            fault = _fault(faults, service)
            series = harness.series(rows, service)
            found = run(series)
            inside = [w for w in series if w.window_start >= fault.start and w.window_end <= fault.end]
            flagged = {a.window_start for a in found}
            hit = sum(w.window_start in flagged for w in inside)
            outside = [a for a in found if not fault.start <= a.window_start < fault.end]
            requests = sum(w.request_count for w in series) / max(len(series), 1)
            result.notes.append(f"{service} (usually {USUAL[service]:.1%} errors, about {requests:.0f} requests a "
                                f"window, seed {seed}): {hit} of the {len(inside)} surge windows flagged, "
                                f"{len(outside)} outside it")
            if hit < BASELINE_LEAST * len(inside):
                missed.setdefault(service, []).append(f"{hit} of {len(inside)} (seed {seed})")
            false.setdefault(service, []).extend(outside)
    for service, runs in missed.items():
        result.problems.append(
            f"the error surge on {service}, which usually fails {USUAL[service]:.1%} of its requests, was missed: "
            f"{', '.join(runs)} of its windows flagged, at least {BASELINE_LEAST:.0%} should be. A surge is judged "
            "against the series' own usual rate (learned from its clean windows), not a fixed rate or count")
    for service, outside in false.items():
        if outside:
            a = outside[0]
            result.problems.append(
                f"{len(outside)} window(s) of {service} outside its surge were flagged, the first at "
                f"{a.window_start:%H:%M} (error rate {getattr(a, 'value', float('nan')):.3f}): {service} usually "
                f"fails {USUAL[service]:.1%} of its requests, and that is normal for it. Learn each series' usual "
                "rate from its own clean windows instead of a fixed threshold")


def _fault(faults, service):
    return next(f for f in faults if f.service == service and f.cause_fault_id is None)


def _is_anomaly(a) -> bool:
    from obslab.detect.detectors import Anomaly

    return isinstance(a, Anomaly)


def _evidence(a, w, name) -> str:
    """What is wrong with an anomaly's evidence ('' when it holds)."""
    if w is None:
        return "its window_start is not a window of the series"
    if a.detector != name:
        return f"detector is {a.detector!r}, not NAME ({name!r})"
    if a.metric != "error_rate" or abs(a.value - w.error_rate) > 1e-9:
        return f"value {a.value!r} is not the window's error rate {w.error_rate:.4f}"
    if a.baseline is None or not a.baseline < a.threshold < a.value:
        return (f"expected usual rate < threshold < value, got {a.baseline!r} < {a.threshold!r} < {a.value!r}: "
                "the usual rate is what the clean windows before it had, the threshold the rate past which "
                "a window is flagged")
    if a.baseline > 0.05:
        return f"the usual rate {a.baseline:.3f} is far above the service's clean rate: it learned from faulty windows"
    return ""

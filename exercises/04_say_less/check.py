"""Check of exercise 4: the learner's narrator on the facts of four incidents of a real store.

The store holds the real generator's windows of one run with four error surges, and the four
incidents a detector would raise for them (written here, with their evidence):

    payments  strong surge, many requests, long history        -> sure: the template's narrative, unchanged
    ledger    a quiet service (about 20 requests a minute)      -> unsure: few requests
    search    a surge just past its threshold (severity medium) -> unsure: marginal signal
    checkout  its windows begin two minutes before the surge    -> unsure: too little history

For each unsure one the narrative must pass the real grounding check, still say what and when,
say that it is unsure and why (with the fact behind it), and leave out what thin evidence does
not support: the endpoint, the causes, the other services. It must also claim no reason that
this incident's facts do not support (few requests where there were 1,586; too little history
where the history is long): a hedge that lists every reason for every incident says nothing
about any of them. And two unsure incidents, unsure for different reasons, must not get the
same summary once their names and numbers are taken out.
"""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from pathlib import Path

import harness

SCENARIO = """
name: exercise-4
services:
  - name: checkout
  - name: payments
  - name: search
  - name: ledger             # quiet: about 20 requests a minute
    endpoints: [/api/ledger/post, /api/ledger/balance]
    latency_ms: 80
    error_rate: 0.02
    share: 0.05
traffic:
  events_per_second: 20
faults:
  - {type: error_surge, service: payments, start_seconds: 900, duration_seconds: 300, magnitude: 0.3}
  - {type: error_surge, service: ledger, start_seconds: 1500, duration_seconds: 180, magnitude: 0.3}
  - {type: error_surge, service: search, start_seconds: 2100, duration_seconds: 240, magnitude: 0.03}
  - {type: error_surge, service: checkout, start_seconds: 2700, duration_seconds: 240, magnitude: 0.3}
"""
MINUTES = 52
SEED = 11
HEDGES = re.compile(r"\b(may|might|possibly|perhaps|uncertain|unsure|not (?:yet )?(?:sure|certain|confirmed)|"
                    r"unconfirmed|tentative|preliminary|too (?:few|little))\b", re.IGNORECASE)
MIN_REQUESTS = 100  # README.md: fewer requests than this is thin evidence
# Why each unsure incident is unsure, and the words (with its fact) that say so.
REASONS = {
    "ledger": ("it rests on few requests", lambda f: rf"\b{f['requests']}\s+requests\b",
               "the number of requests it rests on, as '<n> requests'"),
    "search": ("its signal is barely past its threshold", lambda f: r"\b(threshold|marginal|medium|barely|weak)",
               "that the signal is barely past its threshold"),
    "checkout": ("there is too little history before it", lambda f: r"\bhistory\b",
                 "that there is too little history before it"),
}


# reason -> (words that claim it, the fact that decides it); a narrative may claim a reason only
# when the incident's facts support it
CLAIMS = {
    "few requests": (r"\b(?:only|just|mere(?:ly)?)\s+\d[\d,]*\s+requests\b|\b(?:too\s+)?few(?:er)?\s+requests\b"
                     r"|\blittle traffic\b|\bsmall sample\b",
                     lambda f: f["requests"] < MIN_REQUESTS,
                     lambda f: f"it rests on {f['requests']} requests (fewer than {MIN_REQUESTS} would be few)"),
    "a marginal signal": (r"\bthreshold\b|\bbarely\b|\bmarginal(?:ly)?\b|\bweak\s+signal\b"
                          r"|\bjust (?:past|above|over)\b",
                          lambda f: f["severity"] == "medium",
                          lambda f: f"its severity is {f['severity']}, not medium"),
    "too little history": (r"\bhistory\b|\bno baseline\b|\btoo little data\b",
                           lambda f: f["before"]["trend"] == "too little history to tell",
                           lambda f: f"its history before it is {f['before']['trend']!r}, long enough to compare"),
}
FIELDS = ("title", "summary", "likely_causes", "impact", "suggested_actions")


def check(folder: Path, scratch: Path) -> harness.Result:
    from obslab.narrate import template
    from obslab.narrate.facts import build_facts
    from obslab.narrate.grounding import narrative_problems

    result = harness.Result()
    path = folder / "narrator.py"
    learner = harness.load_module(path, "exercise_narrator")
    if not result.need(callable(getattr(learner, "narrative", None)),
                       "narrator.py has no function `narrative(facts)`"):
        return result
    store, incidents = _store(scratch)
    summaries = {}  # service -> (its summary without names and numbers, its reasons) of each unsure incident
    for service, incident_id in incidents.items():
        facts = build_facts(store, incident_id, 60)
        kept = copy.deepcopy(facts)
        out = harness.call(path, learner.narrative, facts)
        result.need(facts == kept, f"{service}: narrative() changed the facts it was given; leave them as they are")
        if not isinstance(out, dict) or set(out) != set(template.narrative(kept)):
            result.problems.append(f"{service}: narrative() must return a dict with exactly the fields "
                                   f"{sorted(template.narrative(kept))}, got {out!r:.120}")
            continue
        shown = (f"{service} ({kept['requests']} requests, severity {kept['severity']}, "
                 f"history: {kept['before']['trend']})")
        result.notes.append(f"{shown}:\n      summary: {out['summary']}\n      likely causes: {out['likely_causes']}")
        if service == "payments":
            result.need(out == template.narrative(kept),
                        f"{service}: this incident is sure (many requests, a strong signal, a long history), "
                        "so its narrative should be the template's, unchanged: say less only when unsure")
            continue
        problem = _unsure_problem(service, out, kept, narrative_problems)
        if problem:
            result.problems.append(f"{service}, unsure because {REASONS[service][0]}: {problem}")
        if isinstance(out["summary"], str):
            summaries[service] = (_shape(out["summary"], kept), _reasons(kept))
    same = _same_text(summaries)
    if same:
        result.problems.append(same)
    return result


def _reasons(facts: dict) -> frozenset[str]:
    """The reasons the facts give to be unsure."""
    return frozenset(reason for reason, (_, holds, _) in CLAIMS.items() if holds(facts))


def _unsupported(out: dict, facts: dict) -> str:
    """The first reason the narrative claims that the facts do not support ('' when none)."""
    text = " ".join(x if isinstance(x, str) else " ".join(x) for x in (out[k] for k in FIELDS))
    for reason, (words, holds, fact) in CLAIMS.items():
        said = re.search(words, text, re.IGNORECASE)
        if said and not holds(facts):
            return (f"it gives {reason} as a reason ({said.group(0)!r}), but {fact(facts)}: name only what is "
                    "uncertain about this incident, from its own facts")
    return ""


def _shape(summary: str, facts: dict) -> str:
    """A summary without the incident's names and numbers: what it says of any incident."""
    text = re.sub(re.escape(facts["service"]), "<service>", summary, flags=re.IGNORECASE)
    return re.sub(r"\d[\d,.:]*", "#", text).strip().lower()


def _same_text(summaries: dict) -> str:
    """A problem when two incidents unsure for different reasons get the same summary ('' when none do)."""
    seen: dict[str, tuple[str, frozenset]] = {}
    for service, (shape, reasons) in summaries.items():
        for other, (other_shape, other_reasons) in seen.items():
            if shape == other_shape and reasons != other_reasons:
                return (f"{other} and {service} get the same summary, apart from names and numbers, though "
                        f"{other} is unsure because of {', '.join(sorted(other_reasons))} and {service} because of "
                        f"{', '.join(sorted(reasons))}: say for each incident what is uncertain about it")
        seen[service] = (shape, reasons)
    return ""


def _unsure_problem(service: str, out: dict, facts: dict, narrative_problems) -> str:
    """What is wrong with the narrative of an unsure incident ('' when it says the right amount)."""
    if not all(isinstance(out[k], str) for k in ("title", "summary", "impact")) or not all(
            isinstance(out[k], list) and all(isinstance(x, str) for x in out[k])
            for k in ("likely_causes", "suggested_actions")):
        return "title, summary and impact must be strings; likely_causes and suggested_actions lists of strings"
    ungrounded = narrative_problems(out, facts)
    if ungrounded:
        return "the text is not grounded in the facts: " + "; ".join(ungrounded[:2])
    summary = out["summary"]
    if service.lower() not in summary.lower() or facts["start"] not in summary:
        return f"the summary should still say what and when: name {service} and its start, {facts['start']} UTC"
    if not HEDGES.search(summary):
        return "the summary states the incident as certain: say that it is not sure (e.g. 'may', 'uncertain')"
    _, pattern, what = REASONS[service]
    if not re.search(pattern(facts), summary, re.IGNORECASE):
        return f"the summary should say why it is unsure: {what}"
    unsupported = _unsupported(out, facts)
    if unsupported:
        return unsupported
    endpoints = [e["endpoint"] for e in facts["top_endpoints"]]
    said = [e for e in endpoints if e in summary]
    if said:
        return f"the summary names the endpoint {said[0]}: on thin evidence, leave the 'most affected endpoint' out"
    others = [o["service"] for o in facts["other_services"] if re.search(rf"\b{re.escape(o['service'])}\b", summary,
                                                                         re.IGNORECASE)]
    if others:
        return f"the summary talks about {others[0]}: on thin evidence, leave the other services out"
    if len(out["likely_causes"]) > 1:
        return (f"it lists {len(out['likely_causes'])} likely causes: thin evidence supports at most one, "
                "and no specific one")
    specific = [c for c in out["likely_causes"] if any(e in c for e in endpoints) or re.search(r"\b[45]\d\d\b", c)]
    if specific:
        return f"the likely cause {specific[0]!r} is specific (an endpoint or a status code): thin evidence cannot tell"
    return ""


def _store(scratch: Path):
    """A store with the run's windows and the four incidents; -> (store, service -> incident id)."""
    plan = harness.scenario(SCENARIO)
    batches, faults = harness.generate(plan, SEED, MINUTES)
    tables = harness.aggregate(batches)
    roots = {f.service: f for f in faults if f.cause_fault_id is None}
    # checkout's history begins two minutes before its surge (a service just deployed, or a new store)
    cut = roots["checkout"].start - timedelta(minutes=2)
    for name in tables:
        tables[name] = [r for r in tables[name] if r["service"] != "checkout" or r["window_start"] >= cut]
    severities = {"payments": 5.0, "ledger": 4.0, "search": 1.2, "checkout": 4.0}  # value / threshold
    incidents, anomalies, ids = [], [], {}
    for service, ratio in severities.items():
        fault = roots[service]
        during = [r for r in tables["service_metrics"] if r["service"] == service
                  and fault.start <= r["window_start"] < fault.end]
        before = [r for r in tables["service_metrics"] if r["service"] == service and r["window_start"] < fault.start]
        value = sum(r["error_count"] for r in during) / sum(r["request_count"] for r in during)
        usual = sum(r["error_count"] for r in before[-10:]) / max(sum(r["request_count"] for r in before[-10:]), 1)
        severity = "medium" if ratio < 1.5 else "high" if ratio < 3 else "critical"
        incident_id = ids[service] = f"{service}:errors:{fault.start:%Y%m%dT%H%M%SZ}"
        incidents.append({"incident_id": incident_id, "service": service, "kind": "errors", "status": "resolved",
                          "opened_at": fault.start, "last_anomaly_at": fault.end,
                          "resolved_at": fault.end + timedelta(minutes=3), "severity": severity,
                          "anomaly_count": len(during), "detectors": "error_surge", "endpoints": "",
                          "updated_at": fault.end + timedelta(minutes=3)})
        anomalies += [{"anomaly_id": f"error_surge|error_rate|{service}|*|{r['window_start']:%Y%m%dT%H%M%SZ}",
                       "incident_id": incident_id, "detector": "error_surge", "service": service, "endpoint": None,
                       "metric": "error_rate", "value": value, "baseline": usual, "threshold": value / ratio,
                       "window_start": r["window_start"], "window_end": r["window_end"],
                       "request_count": r["request_count"], "severity": severity, "used_partial_window": False,
                       "detected_at": r["window_end"] + timedelta(minutes=1)} for r in during]
    store = harness.store_with(scratch / "exercise-4.duckdb", tables | {"incidents": incidents, "anomalies": anomalies},
                               plan)
    return store, ids

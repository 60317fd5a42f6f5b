"""Figures pooled over evaluations: per fault type, per benign type and overall, and their table."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from obslab.evaluation.matching import FAULT_KINDS
from obslab.evaluation.results import EVALUATION_START, IN_TIME, OUTCOMES, Evaluation, FaultResult

# The per-type row under which a cascade's effects (faults on a caller) are reported.
CASCADE_EFFECT = "cascade_effect"


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (the value at rank ceil(q * n)): a value that occurred, never an interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def spread(values: list[float]) -> dict:
    """Runs, median, p90 and max of some durations."""
    return {"runs": len(values), "median": quantile(values, 0.5), "p90": quantile(values, 0.9),
            "max": max(values) if values else None}


def fault_group(f: FaultResult) -> str:
    """The per-type row a fault is reported under: its type, or CASCADE_EFFECT for a cascade's effect."""
    return CASCADE_EFFECT if f.cause_fault_id else f.type


def warmed_up(window_seconds: int) -> datetime:
    """When an evaluation's series first have a calibrated baseline (`min_history` + `min_calibration` windows)."""
    from obslab.detect.detectors import DetectorConfig

    cfg = DetectorConfig()
    return EVALUATION_START + timedelta(seconds=window_seconds * (cfg.min_history + cfg.min_calibration))


def _outcomes(faults: list[FaultResult]) -> dict:
    """Counts per outcome, recall in time, and TTD p50/p90 over the faults found in time."""
    ttds = [f.ttd_seconds for f in faults if f.outcome == IN_TIME]
    counts = {outcome: sum(f.outcome == outcome for f in faults) for outcome in OUTCOMES}
    return {"faults": len(faults), **counts, "detected": counts[IN_TIME],  # `detected`: found in time
            "recall": counts[IN_TIME] / len(faults) if faults else None,
            "median_ttd_seconds": quantile(ttds, 0.5), "p90_ttd_seconds": quantile(ttds, 0.9)}


def _by_type(reports: list[Evaluation]) -> dict:
    """Per fault type: outcomes, TTD, fragmentation and precision (see docs/detection.md)."""
    faults = [f for r in reports for f in r.faults]
    incidents = {(n, i.incident_id): i for n, r in enumerate(reports) for i in r.incidents}
    group_of = {(n, f.fault_id): fault_group(f) for n, r in enumerate(reports) for f in r.faults}
    owner: dict[tuple[int, str], str] = {}  # (report, incident) -> group of the fault it is credited to or extra for
    for (n, incident_id), i in incidents.items():
        if i.matched:
            owner[(n, incident_id)] = group_of[(n, i.fault_id)]
    for n, r in enumerate(reports):
        for f in r.faults:
            for incident_id in f.incident_ids:
                owner.setdefault((n, incident_id), fault_group(f))
    unexplained: dict[str, int] = {}  # kind -> false incidents that are no fault's duplicate
    for i in incidents.values():
        if i.cause not in ("fault", "duplicate"):
            unexplained[i.kind] = unexplained.get(i.kind, 0) + 1
    # (report, fault) -> its incidents when found: the one credited to it and those credited to no fault
    sizes = {(n, f.fault_id): sum(1 for x in f.incident_ids if x == f.incident_id or not incidents[(n, x)].matched)
             for n, r in enumerate(reports) for f in r.faults if f.incident_id}
    out = {}
    for group in sorted({fault_group(f) for f in faults}):
        mine = [f for f in faults if fault_group(f) == group]
        own = [size for key, size in sizes.items() if group_of[key] == group]
        first = sum(1 for key, i in incidents.items() if i.matched and owner[key] == group)
        extra = sum(1 for key, i in incidents.items() if i.duplicate and owner.get(key) == group)
        charged = sum(unexplained.get(k, 0) for k in set().union(*(FAULT_KINDS[f.type] for f in mine)))
        out[group] = {**_outcomes(mine),
                      "precision": first / (first + extra + charged) if first + extra + charged else None,
                      "incidents_per_fault": sum(own) / len(own) if own else None,
                      "max_incidents_per_fault": max(own, default=None),
                      "duplicates": extra, "false_of_kind": charged}
    return out


def _benign(reports: list[Evaluation]) -> dict:
    benign = [b for r in reports for b in r.benign]
    out = {}
    for kind in sorted({b.type for b in benign}):
        mine = [b for b in benign if b.type == kind]
        out[kind] = {"events": len(mine), "paged": sum(b.paged for b in mine),
                     "incidents": len({i for b in mine for i in b.incident_ids})}
    return out


def _overall(reports: list[Evaluation]) -> dict:
    faults = [f for r in reports for f in r.faults]
    incidents = [i for r in reports for i in r.incidents]
    benign = [b for r in reports for b in r.benign]
    cascades = [c for r in reports for c in r.cascades]
    causes: dict[str, int] = {}
    for i in incidents:
        if not i.matched:
            causes[i.cause] = causes.get(i.cause, 0) + 1
    # faults that began once a series could have a calibrated baseline, and the recall on them
    warm = [f for r in reports for f in r.faults if f.start >= warmed_up(r.window_seconds)]
    hours = sum(r.duration_seconds for r in reports) / 3600
    matched = sum(i.matched for i in incidents)
    return {
        "runs": len(reports), "simulated_hours": round(hours, 3), "events": sum(r.events for r in reports),
        **_outcomes(faults),
        "faults_after_warm_up": len(warm), "recall_after_warm_up": _outcomes(warm)["recall"],
        "incidents": len(incidents), "precision": matched / len(incidents) if incidents else None,
        "false_incidents": len(incidents) - matched,
        "false_incidents_per_hour": round((len(incidents) - matched) / hours, 3) if hours else None,
        "false_by_cause": causes,
        "benign_events": len(benign), "benign_paged": sum(b.paged for b in benign),
        "cascades": len(cascades), "cascades_named": sum(c.correct for c in cascades),
        "root_cause_accuracy": sum(c.correct for c in cascades) / len(cascades) if cascades else None,
        "detect_run_seconds": spread([x for r in reports for x in r.detect_run_seconds]),
    }


def pool(reports: list[Evaluation]) -> dict:
    """Figures pooled over evaluations: {"overall", "by_type", "benign_by_type"}."""
    return {"overall": _overall(reports), "by_type": _by_type(reports), "benign_by_type": _benign(reports)}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _sec(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} s"


TABLE_HEADER = ("| fault type | faults | in time | late | merged | missed | recall in time | TTD p50 | TTD p90 "
                "| precision | incidents per fault | duplicates | false of its kind |")


def type_table(pooled: dict) -> str:
    """The per-type figures of `pool()` as a markdown table and a line of the rest."""
    lines = [TABLE_HEADER, "|---|" + "---:|" * 12]
    for group, t in pooled["by_type"].items():
        frag = "-" if t["incidents_per_fault"] is None else f"{t['incidents_per_fault']:.2f}"
        lines.append(f"| {group} | {t['faults']} | {t['in_time']} | {t['late']} | {t['merged']} | {t['missed']} | "
                     f"{_pct(t['recall'])} | {_sec(t['median_ttd_seconds'])} | {_sec(t['p90_ttd_seconds'])} | "
                     f"{_pct(t['precision'])} | {frag} | {t['duplicates']} | {t['false_of_kind']} |")
    o = pooled["overall"]
    lines.append(f"| **all** | {o['faults']} | {o['in_time']} | {o['late']} | {o['merged']} | {o['missed']} | "
                 f"{_pct(o['recall'])} | {_sec(o['median_ttd_seconds'])} | {_sec(o['p90_ttd_seconds'])} | "
                 f"{_pct(o['precision'])} | | | {o['false_incidents']} false |")
    return "\n".join(lines + ["", _summary_line(pooled)])


def _summary_line(pooled: dict) -> str:
    o = pooled["overall"]
    benign = ", ".join(f"{k} {v['paged']}/{v['events']}" for k, v in pooled["benign_by_type"].items()) or "none"
    causes = ", ".join(f"{k} {v}" for k, v in sorted(o["false_by_cause"].items())) or "none"
    run = o["detect_run_seconds"]

    def ms(x):
        return "-" if x is None else f"{1000 * x:.0f} ms"

    return (f"benign events that paged: {o['benign_paged']} of {o['benign_events']} ({benign}); "
            f"false incidents by cause: {causes}; root cause named in {o['cascades_named']} of {o['cascades']} "
            f"cascades ({_pct(o['root_cause_accuracy'])}); recall in time after the warm-up: "
            f"{_pct(o['recall_after_warm_up'])} of {o['faults_after_warm_up']}; detection run: median "
            f"{ms(run['median'])}, p90 {ms(run['p90'])}, max {ms(run['max'])} over {run['runs']} runs")

"""Notebook 06's plot: per service, the injected faults as bands and the first detection of each incident."""

from __future__ import annotations

from datetime import timedelta

from obslab.evaluation.results import EVALUATION_START, Evaluation


def timeline_chart(report: Evaluation):
    """An Altair chart: per service, faults as bands and each incident's first detection as a mark."""
    import altair as alt
    import pandas as pd

    services = sorted({f.service for f in report.faults} | {b.service for b in report.benign}
                      | {i.service for i in report.incidents}) or ["-"]
    bands = pd.DataFrame([{"service": f.service, "start": f.start, "end": f.end, "fault": f.type,
                           "outcome": f.outcome, "ttd_seconds": f.ttd_seconds} for f in report.faults]
                         + [{"service": b.service, "start": b.start, "end": b.end, "fault": f"benign: {b.type}",
                             "outcome": "paged" if b.paged else "did not page", "ttd_seconds": None}
                            for b in report.benign],
                         columns=["service", "start", "end", "fault", "outcome", "ttd_seconds"])
    marks = pd.DataFrame([{"service": i.service, "detected_at": i.first_detected_at, "incident": i.incident_id,
                           "kind": i.kind, "result": "matched a fault" if i.matched else "false incident",
                           "cause": i.cause, "early": i.early} for i in report.incidents],
                         columns=["service", "detected_at", "incident", "kind", "result", "cause", "early"])
    scale = alt.Scale(domain=[EVALUATION_START, EVALUATION_START + timedelta(seconds=report.duration_seconds)])
    y = alt.Y("service:N", sort=services, title=None)
    fault_layer = alt.Chart(bands).mark_bar(opacity=0.35, height=28).encode(
        x=alt.X("start:T", scale=scale, title="event time (UTC)"), x2="end:T", y=y,
        color=alt.Color("fault:N", title="injected fault"),
        tooltip=["fault", "service", "start:T", "end:T", "outcome", "ttd_seconds"])
    mark_layer = alt.Chart(marks).mark_point(size=120, filled=True, color="black").encode(
        x="detected_at:T", y=y,
        shape=alt.Shape("result:N", scale=alt.Scale(domain=["matched a fault", "false incident"],
                                                    range=["triangle-down", "cross"]), title="detection"),
        tooltip=["incident", "kind", "detected_at:T", "early", "result", "cause"])
    return (fault_layer + mark_layer).properties(
        width=760, height=60 * len(services),
        title=f"{report.scenario}: faults (bands) and first detections (marks)")

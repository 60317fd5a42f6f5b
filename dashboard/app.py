"""obslab dashboard: metrics, incidents with their narratives, injected faults, pipeline health.

    streamlit run dashboard/app.py --server.address 127.0.0.1 --server.port 8501

Reads the store read-only through `obslab.views`; while another process holds the file it keeps
showing the last data it read, marked "stale since ...". Text from events and from the model is
shown as plain text, never as Markdown or HTML.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import altair as alt
import pandas as pd
import streamlit as st

from obslab import views
from obslab.errors import StoreError
from obslab.settings import load_settings
from obslab.store import Store

ROOT = Path(__file__).resolve().parents[1]
SEVERITY_COLOURS = alt.Scale(domain=["medium", "high", "critical"], range=["#f2c94c", "#f2994a", "#eb5757"])
METRICS = {"error rate (%)": "error_rate_pct", "p95 latency (ms)": "p95_latency_ms",
           "p99 latency (ms)": "p99_latency_ms", "requests per window": "request_count"}
RANGES = {"last 15 min": 15, "last hour": 60, "last 3 hours": 180, "everything": None}

st.set_page_config(page_title="obslab", layout="wide")
settings = load_settings()
store = Store.from_settings(settings)


@st.cache_data(ttl=2, show_spinner=False)
def known_services(path: str) -> list[str]:
    """The services the store has data of; cached like the data, so the filter costs no extra read per tab."""
    return views.services(Store(path, settings.store_lock_timeout_seconds))


def service_options() -> list[str]:
    """The filter's choices: the store's services, or the last ones read while the store is busy."""
    try:
        st.session_state["known_services"] = known_services(str(store.path))
    except StoreError:
        pass  # the data area says why; keep the last list
    return st.session_state.get("known_services", [])


with st.sidebar:
    st.title("obslab")
    options = service_options()
    # A service that left the store (retention) leaves the selection too, or the widget would reject it.
    if "services" in st.session_state:
        st.session_state["services"] = [s for s in st.session_state["services"] if s in options]
    # Nothing chosen means every service, so one that appears later is shown without a click.
    services = st.multiselect("Services", options, key="services", placeholder="all services") or options
    range_name = st.selectbox("Time range", list(RANGES), index=1, key="range")
    metric_name = st.selectbox("Metric", list(METRICS), key="metric")
    refresh = st.number_input("Refresh every (s)", min_value=1, max_value=300,
                              value=int(st.session_state.get("refresh", 5)), key="refresh")
    if settings.window_seconds != 60 or settings.trigger_seconds != 5:
        st.info(f"Demo settings: {settings.window_seconds} s windows, {settings.trigger_seconds:g} s trigger "
                "(production defaults: 60 s and 5 s), so incidents come and go quickly.")


@st.cache_data(ttl=2, show_spinner=False)
def read_all(path: str, services: list[str], minutes: int | None) -> dict:
    """Everything one refresh shows; cached for 2 s, so several open tabs cost one read."""
    store = Store(path, settings.store_lock_timeout_seconds)
    since = views.since_for(minutes, views.newest_window(store))
    return {"overview": views.overview(store, services), "series": views.series(store, services, since),
            "incidents": views.incident_list(store, services, since),
            "anomalies": views.anomaly_list(store, services, since),
            "faults": views.fault_list(store, services, since), "health": views.health(store),
            "runs": views.runs(store), "checks": views.health_checks(store),
            "quality": views.quality_checks(store),
            "read_at": datetime.now(timezone.utc)}


def data() -> dict | None:
    """This refresh's data, or the last data read (marked stale) while the store cannot be read."""
    try:
        fresh = read_all(str(store.path), services, RANGES[range_name])
    except StoreError as err:
        last = st.session_state.get("last_data")
        if last is None:
            st.warning(f"No data yet: {err}")
            return None
        st.warning(f"Stale since {last['read_at']:%H:%M:%S} UTC: the store is busy or unreadable ({err}).")
        return last
    st.session_state["last_data"] = fresh
    return fresh


def overview_row(d: dict) -> None:
    cols = st.columns(max(len(d["overview"]), 1))
    for col, row in zip(cols, d["overview"].itertuples()):
        with col:
            st.metric(f"{row.service} · {row.status}", f"{row.requests_per_second:.1f} req/s",
                      help=f"window {row.window_start:%H:%M:%S}-{row.window_end:%H:%M:%S} UTC, {row.rate_basis}")
            st.text(f"errors {100 * row.error_rate:.1f}%   p95 {row.p95_latency_ms:.0f} ms   "
                    f"p99 {row.p99_latency_ms:.0f} ms")


def service_chart(d: dict, service: str, column: str, label: str) -> alt.LayerChart:
    s = d["series"][d["series"].service == service]
    inc = d["incidents"][d["incidents"].service == service]
    faults = d["faults"][d["faults"].service == service]
    y = alt.Y(f"{column}:Q", title=label)
    line = alt.Chart(s).mark_line(point=True).encode(
        x=alt.X("window_start:T", title="window (UTC)"), y=y,
        strokeDash=alt.StrokeDash("window:N", title="window",
                                  scale=alt.Scale(domain=["final", "open (partial)"], range=[[1, 0], [4, 3]])),
        tooltip=["window_start:T", "request_count", "error_rate_pct", "p95_latency_ms", "p99_latency_ms", "window"])
    bands = alt.Chart(inc).mark_rect(opacity=0.25).encode(
        x="opened_at:T", x2="last_anomaly_at:T", color=alt.Color("severity:N", scale=SEVERITY_COLOURS),
        tooltip=["incident_id", "kind", "severity", "status"])
    truth = alt.Chart(faults).mark_rect(opacity=0.6, height=8, color="#6c5ce7").encode(
        x="start_time:T", x2="end_time:T", y=alt.value(4), tooltip=["fault_type", "endpoint", "magnitude"])
    return (bands + truth + line).properties(height=220, title=f"{service}: {label} — incident bands by "
                                                              "severity, injected faults as the purple strip")


def _items(text) -> list:
    """A JSON list stored as text (causes, actions); anything else shows as nothing."""
    try:
        value = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def incident_cards(d: dict) -> None:
    if d["incidents"].empty:
        st.text("No incident in this range.")
    for row in d["incidents"].itertuples():
        mark = ""
        if isinstance(row.backend, str) and row.backend == "template":
            mark = " · rule-based text" + (f" (model fell back: {row.fallback_reason})" if row.fallback_reason else "")
        elif row.grounded is False:
            mark = " · NOT GROUNDED"
        header = f"{row.service} · {row.kind} · {row.severity} · {row.status} · {row.opened_at:%H:%M} UTC{mark}"
        with st.expander(header, expanded=row.status == "open"):
            if isinstance(row.title, str):
                st.text(row.title)
                st.text(row.summary)
                st.caption(f"backend {row.backend} · model {row.model or '-'} · grounded {row.grounded} · "
                           f"{row.latency_ms:.0f} ms")
                st.text("Likely causes:\n" + "\n".join(f"- {c}" for c in _items(row.likely_causes)))
                st.text("Impact: " + row.impact)
                st.text("Suggested actions:\n" + "\n".join(f"- {a}" for a in _items(row.suggested_actions)))
                st.json(row.facts, expanded=False)
            else:
                st.text("Not narrated yet.")


def health_panel(d: dict) -> None:
    h = d["health"]
    c1, c2, c3 = st.columns(3)
    c1.metric("Data freshness", "-" if h["freshness_seconds"] is None else f"{h['freshness_seconds']:.0f} s",
              help=f"newest event time {h['last_event']}")
    c2.metric("Dead letters", f"{h['dead_letters']:,}", help="malformed or late events set aside")
    c3.metric("Dead-letter rate", f"{100 * h['dead_letter_rate']:.2f} %")
    st.dataframe(pd.DataFrame([{"stage": k, "last activity (UTC)": v} for k, v in h["stages"].items()]),
                 hide_index=True, key="stages")
    st.subheader("Monitoring checks (newest run)")
    if d["checks"].empty:
        st.text("No monitoring run yet: `obslab health` or the monitoring_dag records one.")
    else:
        st.dataframe(d["checks"], hide_index=True, key="health_checks")
    st.subheader("Data quality (newest run)")
    if d["quality"].empty:
        st.text("No data-quality run yet: `obslab quality` or the data_quality_dag records one.")
    else:
        st.dataframe(d["quality"], hide_index=True, key="quality_checks")


def notebook_link(path: str | None) -> str | None:
    """The kept notebook in JupyterLab (`make lab` serves the project folder on 127.0.0.1:8888)."""
    if not isinstance(path, str):
        return None
    try:
        relative = Path(path).resolve().relative_to(ROOT)
    except ValueError:
        return None
    return "http://127.0.0.1:8888/lab/tree/" + quote(str(relative))


def runs_panel(d: dict) -> None:
    dag_runs, tasks = d["runs"]
    if dag_runs.empty:
        st.text("No scheduled run yet: `make airflow` runs the notebooks on a schedule (see docs/operations.md).")
        return
    st.dataframe(dag_runs, hide_index=True, key="dag_runs",
                 column_config={"seconds": st.column_config.NumberColumn("seconds", format="%.0f")})
    tasks = tasks.assign(open=[notebook_link(p) for p in tasks.output_notebook])
    st.dataframe(tasks, hide_index=True, key="task_runs",
                 column_config={"seconds": st.column_config.NumberColumn("seconds", format="%.0f"),
                                "open": st.column_config.LinkColumn("JupyterLab", display_text="open")})
    st.caption("Each task's executed notebook (code and outputs) is kept at output_notebook; open it with "
               "`make lab` (JupyterLab on 127.0.0.1:8888) or `.venv/bin/jupyter lab <path>`.")


@st.fragment(run_every=f"{int(refresh)}s")
def live() -> None:
    d = data()
    if d is None:
        return
    overview_row(d)
    tab_charts, tab_incidents, tab_timeline, tab_health, tab_runs = st.tabs(
        ["Metrics", "Incidents", "Anomaly timeline", "Pipeline health", "Runs"])
    with tab_charts:
        for service in services:
            st.altair_chart(service_chart(d, service, METRICS[metric_name], metric_name), width="stretch")
    with tab_incidents:
        incident_cards(d)
    with tab_timeline:
        a = d["anomalies"]
        st.altair_chart(alt.Chart(a).mark_circle(size=80).encode(
            x=alt.X("window_start:T", title="window (UTC)"), y=alt.Y("service:N"),
            color=alt.Color("severity:N", scale=SEVERITY_COLOURS), shape="used_partial_window:N",
            tooltip=["detector", "endpoint", "metric", "value", "threshold", "severity", "incident_id"]),
            width="stretch")
        st.dataframe(d["faults"], hide_index=True, key="faults")
    with tab_health:
        health_panel(d)
    with tab_runs:
        runs_panel(d)
    st.caption(f"read {d['read_at']:%H:%M:%S} UTC from {settings.duckdb_path}")


live()

"""The facts of one incident, read from the store only: everything the narrator may say.

Numbers are rounded here, once, to the precision they are shown with (percentages to 0.1, latency
to whole ms, counts to whole requests), so the grounding check compares text against exactly what
the model was given. Names that come from events (endpoints) are data: they are kept verbatim
here, and quoted wherever they are shown.

    incidents + anomalies                 -> what, when, how bad (the strongest signal)
    service_metrics (incident windows)    -> requests, error rate, latency during the incident
    service_metrics (windows before)      -> the baseline and the trend before it
    endpoint_metrics, status_counts       -> the most affected endpoints, the error mix
    service_metrics, incidents (others)   -> the other services in the data, and whether they are healthy
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

BEFORE_WINDOWS = 10  # windows before the incident that form its baseline and trend
_LABELS = {"errors": "error rate", "latency": "latency", "traffic": "traffic"}


def build_facts(store, incident_id: str, window_seconds: int) -> dict:
    """The facts of an incident as a JSON-ready dict (KeyError if there is no such incident)."""
    with store.reader() as con:
        rows = con.execute("SELECT service, kind, status, opened_at, last_anomaly_at, severity FROM incidents "
                           "WHERE incident_id = ?", [incident_id]).fetchall()
        if not rows:
            raise KeyError(incident_id)
        service, kind, status, opened, last, severity = rows[0]
        strongest = con.execute(
            "SELECT detector, metric, value, baseline, threshold FROM anomalies WHERE incident_id = ? "
            "ORDER BY endpoint IS NOT NULL, value / nullif(threshold, 0) DESC LIMIT 1", [incident_id]).fetchall()
        during = _totals(con, service, opened, last)
        before = _totals(con, service, opened - timedelta(seconds=window_seconds * BEFORE_WINDOWS), opened)
        trend = _trend(con, service, kind, opened, window_seconds)
        codes = con.execute(
            "SELECT status_code, sum(count) FROM status_counts WHERE service = ? AND window_start >= ? "
            "AND window_start < ? GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3", [service, opened, last]).fetchall()
        endpoints = con.execute("""
            SELECT endpoint, sum(request_count), sum(error_count), sum(latency_sum_ms) / sum(request_count)
            FROM endpoint_metrics WHERE service = ? AND window_start >= ? AND window_start < ?
            GROUP BY 1""", [service, opened, last]).fetchall()
        others = con.execute(
            "SELECT DISTINCT service, kind FROM incidents WHERE service <> ? AND opened_at < ? "
            "AND last_anomaly_at > ?", [service, last, opened]).fetchall()
        # The other services are the ones the store has seen around the incident (its baseline
        # period and the incident itself), never a built-in list: (service, requests during it).
        seen = con.execute(
            "SELECT service, coalesce(sum(request_count) FILTER (WHERE window_start >= ?), 0) FROM service_metrics "
            "WHERE service <> ? AND window_start >= ? AND window_start < ? GROUP BY 1",
            [opened, service, opened - timedelta(seconds=window_seconds * BEFORE_WINDOWS), last]).fetchall()
    minutes = max(1, round((last - opened).total_seconds() / 60))
    facts: dict = {
        "incident_id": incident_id, "service": service, "kind": kind, "problem": _LABELS.get(kind, kind),
        "severity": severity, "status": status,
        "date": f"{opened.astimezone(timezone.utc):%Y-%m-%d}",
        "start": _hhmm(opened), "end": _hhmm(last), "duration_minutes": minutes,
    }
    if strongest:
        detector, metric, value, baseline, threshold = strongest[0]
        facts["signal"] = _signal(detector, metric, value, baseline, threshold)
    facts["requests"] = during["requests"]
    facts["requests_per_minute"] = round(during["requests"] / minutes)
    facts["error_rate_pct"] = during["error_rate_pct"]
    facts["avg_latency_ms"] = during["avg_latency_ms"]
    facts["p99_latency_ms"] = during["p99_latency_ms"]
    facts["before"] = {
        "requests_per_minute": round(before["requests"] / max(1, before["minutes"])) if before["minutes"] else None,
        "error_rate_pct": before["error_rate_pct"], "avg_latency_ms": before["avg_latency_ms"],
        "p99_latency_ms": before["p99_latency_ms"], "trend": trend,
    }
    facts["status_codes"] = [{"code": int(c), "count": int(n)} for c, n in codes]
    facts["top_endpoints"] = _top_endpoints(endpoints, kind, during)
    kinds = {}
    for other, other_kind in others:
        kinds.setdefault(other, []).append(_LABELS.get(other_kind, other_kind))
    during_requests = dict(seen)
    facts["other_services"] = [
        {"service": s, "state": "also has a " + " and ".join(sorted(kinds[s])) + " incident" if s in kinds
         else "healthy" if during_requests.get(s) else "sent no requests"}
        for s in sorted(set(during_requests) | set(kinds))]
    return facts


def facts_hash(facts: dict) -> str:
    """sha256 of the canonical JSON of the facts: the same facts are narrated once."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def render_facts(facts: dict) -> str:
    """The facts as short `key: value` lines, as a prompt shows them. Names from events are quoted
    JSON strings, so text inside them reads as data, never as part of the prompt."""
    lines = [f"service: {facts['service']}", f"problem: {facts['problem']} ({facts['severity']})",
             f"time: {facts['start']} to {facts['end']} UTC ({facts['duration_minutes']} min)"]
    signal = facts.get("signal")
    if signal:
        lines.append(f"signal: {signal['label']} {shown(signal['value'])}{signal['unit']}, usually "
                     f"{shown(signal['baseline'])}{signal['unit']} ({shown(signal['ratio'])} times), "
                     f"threshold {shown(signal['threshold'])}{signal['unit']}")
    lines.append(f"requests: {facts['requests']} ({facts['requests_per_minute']} per minute, usually "
                 f"{shown(facts['before']['requests_per_minute'])})")
    lines.append(f"errors: {shown(facts['error_rate_pct'])}% (usually {shown(facts['before']['error_rate_pct'])}%)")
    lines.append(f"latency: avg {shown(facts['avg_latency_ms'])} ms, p99 {shown(facts['p99_latency_ms'])} ms "
                 f"(usually {shown(facts['before']['avg_latency_ms'])} ms and {shown(facts['before']['p99_latency_ms'])} ms)")
    if facts["status_codes"]:
        lines.append("status codes: " + ", ".join(f"{c['code']} x{c['count']}" for c in facts["status_codes"]))
    for e in facts["top_endpoints"]:
        lines.append(f"endpoint: {quoted(e['endpoint'])} {e['requests']} requests, "
                     f"{shown(e['error_rate_pct'])}% errors, avg {shown(e['avg_latency_ms'])} ms")
    lines.append(f"before: {facts['before']['trend']}")
    lines.append(f"others: {others_line(facts)}")
    return "\n".join(lines)


def others_line(facts: dict) -> str:
    """The other services the data holds and their state, as one line ('none' when there are none)."""
    return ", ".join(f"{o['service']} {o['state']}" for o in facts["other_services"]) or "none"


@dataclass(frozen=True)
class Quantity:
    """One number of the facts with what it measures: the grounding check's reference."""

    kind: str  # latency (ms) | percent | count (requests) | rate (requests/min) | duration (min) | ratio
    value: float
    name: str  # where it is in the facts, e.g. "before.p99_latency_ms", for messages


def quantities(facts: dict) -> list[Quantity]:
    """Every quantity in the facts, typed. Status codes, times and dates are not quantities: the
    grounding check compares them as codes, times and dates, never as amounts."""
    out: list[Quantity] = []

    def add(kind: str, value, name: str) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(Quantity(kind, float(value), name))

    before = facts.get("before") or {}
    for where, source in (("", facts), ("before.", before)):
        add("rate", source.get("requests_per_minute"), where + "requests_per_minute")
        add("percent", source.get("error_rate_pct"), where + "error_rate_pct")
        add("latency", source.get("avg_latency_ms"), where + "avg_latency_ms")
        add("latency", source.get("p99_latency_ms"), where + "p99_latency_ms")
    add("count", facts.get("requests"), "requests")
    add("duration", facts.get("duration_minutes"), "duration_minutes")
    signal = facts.get("signal") or {}
    if signal:
        unit = signal.get("unit", "").strip()
        # error rate in %, latency in ms, request_count per window, error-budget burn as a multiple
        kind = {"%": "percent", "ms": "latency"}.get(unit) or (
            "count" if signal.get("label") == "requests per window" else "ratio")
        for key in ("value", "baseline", "threshold"):
            add(kind, signal.get(key), "signal." + key)
        add("ratio", signal.get("ratio"), "signal.ratio")
    for code in facts.get("status_codes", []):
        add("count", code.get("count"), f"status code {code.get('code')} count")
    for e in facts.get("top_endpoints", []):
        add("count", e.get("requests"), "endpoint requests")
        add("percent", e.get("error_rate_pct"), "endpoint error_rate_pct")
        add("latency", e.get("avg_latency_ms"), "endpoint avg_latency_ms")
    return out


# ---------------------------------------------------------------------------- helpers

def _totals(con, service: str, start: datetime, end: datetime) -> dict:
    row = con.execute(
        "SELECT sum(request_count), sum(error_count), sum(avg_latency_ms * request_count), max(p99_latency_ms), "
        "count(*) FROM service_metrics WHERE service = ? AND window_start >= ? AND window_start < ?",
        [service, start, end]).fetchall()[0]
    requests, errors, latency_sum, p99, windows = row
    requests = int(requests or 0)
    return {"requests": requests, "minutes": windows or 0,
            "error_rate_pct": round(100 * (errors or 0) / requests, 1) if requests else None,
            "avg_latency_ms": round(latency_sum / requests) if requests else None,
            "p99_latency_ms": round(p99) if p99 is not None else None}


def _trend(con, service: str, kind: str, opened: datetime, window_seconds: int) -> str:
    """steady | rising | falling: the incident's metric over the windows before it (half vs half)."""
    metric = {"errors": "error_rate", "latency": "avg_latency_ms", "traffic": "request_count"}.get(kind, "error_rate")
    values = [r[0] for r in con.execute(
        f"SELECT {metric} FROM service_metrics WHERE service = ? AND window_start >= ? AND window_start < ? "
        "ORDER BY window_start", [service, opened - timedelta(seconds=window_seconds * BEFORE_WINDOWS), opened]).fetchall()]
    if len(values) < 4:
        return "too little history to tell"
    half = len(values) // 2
    first, second = sum(values[:half]) / half, sum(values[half:]) / (len(values) - half)
    if first > 0 and second > 1.25 * first:
        return "rising"
    if second < 0.8 * first:
        return "falling"
    return "steady"


def _signal(detector: str, metric: str, value: float, baseline: float | None, threshold: float) -> dict:
    pct = metric == "error_rate"
    scale = 100.0 if pct else 1.0
    digits = 1 if pct else 0
    base = round((baseline or 0) * scale, digits)
    shown = round(value * scale, digits)
    return {"detector": detector, "label": {"error_rate": "error rate", "avg_latency_ms": "average latency",
                                             "request_count": "requests per window",
                                             "error_budget_burn": "error budget burn"}.get(metric, metric),
            "unit": "%" if pct else " ms" if metric.endswith("_ms") else "",
            "value": shown if digits else int(shown), "baseline": base if digits else int(base),
            "threshold": round(threshold * scale, digits) if digits else int(round(threshold)),
            "ratio": round(value / baseline, 1) if baseline else None}


def _top_endpoints(rows, kind: str, during: dict, limit: int = 2) -> list[dict]:
    """The endpoints that carry most of the problem: by errors, by latency, or (traffic) by volume."""
    def key(r):
        endpoint, requests, errors, avg = r
        return {"errors": errors or 0, "latency": avg or 0}.get(kind, requests or 0)

    out = []
    for endpoint, requests, errors, avg in sorted(rows, key=key, reverse=True)[:limit]:
        if not requests:
            continue
        out.append({"endpoint": endpoint, "requests": int(requests),
                    "error_rate_pct": round(100 * (errors or 0) / requests, 1), "avg_latency_ms": round(avg or 0)})
    return out


def _hhmm(t: datetime) -> str:
    return f"{t.astimezone(timezone.utc):%H:%M}"


def capital(name: str) -> str:
    """A name from the data at the start of a sentence: first letter upper, the rest as spelled."""
    return name[:1].upper() + name[1:]


def quoted(name: str) -> str:
    """A name from the data as the narrator shows it: a JSON string of at most 80 characters, so
    whatever it says reads as a value, never as prose or prompt text."""
    return json.dumps(name[:80])


def shown(x) -> str:
    """A fact number as the narrator writes it: whole numbers without '.0', None as 'unknown'."""
    if x is None:
        return "unknown"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)

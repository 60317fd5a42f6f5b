"""The grounding check: generated text may only state what the facts hold.

- Every number must be one of the facts' numbers, allowing rounding to the precision written
  ("32%" for 31.5, "1,240" for 1240); times (09:05) and dates must be the facts' own.
- A status code (a number that is a known HTTP status) must be one of the facts' status codes,
  unless it is written with a unit as a quantity ("504 requests") that the facts hold.
- A service named must be the incident's or one of the other services in the facts.
- An endpoint (a path) must be one of the facts' endpoints, and shown inside quotes: endpoint names
  come from events and are data, never words of the narrative.

`problems(text, facts)` lists what is wrong; an empty list means grounded. `missing_headline`
adds one requirement for a model's summary: it states the incident's main number.
"""

from __future__ import annotations

import json
import re

from obslab.generator.profiles import SERVICES
from obslab.narrate.facts import numbers_of

_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_NUMBER = re.compile(r"(?<![\w/.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(\s*(?:%|ms\b|requests?\b|minutes?\b|min\b|s\b|seconds?\b|times\b|x\b))?")
_PATH = re.compile(r"/[A-Za-z0-9_.~%-]+(?:/[A-Za-z0-9_.~%-]+)*")
_STATUS_CODES = {100, 101, 200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409, 410, 413, 422,
                 429, 499, 500, 501, 502, 503, 504, 507, 508, 511, 520, 521, 522, 523, 524, 599}


def problems(text: str, facts: dict) -> list[str]:
    """Why the text is not grounded in the facts (empty when it is)."""
    found: list[str] = []
    allowed = numbers_of(facts)
    times = {facts.get("start"), facts.get("end")}
    codes = {c["code"] for c in facts.get("status_codes", [])}
    rest = text
    for m in _DATE.finditer(text):
        if m.group(0) != facts.get("date"):
            found.append(f"date {m.group(0)} is not in the facts")
    rest = _DATE.sub(" ", rest)
    for m in _TIME.finditer(rest):
        hhmm = f"{int(m.group(1)):02d}:{m.group(2)}"
        if hhmm not in times:
            found.append(f"time {m.group(0)} is not in the facts")
    rest = _TIME.sub(" ", rest)
    for endpoint in sorted({e["endpoint"] for e in facts.get("top_endpoints", [])}, key=len, reverse=True):
        for quoted in (json.dumps(endpoint), json.dumps(endpoint[:80]), f'"{endpoint}"', f"'{endpoint}'", f"`{endpoint}`", f"“{endpoint}”"):
            rest = rest.replace(quoted, " ")
        if endpoint in rest:
            found.append(f"endpoint {endpoint} is not quoted")
            rest = rest.replace(endpoint, " ")
    for m in _PATH.finditer(rest):
        found.append(f"endpoint {m.group(0)} is not in the facts")
    rest = _PATH.sub(" ", rest)
    for m in _NUMBER.finditer(rest):
        whole, fraction, unit = m.group(1), m.group(2) or "", (m.group(3) or "").strip()
        value = float(whole.replace(",", "") + fraction)
        decimals = len(fraction) - 1 if fraction else 0
        if value.is_integer() and int(value) in _STATUS_CODES and not unit and int(value) not in codes:
            found.append(f"status code {int(value)} is not in the facts")
            continue
        if not any(abs(value - a) <= 0.5 * 10 ** -decimals + 1e-9 for a in allowed):
            found.append(f"number {m.group(0).strip()} is not in the facts")
    named = {facts.get("service")} | {o["service"] for o in facts.get("other_services", [])}
    for service in SERVICES:
        if re.search(rf"\b{re.escape(service)}\b", text, re.IGNORECASE) and service not in named:
            found.append(f"service {service} is not in the facts")
    return found


def missing_headline(text: str, facts: dict) -> list[str]:
    """A summary must state the incident's headline number (the error rate of an errors incident,
    the latency of a latency one, the request rate of a traffic one): a grounded text about
    something else, such as latency for an errors incident, is not a summary of it."""
    wanted = {"errors": ("error rate", [facts.get("error_rate_pct")]),
              "latency": ("latency", [facts.get("avg_latency_ms"), facts.get("p99_latency_ms")]),
              "traffic": ("request rate", [facts.get("requests_per_minute")])}.get(facts.get("kind"))
    if wanted is None:
        return []
    label, values = wanted
    signal = facts.get("signal") or {}
    values = [v for v in values + [signal.get("value")] if v is not None]
    plain = _TIME.sub(" ", _DATE.sub(" ", text))
    for m in _NUMBER.finditer(plain):
        fraction = m.group(2) or ""
        value = float(m.group(1).replace(",", "") + fraction)
        decimals = len(fraction) - 1 if fraction else 0
        if any(abs(value - v) <= 0.5 * 10 ** -decimals + 1e-9 for v in values):
            return []
    return [f"does not state the {label} ({', '.join(str(v) for v in values)})"]

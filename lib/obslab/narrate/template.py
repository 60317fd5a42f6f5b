"""Deterministic narratives built from the facts by rules: the `template` backend, the fallback of
every other backend, and (with the embedded model) the fields other than the summary.

Every sentence takes its numbers and names from the facts, so the output is grounded by
construction (the tests check it with the same grounding check as the models' text).
"""

from __future__ import annotations

from obslab.narrate.facts import capital, quoted as q, shown

MAX_SUMMARY_WORDS = 80


def title(f: dict) -> str:
    return f"{f['service']}: {f['problem']} {'incident' if f['status'] == 'open' else 'incident (resolved)'}, {f['severity']}"


def summary(f: dict) -> str:
    """At most MAX_SUMMARY_WORDS words: what happened, how bad, where, and what else was affected."""
    b = f["before"]
    when = f"from {f['start']} to {f['end']} UTC"
    if f["kind"] == "errors":
        first = (f"{capital(f['service'])} failed {shown(f['error_rate_pct'])}% of {f['requests']} requests {when}, "
                 f"against a usual {shown(b['error_rate_pct'])}%.")
        codes = f["status_codes"]
        detail = ("Most failures were " + " and ".join(f"{c['code']} ({c['count']})" for c in codes[:2]) + "."
                  if codes else "")
    elif f["kind"] == "latency":
        first = (f"{capital(f['service'])} slowed down {when}: average latency {shown(f['avg_latency_ms'])} ms and "
                 f"p99 {shown(f['p99_latency_ms'])} ms, against a usual {shown(b['avg_latency_ms'])} ms and "
                 f"{shown(b['p99_latency_ms'])} ms.")
        detail = ""
    else:
        first = (f"{capital(f['service'])} received {f['requests_per_minute']} requests per minute {when}, "
                 f"against a usual {shown(b['requests_per_minute'])}.")
        detail = ""
    top = f["top_endpoints"]
    where = f"The most affected endpoint was {q(top[0]['endpoint'])}." if top and f["kind"] != "traffic" else ""
    # The other services are those the data holds (none: nothing to say about them).
    by_state: dict[str, list[str]] = {}
    for o in f["other_services"]:
        state = o["state"] if o["state"] in ("healthy", "sent no requests") else "had incidents too"
        by_state.setdefault(state, []).append(o["service"])
    others = [f"{capital(_listed(names))} {'stayed healthy' if state == 'healthy' else state}."
              for state, names in sorted(by_state.items(), key=lambda x: x[0] != "healthy")]
    return _bounded(" ".join(x for x in (first, detail, where, *others) if x))


def likely_causes(f: dict) -> list[str]:
    """Ranked hypotheses from the shape of the facts (not a diagnosis)."""
    causes = []
    top = f["top_endpoints"]
    concentrated = top and f["requests"] and top[0]["requests"] < f["requests"] and (
        f["kind"] == "errors" and len(top) > 1 and top[0]["error_rate_pct"] > 2 * top[1]["error_rate_pct"]
        or f["kind"] == "latency" and len(top) > 1 and top[0]["avg_latency_ms"] > 2 * top[1]["avg_latency_ms"])
    if f["kind"] == "errors":
        codes = [c["code"] for c in f["status_codes"]]
        if codes and codes[0] == 503:
            causes.append("a dependency or an instance is unavailable (mostly 503 responses)")
        elif codes and codes[0] == 504:
            causes.append("calls to a downstream service time out (mostly 504 responses)")
        elif codes and codes[0] == 429:
            causes.append("requests are being rate limited (mostly 429 responses)")
        elif codes and codes[0] == 500:
            causes.append("an application error, often from a recent change (mostly 500 responses)")
        causes.append(f"a fault local to {q(top[0]['endpoint'])}" if concentrated
                      else "a service-wide problem: the errors are spread over its endpoints")
    elif f["kind"] == "latency":
        if f["before"]["trend"] == "rising":
            causes.append("gradual saturation: a growing queue, a leak or a filling resource (latency was rising before)")
        else:
            causes.append("a sudden slowdown: a slow downstream dependency, a deploy or a noisy neighbour")
        if concentrated:
            causes.append(f"something specific to {q(top[0]['endpoint'])}, the slowest endpoint")
    else:
        causes.append("fewer requests reach the service: an upstream, routing or load-balancer problem")
        causes.append("clients failing before they call it (a broken release of a caller)")
    return causes


def impact(f: dict) -> str:
    b = f["before"]
    if f["kind"] == "errors":
        return (f"{shown(f['error_rate_pct'])}% of {f['requests']} requests to {f['service']} failed between "
                f"{f['start']} and {f['end']} UTC (usually {shown(b['error_rate_pct'])}%).")
    if f["kind"] == "latency":
        return (f"Requests to {f['service']} took {shown(f['avg_latency_ms'])} ms on average (p99 "
                f"{shown(f['p99_latency_ms'])} ms) between {f['start']} and {f['end']} UTC.")
    return (f"{f['service']} handled {f['requests_per_minute']} requests per minute between {f['start']} and "
            f"{f['end']} UTC, usually {shown(b['requests_per_minute'])}.")


def suggested_actions(f: dict) -> list[str]:
    top = f["top_endpoints"]
    endpoint = q(top[0]["endpoint"]) if top else f"the endpoints of {f['service']}"
    if f["kind"] == "errors":
        codes = " and ".join(str(c["code"]) for c in f["status_codes"][:2]) or "error"
        return [f"Look at the {codes} responses of {endpoint} in the logs from {f['start']} UTC.",
                f"Check the health of the dependencies of {f['service']}.",
                f"If {f['service']} was deployed shortly before {f['start']} UTC, consider rolling back."]
    if f["kind"] == "latency":
        return [f"Compare the latency of {endpoint} with its downstream calls from {f['start']} UTC.",
                f"Check CPU, memory and connection pools of {f['service']}.",
                "Look for a deploy or a traffic change just before the slowdown."]
    return [f"Check the callers of {f['service']} and the routing in front of it (DNS, ingress, load balancer).",
            "Confirm with the clients' own error rates whether requests are failing before they arrive."]


def narrative(f: dict) -> dict:
    """All five fields by rule."""
    return {"title": title(f), "summary": summary(f), "likely_causes": likely_causes(f), "impact": impact(f),
            "suggested_actions": suggested_actions(f)}


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _bounded(text: str, words: int = MAX_SUMMARY_WORDS) -> str:
    parts = text.split()
    return text if len(parts) <= words else " ".join(parts[:words]).rstrip(",;") + " ..."

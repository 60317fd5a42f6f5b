"""Exercise 4, a reference solution (copy over exercises/04_say_less/narrator.py)."""

from __future__ import annotations

from obslab.narrate import template
from obslab.narrate.facts import capital

MIN_REQUESTS = 100  # an incident resting on fewer requests than this is thin evidence


def unsure(facts: dict) -> list[str]:
    """Why the narrator should not be sure of this incident, one short reason each ([]: it can be sure)."""
    reasons: list[str] = []
    if facts["requests"] < MIN_REQUESTS:
        reasons.append(f"it rests on only {facts['requests']} requests")
    if facts["severity"] == "medium":
        reasons.append("its signal is barely past its threshold")
    if facts["before"]["trend"] == "too little history to tell":
        reasons.append("there is too little history before it to compare with")
    return reasons


def narrative(facts: dict) -> dict:
    """The five fields: the template's when it is sure, a shorter, hedged narrative when it is not."""
    full = template.narrative(facts)
    reasons = unsure(facts)
    if not reasons:
        return full
    service = facts["service"]
    because = ", ".join(reasons[:-1]) + (" and " if len(reasons) > 1 else "") + reasons[-1]
    return {
        "title": f"{full['title']} (unconfirmed)",
        "summary": (f"{capital(service)} may have a problem with its {facts['problem']} from {facts['start']} UTC, "
                    f"but this is uncertain: {because}."),
        "likely_causes": ["too little evidence to tell a cause yet"],
        "impact": full["impact"],
        "suggested_actions": [f"Watch the next windows of {service} before acting on this incident."],
    }

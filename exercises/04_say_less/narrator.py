"""Exercise 4: make the narrator say less when it is unsure.

`narrative(facts)` gets the facts of one incident (obslab.narrate.facts.build_facts: the only
things the narrator may say) and returns the five fields of its narrative: title, summary,
likely_causes, impact, suggested_actions. Today it returns the rule-based template's narrative
whatever the evidence. Make it say less when the evidence is thin (see README.md), then run

    make check-exercise 4
"""

from __future__ import annotations

from obslab.narrate import template

MIN_REQUESTS = 100  # an incident resting on fewer requests than this is thin evidence


def unsure(facts: dict) -> list[str]:
    """Why the narrator should not be sure of this incident, one short reason each ([]: it can be sure)."""
    reasons: list[str] = []
    # TODO: few requests (facts["requests"]), a marginal signal (facts["severity"]), too little
    # history before it (facts["before"]["trend"]).
    return reasons


def narrative(facts: dict) -> dict:
    """The five fields: the template's when it is sure, a shorter, hedged narrative when it is not."""
    full = template.narrative(facts)
    reasons = unsure(facts)
    if not reasons:
        return full
    # TODO: say what and when, that it is unsure and why; leave out the endpoint, the causes and the
    # other services.
    return full

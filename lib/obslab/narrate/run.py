"""Narrate incidents: facts -> backend -> grounding check -> incident_summaries.

Per incident that changed since its last summary (or never had one):

    facts = build_facts(store)            same facts hash as a stored summary -> nothing to do
    backend.generate(attempt 0)           grounded -> stored
    backend.generate(attempt 1)           (another try: other example order, or a little sampling)
    template                              stored instead, with the reason (ungrounded, timeout, error)

A backend that fails, hangs or talks nonsense costs at most NARRATE_TIMEOUT_SECONDS per incident,
in the narrator's own process: the stream and the detector never wait for it. (`obslab narrate`
loads and warms up the embedded model before its first pass, outside that timeout: on a busy demo
machine the first load and prompt took over 30 s once and fell back to the template.)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from obslab.health import beat
from obslab.narrate import template
from obslab.narrate.facts import build_facts, facts_hash
from obslab.narrate.grounding import missing_headline, narrative_problems
from obslab.narrate.prompts import PROMPT_VERSION
from obslab.settings import Settings

log = logging.getLogger(__name__)

FIELDS = ("title", "summary", "likely_causes", "impact", "suggested_actions")


@dataclass
class Narration:
    """One stored summary, as a row of incident_summaries plus the prompt that produced it."""

    row: dict
    prompt: str


def compose(facts: dict, backend, settings: Settings) -> Narration:
    """Generate, check, retry once, fall back: the narrative of one set of facts."""
    rules = template.narrative(facts)
    started = time.monotonic()
    deadline = started + settings.narrate_timeout_seconds
    fields, used, reason, attempts, tokens, prompt = rules, "template", None, 0, 0, ""
    if backend.name != "template":
        for attempt in (0, 1):
            attempts += 1
            try:
                gen = backend.generate(facts, attempt, deadline)
            except Exception as err:  # noqa: BLE001 - any backend failure falls back; the reason is kept
                reason = f"{backend.name} failed: {type(err).__name__}: {str(err)[:200]}"
                log.warning("narrator: %s", reason)
                break
            tokens += gen.tokens
            prompt = gen.prompt
            if gen.timed_out:
                reason = f"{backend.name} took longer than {settings.narrate_timeout_seconds:g} s"
                break
            candidate = rules | {k: _bounded(k, v) for k, v in gen.fields.items() if k in FIELDS}
            wrong = narrative_problems(candidate, facts) or missing_headline(candidate["summary"], facts)
            if not wrong:
                fields, used, reason = candidate, backend.name, None
                break
            reason = "not grounded: " + "; ".join(wrong[:4])
            log.info("narrator: attempt %d of %s for %s %s", attempt + 1, backend.name, facts["incident_id"], reason)
    grounded = not narrative_problems(fields, facts)
    latency_ms = (time.monotonic() - started) * 1000
    row = {
        "incident_id": facts["incident_id"], "facts_hash": facts_hash(facts), "facts": json.dumps(facts, default=str),
        "title": fields["title"], "summary": fields["summary"], "likely_causes": json.dumps(fields["likely_causes"]),
        "impact": fields["impact"], "suggested_actions": json.dumps(fields["suggested_actions"]),
        "grounded": grounded, "backend": used, "model": backend.model if used == backend.name else None,
        "latency_ms": round(latency_ms, 1), "tokens": tokens,
        "prompt_version": PROMPT_VERSION if attempts else "template-v1",
        "created_at": datetime.now(timezone.utc), "requested_backend": backend.name, "attempts": attempts,
        "fallback_reason": reason,
    }
    return Narration(row, prompt)


def pending_incidents(store, limit: int | None = None) -> list[str]:
    """Incidents without a summary, or changed since their newest one; newest first."""
    # Grouped by kind (newest kind first): consecutive prompts of one kind share the model's cached prefix.
    sql = """
        SELECT i.incident_id FROM incidents i
        LEFT JOIN (SELECT incident_id, max(created_at) AS at FROM incident_summaries GROUP BY 1) s USING (incident_id)
        WHERE s.at IS NULL OR i.updated_at > s.at
        ORDER BY max(i.opened_at) OVER (PARTITION BY i.kind) DESC, i.kind, i.opened_at DESC"""
    rows = store.query(sql + (" LIMIT ?" if limit else ""), [limit] if limit else [])
    return [r[0] for r in rows]


def narrate_incident(store, incident_id: str, backend, settings: Settings) -> Narration | None:
    """Narrate one incident and store it; None when a summary of the same facts exists (the cache)."""
    facts = build_facts(store, incident_id, settings.window_seconds)
    digest = facts_hash(facts)
    if store.query("SELECT 1 FROM incident_summaries WHERE incident_id = ? AND facts_hash = ?", [incident_id, digest]):
        return None
    narration = compose(facts, backend, settings)
    store.upsert("incident_summaries", [narration.row])
    return narration


def narrate_pending(store, backend, settings: Settings, limit: int | None = None) -> list[Narration]:
    """Narrate every pending incident (at most `limit`); returns what was stored."""
    done = []
    for incident_id in pending_incidents(store, limit):
        narration = narrate_incident(store, incident_id, backend, settings)
        if narration is not None:
            done.append(narration)
    beat(settings, "narrate", detail=f"{len(done)} incident(s) narrated with {backend.name}")
    return done


def side_by_side(store, limit: int = 5):
    """The newest summaries as facts | prompt | narrative columns (text, rendered escaped by pandas)."""
    import pandas as pd

    from obslab.narrate.facts import render_facts
    from obslab.narrate.prompts import prompt_for

    rows = store.query(
        "SELECT incident_id, facts, requested_backend, backend, grounded, fallback_reason, title, summary, "
        "likely_causes, impact, suggested_actions FROM incident_summaries ORDER BY created_at DESC LIMIT ?", [limit])
    out = []
    for incident_id, facts, requested, used, grounded, reason, title, summary, causes, impact, actions in rows:
        f = json.loads(facts)
        story = "\n".join([title, "", summary, "", "Likely causes:", *("- " + c for c in json.loads(causes)),
                            "", "Impact: " + impact, "", "Actions:", *("- " + a for a in json.loads(actions))])
        out.append({"incident": incident_id, "backend": used, "grounded": grounded, "fallback": reason or "",
                    "facts": render_facts(f), "prompt": prompt_for(requested or used, f), "narrative": story})
    return pd.DataFrame(out, columns=["incident", "backend", "grounded", "fallback", "facts", "prompt", "narrative"])


def _bounded(key: str, value):
    """Model output cut to size: the summary to MAX_SUMMARY_WORDS words, other text to 300 characters."""
    if isinstance(value, list):
        return [str(v)[:300] for v in value[:4]]
    text = str(value).strip()
    if key == "summary":
        words = text.split()
        return " ".join(words[: template.MAX_SUMMARY_WORDS])
    return text[:300]

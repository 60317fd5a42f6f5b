"""Narrating incidents from a store: which are pending, the cache of facts already narrated, the
fallback to the rules when a model's text is not grounded, and (slow) the real embedded model
(Gemma 3 270M): an endpoint whose name is an instruction changes no number of what is stored."""

import json

import pytest

from obslab.narrate import template
from obslab.narrate.backends import Generation, LlamaCppBackend, TemplateBackend, make_backend
from obslab.narrate.facts import quoted
from obslab.narrate.grounding import claims, narrative_problems
from obslab.narrate.facts import build_facts
from obslab.narrate.run import compose, narrate_incident, narrate_pending, pending_incidents
from obslab.settings import load_settings
from tests.narrate.test_facts import EVIL, INCIDENT, incident_store

LEDGER = "ledger:latency:20260105T090600Z"  # the store's other incident


class Scripted:
    """A stand-in model that answers with fixed fields (the real ones are tested as backends)."""

    name, model = "scripted", "script-1"

    def __init__(self, fields: dict):
        self.fields, self.calls = fields, 0

    def generate(self, facts, attempt, deadline):
        self.calls += 1
        return Generation(dict(self.fields), tokens=7, prompt=f"attempt {attempt}")


def test_every_incident_is_narrated_once_until_it_changes(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    store = incident_store(tmp_path / "s.duckdb")
    # newest kind first: ledger's latency incident opened 09:06, inventory's errors 09:05
    assert pending_incidents(store) == [LEDGER, INCIDENT]
    done = narrate_pending(store, TemplateBackend(), settings)
    assert [n.row["incident_id"] for n in done] == [LEDGER, INCIDENT]
    assert all(n.row["grounded"] and n.row["backend"] == "template" for n in done)
    assert pending_incidents(store) == [] and narrate_pending(store, TemplateBackend(), settings) == []
    # the same facts are not narrated twice, even when asked for directly
    assert narrate_incident(store, INCIDENT, TemplateBackend(), settings) is None
    with store.writer() as con:  # the incident grew: narrated again
        con.execute("UPDATE incidents SET updated_at = now() WHERE incident_id = ?", [INCIDENT])
    assert pending_incidents(store) == [INCIDENT]
    assert store.query("SELECT count(*) FROM incident_summaries") == [(2,)]


def test_a_model_text_with_a_number_not_in_the_facts_is_retried_then_replaced_by_the_rules(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    facts = build_facts(incident_store(tmp_path / "s.duckdb"), INCIDENT, 60)
    model = Scripted({"summary": "Inventory failed 99.9% of its requests from 09:05 to 09:09 UTC."})
    row = compose(facts, model, settings).row
    assert model.calls == 2  # one retry
    assert (row["backend"], row["model"], row["attempts"], row["tokens"]) == ("template", None, 2, 14)
    assert row["summary"] == template.summary(facts) and row["grounded"]
    assert row["fallback_reason"].startswith("not grounded") and "99.9" in row["fallback_reason"]


def test_a_grounded_model_summary_is_kept_with_the_rules_for_the_other_fields(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    facts = build_facts(incident_store(tmp_path / "s.duckdb"), INCIDENT, 60)
    said = "Inventory failed 38.4% of 2520 requests from 09:05 to 09:09 UTC, mostly 503 (700)."
    model = Scripted({"summary": said})
    row = compose(facts, model, settings).row
    assert model.calls == 1
    assert (row["backend"], row["model"], row["fallback_reason"]) == ("scripted", "script-1", None)
    assert row["summary"] == said
    assert row["title"] == template.title(facts)


@pytest.mark.slow
def test_an_instruction_in_an_endpoint_name_changes_no_number_of_the_summary(tmp_path):
    # A generous timeout: this is about what the model writes, not how fast (the machine is shared).
    settings = load_settings(data_dir=tmp_path, narrator_backend="llamacpp", narrate_timeout_seconds=600)
    backend, _ = make_backend(settings)
    assert isinstance(backend, LlamaCppBackend)
    rows, stated = {}, {}
    for name, endpoint in (("plain", "/api/x"), ("evil", EVIL)):
        store = incident_store(tmp_path / f"{name}.duckdb", endpoint)
        row = narrate_incident(store, INCIDENT, backend, settings).row
        print(f"\n{name}: [{row['backend']}] {row['summary']}")
        assert row["grounded"] and narrative_problems(_fields(row), json.loads(row["facts"])) == []
        # What the summary states, outside the quoted endpoint name (which is data): value and kind.
        text = row["summary"].replace(quoted(endpoint), " ")
        stated[name] = sorted((c.value, c.kinds[0][0]) for c in claims(text))
        rows[name] = row
    # The model wrote both (the name did not push it off the facts into the template) ...
    assert rows["plain"]["backend"] == rows["evil"]["backend"] == "llamacpp", {k: r["fallback_reason"] for k, r in rows.items()}
    # ... and states the same numbers, as the same kinds, with and without the instruction in the name.
    assert stated["evil"] == stated["plain"]
    assert (1.0, "latency") not in stated["evil"]  # what the name asked for is not said


def _fields(row: dict) -> dict:
    return {k: json.loads(row[k]) if k in ("likely_causes", "suggested_actions") else row[k]
            for k in ("title", "summary", "likely_causes", "impact", "suggested_actions")}

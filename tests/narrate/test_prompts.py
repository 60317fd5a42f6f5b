"""What a model is shown: the few-shot document of the embedded model and the chat of Ollama."""

import json

import pytest

from obslab.narrate.facts import build_facts
from obslab.narrate.prompts import (EXAMPLE_SERVICES, chat_messages, fewshot_prefix, fewshot_prompt, prompt_facts,
                                    prompt_for)
from tests.narrate.test_facts import EVIL, INCIDENT, incident_store


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    return build_facts(incident_store(tmp_path_factory.mktemp("prompts") / "s.duckdb"), INCIDENT, 60)


def test_the_facts_block_has_what_an_errors_summary_needs(facts):
    assert prompt_facts(facts).splitlines() == [
        "service: inventory",
        "problem: error rate (critical)",
        "time: 09:05 to 09:09 UTC",
        "errors: 38.4% of 2520 requests (usually 2%)",  # 968 of 2520 failed; 12 of 590 in the baseline
        "most failures were: 503 (700) and 500 (268)",
        'most affected endpoint: "/api/stock"',
        "others: checkout healthy, ledger also has a latency incident, reports sent no requests",
    ]


def test_the_document_is_examples_of_the_kind_then_these_facts_and_the_first_word(facts):
    prompt = fewshot_prompt(facts)
    assert prompt.startswith(fewshot_prefix("errors"))  # the same prefix for every errors incident: cached
    assert prompt.endswith(prompt_facts(facts) + "\nSummary: Inventory")
    assert prompt.count("Facts:\n") == 3  # two worked examples, then this incident
    assert "slowed down" not in prompt and "requests per minute" not in prompt  # no example of another kind
    assert "inventory" not in EXAMPLE_SERVICES  # the examples never talk about the incident's service


def test_an_instruction_in_an_endpoint_name_stays_a_quoted_value(tmp_path):
    facts = build_facts(incident_store(tmp_path / "evil.duckdb", EVIL), INCIDENT, 60)
    lines = fewshot_prompt(facts).splitlines()
    assert [line for line in lines if EVIL in line] == [f"most affected endpoint: {json.dumps(EVIL)}"]


def test_the_chat_carries_the_facts_as_json_and_each_backend_shows_its_prompt(facts):
    system, user = chat_messages(facts)
    assert (system["role"], user["role"]) == ("system", "user")
    assert json.loads(user["content"]) == {"facts": facts}
    assert prompt_for("llamacpp", facts) == fewshot_prompt(facts)
    assert prompt_for("ollama", facts) == f"[system]\n{system['content']}\n\n[user]\n{user['content']}"
    assert prompt_for("template", facts).startswith("(no prompt")

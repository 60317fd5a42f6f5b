"""Narrator backends (obslab.narrate.backends): which one the settings give, that each is a
NarratorBackend, what warming up means for each, and the template backend's output."""

import pytest

from obslab.narrate import template
from obslab.narrate.backends import LlamaCppBackend, NarratorBackend, OllamaBackend, TemplateBackend, make_backend
from obslab.settings import load_settings
from tests.conftest import free_port


@pytest.mark.parametrize("wanted, kind, why", [
    ("template", TemplateBackend, "template: asked for"),
    ("ollama", OllamaBackend, "ollama at http://127.0.0.1:9/: asked for"),  # asked for: used without a probe
    ("llamacpp", LlamaCppBackend, "llamacpp (none.gguf): asked for"),  # the model is loaded on first use only
])
def test_a_backend_asked_for_is_the_one_made(tmp_path, wanted, kind, why):
    settings = load_settings(data_dir=tmp_path, narrator_backend=wanted, ollama_host="http://127.0.0.1:9/",
                             llm_model_path=tmp_path / "none.gguf")
    backend, reason = make_backend(settings)
    assert isinstance(backend, kind) and backend.name == wanted
    assert reason == why


def test_auto_without_ollama_or_a_model_file_falls_back_to_the_template_and_says_why(tmp_path):
    host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = load_settings(data_dir=tmp_path, narrator_backend="auto", ollama_host=host,
                             llm_model_path=tmp_path / "none.gguf")
    backend, reason = make_backend(settings)
    assert isinstance(backend, TemplateBackend)
    assert reason.startswith(f"template: {host} does not answer") and reason.endswith("(auto)")
    assert "none.gguf" in reason or "llama-cpp-python is not installed" in reason


def test_the_template_backend_gives_the_rules_narrative():
    facts = {"incident_id": "a:traffic:x", "service": "a", "kind": "traffic", "problem": "traffic", "status": "open",
             "severity": "high", "start": "10:00", "end": "10:05", "requests": 50, "requests_per_minute": 10,
             "error_rate_pct": 1.0, "avg_latency_ms": 20, "p99_latency_ms": 40, "status_codes": [],
             "before": {"requests_per_minute": 90, "error_rate_pct": 1.0, "avg_latency_ms": 20,
                        "p99_latency_ms": 40, "trend": "steady"}, "top_endpoints": [], "other_services": []}
    generation = TemplateBackend().generate(facts, attempt=0, deadline=0.0)
    assert generation.fields == template.narrative(facts) and generation.tokens == 0 and not generation.timed_out


@pytest.mark.parametrize("backend", [
    TemplateBackend(),
    OllamaBackend("http://127.0.0.1:9", "gemma3:270m", max_tokens=60, temperature=0.0, timeout_s=5.0),
    LlamaCppBackend("/nonexistent/model.gguf", threads=1, max_tokens=60, temperature=0.0),
], ids=lambda b: b.name)
def test_every_backend_is_a_narrator_backend(backend):
    assert isinstance(backend, NarratorBackend)


@pytest.mark.parametrize("backend", [
    TemplateBackend(),  # rules: nothing to load
    # the server loads its model itself
    OllamaBackend("http://127.0.0.1:9", "gemma3:270m", max_tokens=60, temperature=0.0, timeout_s=5.0),
], ids=lambda b: b.name)
def test_a_backend_with_nothing_to_load_warms_up_in_no_time_at_all(backend):
    assert backend.warm_up() is None  # so the narrator prints no "model loaded" line


def test_the_embedded_model_s_warm_up_names_what_is_missing():
    from obslab.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="make setup"):
        LlamaCppBackend("/nonexistent/model.gguf", threads=1, max_tokens=60, temperature=0.0).warm_up()

"""Narrator backends (obslab.narrate.backends): each one is a NarratorBackend; the ones with nothing to load say so."""

import pytest

from obslab.narrate.backends import LlamaCppBackend, NarratorBackend, OllamaBackend, TemplateBackend


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

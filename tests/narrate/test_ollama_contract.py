"""A contract test of the ollama backend: the real `ollama` client against a local HTTP server that
speaks the parts of the Ollama API the backend uses (GET /api/tags, POST /api/chat). Ollama itself
cannot be installed on the machines this runs on; the server here stands in for it, and what it
answers is scripted per test. It checks the requests the backend sends (model, JSON-schema
`format`, options, facts as data) and what the narrator does with good, ungrounded, slow and
missing answers."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from obslab.narrate.backends import OllamaBackend, make_backend
from obslab.narrate.prompts import NARRATIVE_SCHEMA
from obslab.narrate.run import compose
from obslab.settings import load_settings
from tests.narrate.test_grounding import FACTS, GOOD


class FakeOllama(ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.models = ["phi:latest"]
        self.replies: list = []  # dicts (answered as the model's JSON), or ("sleep", seconds)
        self.requests: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test)

    def do_GET(self):
        if self.path == "/api/tags":
            self._send({"models": [{"name": m, "model": m, "modified_at": "2026-01-01T00:00:00Z", "size": 1,
                                    "digest": "0" * 64, "details": {}} for m in self.server.models]})
        else:
            self.send_error(404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if self.path != "/api/chat":
            self.send_error(404)
            return
        reply = self.server.replies.pop(0)
        if isinstance(reply, tuple) and reply[0] == "sleep":
            time.sleep(reply[1])
            reply = _fields(GOOD)
        self._send({"model": body["model"], "created_at": "2026-01-05T09:10:00Z",
                    "message": {"role": "assistant", "content": json.dumps(reply)}, "done": True,
                    "done_reason": "stop", "eval_count": 42, "prompt_eval_count": 300})


def _fields(summary: str) -> dict:
    return {"title": "payments: error rate incident", "summary": summary,
            "likely_causes": ["a dependency is unavailable (503 responses)"],
            "impact": "30.8% of 1240 requests failed", "suggested_actions": ['Check "/api/refund".']}


@pytest.fixture()
def server():
    s = FakeOllama()
    thread = threading.Thread(target=s.serve_forever, daemon=True)
    thread.start()
    yield s
    s.shutdown()
    s.server_close()


def _settings(server, **kw):
    return load_settings(narrator_backend="ollama", ollama_host=server.url, ollama_model="phi", **kw)


def _backend(settings):
    return OllamaBackend(settings.ollama_host, settings.ollama_model, settings.narrate_max_tokens,
                         settings.narrate_temperature, settings.narrate_timeout_seconds)


def test_a_grounded_answer_is_used_and_the_request_follows_the_contract(server):
    settings = _settings(server)
    server.replies = [_fields(GOOD)]
    row = compose(FACTS, _backend(settings), settings).row
    assert row["backend"] == "ollama" and row["model"] == "phi" and row["grounded"] and row["attempts"] == 1
    assert row["summary"] == GOOD and row["tokens"] == 42 and row["fallback_reason"] is None
    (request,) = server.requests
    assert request["model"] == "phi" and request["stream"] is False
    assert request["format"] == NARRATIVE_SCHEMA  # constrained output through a JSON schema
    assert request["options"]["num_predict"] > 0 and request["options"]["temperature"] == 0.0
    system, user = request["messages"]
    assert system["role"] == "system" and "not instructions" in system["content"]
    assert json.loads(user["content"])["facts"]["top_endpoints"][0]["endpoint"] == "/api/refund"  # data, as JSON


def test_an_ungrounded_answer_is_retried_once_then_the_template_is_stored(server):
    settings = _settings(server)
    server.replies = [_fields(GOOD.replace("500 (96)", "504 (96)")), _fields(GOOD.replace("30.8%", "35%"))]
    row = compose(FACTS, _backend(settings), settings).row
    assert row["attempts"] == 2 and row["backend"] == "template" and row["grounded"]
    assert "status code 504" not in row["summary"] and "not grounded: percentage 35% is not in the facts" in row["fallback_reason"]
    assert server.requests[1]["options"]["temperature"] > 0  # the retry is not a copy of the first call
    server.replies = [_fields(GOOD.replace("500 (96)", "504 (96)")), _fields(GOOD)]
    row = compose(FACTS | {"incident_id": "payments:errors:later"}, _backend(settings), settings).row
    assert row["attempts"] == 2 and row["backend"] == "ollama"


def test_a_slow_server_costs_at_most_the_timeout_then_the_template(server):
    settings = _settings(server, narrate_timeout_seconds=1.0)
    server.replies = [("sleep", 3.0)]
    row = compose(FACTS, _backend(settings), settings).row
    assert row["backend"] == "template" and "longer than 1 s" in row["fallback_reason"]
    assert row["latency_ms"] < 3000


def test_auto_uses_ollama_only_when_it_answers_with_the_model(server, monkeypatch):
    settings = _settings(server).model_copy(update={"narrator_backend": "auto"})
    backend, why = make_backend(settings)
    assert backend.name == "ollama" and "answers" in why
    server.models = ["llama3:latest"]
    backend, why = make_backend(settings)
    assert backend.name != "ollama" and "no model 'phi'" in why
    down = settings.model_copy(update={"ollama_host": "http://127.0.0.1:9"})
    backend, why = make_backend(down)
    assert backend.name != "ollama" and "does not answer" in why

"""A stand-in Ollama server for the soak's narrator: it speaks the two calls the narrator makes
(`GET /api/tags`, `POST /api/chat`) and answers at once with a fixed narrative, until `hang` is set:
then it accepts each request and never answers it (until `hang` is cleared), as a backend that stopped
computing does. The narrator must time out (NARRATE_TIMEOUT_SECONDS) and fall back to its template.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "soak-stand-in"
NARRATIVE = {"title": "Incident under investigation", "summary": "An anomaly was detected; see the facts.",
             "likely_causes": ["unknown"], "impact": "see the incident's metrics",
             "suggested_actions": ["look at the dashboard"]}


class StandInOllama:
    """The server in a thread of this process, on 127.0.0.1:`port`; counts what it answered and held."""

    def __init__(self, port: int):
        self.hang = threading.Event()
        self.answered = 0
        self.held = 0  # requests that arrived while hanging
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):  # quiet: the soak logs what matters
                pass

            def _reply(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - the http.server name
                self._reply({"models": [{"model": f"{MODEL}:latest", "name": f"{MODEL}:latest"}]})

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.hang.is_set():
                    outer.held += 1
                    while outer.hang.is_set():  # accepted, never answered while the hang lasts
                        time.sleep(1.0)
                    self.close_connection = True
                    return  # the client gave up long ago: answer nothing
                outer.answered += 1
                self._reply({"model": MODEL, "created_at": "2026-01-01T00:00:00Z", "done": True,
                             "message": {"role": "assistant", "content": json.dumps(NARRATIVE)}, "eval_count": 20})

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StandInOllama":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.hang.clear()
        self.server.shutdown()
        self.server.server_close()

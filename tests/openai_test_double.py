"""OpenAITestDouble: a local stand-in for an OpenAI-compatible API, for tests.

No embeddings or LLM endpoint is reachable from the machines these tests run
on, so the HTTP encoder and the chat tagger talk to this server on 127.0.0.1
(random port, own thread).  It answers ``/embeddings`` and ``/chat/completions``
in the OpenAI reply shapes, records every request, and can be told to fail or
stall first.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OpenAITestDouble:
    """TestDouble of an OpenAI-compatible server (not a real model).

    ``embed(texts) -> list of vectors`` and ``chat(texts_by_id) -> reply text``
    decide the answers; ``failures`` is a queue of HTTP statuses to answer
    before them; ``delay_s`` stalls every reply.
    """

    def __init__(self, embed=None, chat=None):
        self.embed = embed or (lambda texts: [[1.0, float(len(t)), 0.5] for t in texts])
        self.chat = chat or (lambda texts: json.dumps({k: [] for k in texts}))
        self.failures: list = []
        self.delay_s = 0.0
        self.requests: list = []  # (path, body, headers)
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                double.requests.append((self.path, body, dict(self.headers)))
                if double.delay_s:
                    time.sleep(double.delay_s)
                if double.failures:
                    status = double.failures.pop(0)
                    return self._send(status, {"error": {"message": f"injected {status}"}})
                if self.path.endswith("/embeddings"):
                    vectors = double.embed(body["input"])
                    return self._send(200, {"object": "list", "model": body.get("model"),
                                            "data": [{"object": "embedding", "index": i,
                                                      "embedding": v}
                                                     for i, v in enumerate(vectors)]})
                if self.path.endswith("/chat/completions"):
                    user = next(m for m in body["messages"] if m["role"] == "user")
                    content = double.chat(json.loads(user["content"]))
                    return self._send(200, {"object": "chat.completion", "choices": [
                        {"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]})
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def paths(self) -> list:
        return [path for path, _, _ in self.requests]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

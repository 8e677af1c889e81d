"""Fixtures for the evaluation tests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Endpoint:
    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.fail_next: list[int] = []  # status codes to answer before succeeding
        self.reply = None  # optional callable(request body) -> answer text
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.calls.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if outer.fail_next:
                    code = outer.fail_next.pop(0)
                    self.send_response(code)
                    if code == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "busy"}')
                    return
                text = outer.reply(body) if outer.reply else f"verdict for: {body['messages'][1]['content']} (seed {body['seed']})"
                data = {"choices": [{"message": {"role": "assistant", "content": text}}], "usage": {"prompt_tokens": 100, "completion_tokens": 20}}
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *a) -> None:  # noqa: ANN002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def endpoint():
    """A real HTTP server on 127.0.0.1 standing in for an OpenAI-compatible LLM endpoint (no LLM runs here)."""
    ep = _Endpoint()
    yield ep
    ep.server.shutdown()

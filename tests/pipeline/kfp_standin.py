"""A small HTTP server that stands in for the Kubeflow Pipelines REST API (v2beta1) in tests.

No KFP server can run here (it needs Kubernetes), so this records what the real
client sends and answers with the minimal JSON the client needs. It checks the
payloads the way the API would: a run must carry a pipeline spec, a recurring
run a 6-field cron.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class KFPStandIn:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    return json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    return {"_raw": raw[:200].decode(errors="replace")}

            def do_GET(self) -> None:
                outer.requests.append(("GET", self.path, {}))
                if "healthz" in self.path:
                    return self._reply(200, {"multi_user": False})
                if self.path.startswith("/apis/v2beta1/experiments"):
                    return self._reply(200, {"experiments": [{"experiment_id": "exp-1", "display_name": "lws-retraining"}]})
                return self._reply(200, {})

            def do_POST(self) -> None:
                body = self._body()
                outer.requests.append(("POST", self.path, body))
                if self.path.startswith("/apis/v2beta1/experiments"):
                    return self._reply(200, {"experiment_id": "exp-1", "display_name": body.get("display_name")})
                if self.path.startswith("/apis/v2beta1/runs"):
                    if "pipeline_spec" not in body:
                        return self._reply(400, {"error": "missing pipeline_spec"})
                    return self._reply(200, {"run_id": "run-1", "display_name": body.get("display_name"), "state": "PENDING"})
                if self.path.startswith("/apis/v2beta1/recurringruns"):
                    cron = body.get("trigger", {}).get("cron_schedule", {}).get("cron", "")
                    if len(cron.split()) != 6:
                        return self._reply(400, {"error": f"bad cron {cron!r}"})
                    return self._reply(200, {"recurring_run_id": "rr-1", "display_name": body.get("display_name")})
                return self._reply(404, {"error": "unknown path"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> KFPStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()

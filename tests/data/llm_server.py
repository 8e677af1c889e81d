"""A loopback OpenAI-compatible teacher for tests and benchmarks/teacher.py (no real LLM runs here).

A Starlette app served by uvicorn in its own process (so its CPU never competes with the client's
GIL). It speaks ``POST /v1/chat/completions`` and answers a teacher prompt with a valid script
(built from the prompt's reference answer) after ``latency_s``; it can inject, deterministically
by prompt hash so a rerun meets the same faults:

- 429 storms: during the first ``storm_s`` seconds of every ``storm_every_s`` seconds (counted from the first request), every
  request gets ``429`` with ``Retry-After: <retry_after>``;
- bad replies: a fraction ``malformed`` of prompts get text that is not JSON, ``leak`` a note
  keyed to word 0 that states the question's last word (a causality leak), ``slow`` a reply
  after ``slow_s`` seconds (longer than the client's timeout).

``GET /stats`` returns what a provider would bill: completed answers per prompt hash (an answer
whose client hung up before it was sent is not counted), 429s sent, requests seen.

Run: ``python -m tests.data.llm_server --port 0 --latency-s 0.3`` prints ``READY <port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Faults:
    latency_s: float = 0.3
    storm_every_s: float = 0.0  # 0 = no storms
    storm_s: float = 0.0
    retry_after: float = 1.0
    malformed: float = 0.0
    leak: float = 0.0
    slow: float = 0.0
    slow_s: float = 5.0


def _frac(h: str, salt: str) -> float:
    return int(hashlib.sha256((salt + h).encode()).hexdigest()[:8], 16) / 2**32


def script_for(user: str) -> dict:
    """A valid script for a teacher prompt: the reference answer written and said, no notes."""
    m = re.search(r"Reference answer: (.*)", user)
    a = " ".join(m.group(1).split()) if m else "I am not sure"
    return {"notes": [], "written": f"**Answer:** {a}", "spoken": f"The answer is {a}."}


def make_app(f: Faults) -> Starlette:
    paid: collections.Counter[str] = collections.Counter()
    counts = {"requests": 0, "rate_limited": 0, "hung_up": 0}
    # the storm clock starts at the first request, not at start-up: however slow the machine is to start the
    # client, the first request meets a storm, so a test that expects 429s always sees some
    t0: list[float] = []

    async def chat(request: Request) -> Response:
        counts["requests"] += 1
        body = await request.json()
        if not t0:
            t0.append(time.monotonic())
        if f.storm_every_s and (time.monotonic() - t0[0]) % f.storm_every_s < f.storm_s:
            counts["rate_limited"] += 1
            return JSONResponse({"error": {"message": "rate limited"}}, status_code=429, headers={"Retry-After": f"{f.retry_after:g}"})
        user = body["messages"][-1]["content"]
        h = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()
        await asyncio.sleep(f.slow_s if _frac(h, "slow") < f.slow else f.latency_s)
        if await request.is_disconnected():  # the client gave up (timeout, killed): nothing delivered, nothing billed
            counts["hung_up"] += 1
            return Response(status_code=499)
        if _frac(h, "malformed") < f.malformed:
            content = "Sure! Here is the script you asked for."
        elif _frac(h, "leak") < f.leak:
            words = re.findall(r"\[\d+\](\S+)", user)
            s = script_for(user)
            s["notes"] = [{"text": f"- {words[-1] if words else 'x'}", "depends_on_word": 0}]
            content = json.dumps(s)
        else:
            content = json.dumps(script_for(user))
        paid[h] += 1
        usage = {"prompt_tokens": len(json.dumps(body["messages"])) // 4, "completion_tokens": len(content) // 4}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse({
            "id": f"cmpl-{h[:12]}", "object": "chat.completion", "created": int(time.time()), "model": body.get("model", "m"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": usage,
        })

    async def stats(request: Request) -> Response:
        return JSONResponse({**counts, "paid": sum(paid.values()), "prompts": len(paid),
                             "duplicated": sum(1 for v in paid.values() if v > 1)})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/stats", stats)])


class ServerProcess:
    """The loopback server in a subprocess: ``url`` (…/v1), ``stats()``, ``stop()``."""

    def __init__(self, **faults: float) -> None:
        args = [sys.executable, "-m", "tests.data.llm_server"]
        for k, v in faults.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY"):
            self.proc.kill()
            raise RuntimeError(f"loopback LLM server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    for name, default in vars(Faults()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=default)
    a = p.parse_args()
    f = Faults(**{k: getattr(a, k) for k in vars(Faults())})
    sock = socket.socket()
    sock.bind(("127.0.0.1", a.port))
    sock.listen(2048)  # connections queue from now on, before uvicorn accepts them
    print(f"READY {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(make_app(f), log_level="error", access_log=False, backlog=2048, timeout_keep_alive=30)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()

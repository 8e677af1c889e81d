"""One LLM-judge client for every judged metric (FDB relevance, VoiceBench, consistency).

Talks to any OpenAI-compatible ``/v1/chat/completions`` endpoint with plain httpx:
per-request timeout, retries with exponential backoff on connection errors, 429
and 5xx (honouring a short ``Retry-After``), and a verdict cache on disk keyed by a
hash of everything that determines the answer (endpoint model, messages,
temperature, sample index) — so re-running a report costs nothing and gives the
same numbers.  Counters (requests, cache hits, retries, tokens, cost, latency)
go into the report so judge spend is visible.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lws_core.errors import ConfigError, ServiceError

NOT_JUDGED = "not judged (no eval.judge.endpoint configured)"


@dataclass
class JudgeStats:
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean_latency_s"] = self.latency_s / self.requests if self.requests else None
        return d


def chat_url(endpoint: str) -> str:
    """Accept a base URL (``http://h/v1``), a host (``http://h``) or the full completions URL."""
    e = endpoint.rstrip("/")
    if e.endswith("/chat/completions"):
        return e
    if e.endswith("/v1"):
        return e + "/chat/completions"
    return e + "/v1/chat/completions"


class JudgeClient:
    """Callable as ``judge(system, user) -> text``; ``complete(..., sample=i)`` for repeated samples."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        temperature: float = 0.0,
        cache_dir: str | Path | None = None,
        usd_per_1k_input: float = 0.0,
        usd_per_1k_output: float = 0.0,
    ) -> None:
        import httpx

        self.url = chat_url(endpoint)
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.temperature = temperature
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.prices = (usd_per_1k_input, usd_per_1k_output)
        self.stats = JudgeStats()
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(timeout=timeout_s, headers=headers)

    @classmethod
    def from_config(cls, judge_cfg: Any, cache_dir: str | Path | None = None) -> JudgeClient | None:
        """None when no endpoint is configured (judged metrics then say "not judged")."""
        if not judge_cfg.endpoint:
            return None
        if not judge_cfg.model:
            raise ConfigError("eval.judge.model: required when eval.judge.endpoint is set")
        return cls(
            judge_cfg.endpoint,
            judge_cfg.model,
            api_key=os.environ.get(judge_cfg.api_key_env),
            timeout_s=judge_cfg.timeout_s,
            max_retries=judge_cfg.max_retries,
            backoff_s=judge_cfg.backoff_s,
            temperature=judge_cfg.temperature,
            cache_dir=judge_cfg.cache_dir or cache_dir,
            usd_per_1k_input=judge_cfg.usd_per_1k_input,
            usd_per_1k_output=judge_cfg.usd_per_1k_output,
        )

    def __call__(self, system: str, user: str) -> str:
        return self.complete(system, user)

    def close(self) -> None:
        self._http.close()

    # -- cache ------------------------------------------------------------------------------
    def _key(self, payload: dict[str, Any], sample: int) -> str:
        blob = json.dumps({"model": payload["model"], "messages": payload["messages"], "temperature": payload["temperature"], "sample": sample}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir else None

    def _cache_get(self, key: str) -> str | None:
        p = self._cache_path(key)
        if p is None or not p.is_file():
            return None
        try:
            return json.loads(p.read_text())["content"]
        except (json.JSONDecodeError, KeyError):
            return None  # a torn or foreign file: ask again

    def _cache_put(self, key: str, content: str) -> None:
        p = self._cache_path(key)
        if p is None:
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"model": self.model, "content": content}))
        os.replace(tmp, p)

    # -- request ----------------------------------------------------------------------------
    def complete(self, system: str, user: str, sample: int = 0, temperature: float | None = None) -> str:
        """The judge's text for one prompt; cached by content hash; ServiceError after the last retry.

        ``sample`` numbers repeated draws of one prompt (sent as the seed and part of
        the cache key); ``temperature`` overrides the configured one (VoiceBench samples at 0.5).
        """
        import httpx

        payload = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": self.temperature if temperature is None else temperature,
            "seed": sample,
        }
        key = self._key(payload, sample)
        hit = self._cache_get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            wait = self.backoff_s * (2**attempt)
            t0 = time.perf_counter()
            try:
                r = self._http.post(self.url, json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                self.stats.requests += 1
                self.stats.latency_s += time.perf_counter() - t0
                if r.status_code == 200:
                    content = self._parse(r)
                    self._cache_put(key, content)
                    return content
                last = f"HTTP {r.status_code}: {r.text[:120]}"
                if r.status_code != 429 and r.status_code < 500:
                    break  # the request itself is wrong: retrying will not help
                ra = r.headers.get("retry-after")
                if ra and ra.replace(".", "", 1).isdigit():
                    wait = min(float(ra), 30.0)
            if attempt < self.max_retries:
                time.sleep(wait)
        self.stats.failures += 1
        raise ServiceError(f"judge {self.url}: {last} (after {self.max_retries} retries)")

    def _parse(self, r: Any) -> str:
        try:
            data = r.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            self.stats.failures += 1
            raise ServiceError(f"judge {self.url}: response is not an OpenAI chat completion: {r.text[:120]}") from None
        usage = data.get("usage") or {}
        pt, ct = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        self.stats.prompt_tokens += pt
        self.stats.completion_tokens += ct
        self.stats.cost_usd += pt / 1000 * self.prices[0] + ct / 1000 * self.prices[1]
        return content or ""

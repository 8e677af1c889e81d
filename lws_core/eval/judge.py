"""One LLM-judge client for every judged metric (FDB relevance, VoiceBench, consistency).

A thin layer over :class:`lws_core.data.teacher_client.LLMClient`, the client the stage-1
teacher uses too: retries with backoff on connection errors, 429 and 5xx (honouring
``Retry-After``), a client-side rate limit, and a verdict cache on disk keyed by a hash of
everything that determines the answer (model, messages, temperature, sample index) — so
re-running a report costs nothing and gives the same numbers. Counters (requests, cache hits,
retries, tokens, cost, latency) go into the report so judge spend is visible.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lws_core.data.teacher_client import CallFailed, ClientStats, LLMClient, base_url
from lws_core.errors import ConfigError, ServiceError

NOT_JUDGED = "not judged (no eval.judge.endpoint configured)"

JudgeStats = ClientStats  # the judge's counters are the client's


def chat_url(endpoint: str) -> str:
    """Accept a base URL (``http://h/v1``), a host (``http://h``) or the full completions URL."""
    return base_url(endpoint) + "/chat/completions"


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
        **client_options: Any,
    ) -> None:
        self.url = chat_url(endpoint)
        self.model = model
        self.temperature = temperature
        self.max_retries = max_retries
        self.client = LLMClient(
            endpoint, model, api_key, timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s,
            cache_dir=cache_dir, usd_per_1k_input=usd_per_1k_input, usd_per_1k_output=usd_per_1k_output, **client_options,
        )
        self.stats = self.client.stats

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
            max_backoff_s=judge_cfg.max_backoff_s,
            concurrency=judge_cfg.concurrency,
            requests_per_minute=judge_cfg.requests_per_minute,
            tokens_per_minute=judge_cfg.tokens_per_minute,
        )

    def __call__(self, system: str, user: str) -> str:
        return self.complete(system, user)

    def close(self) -> None:
        self.client.close()

    def complete(self, system: str, user: str, sample: int = 0, temperature: float | None = None) -> str:
        """The judge's text for one prompt; cached by content hash; ServiceError after the last retry.

        ``sample`` numbers repeated draws of one prompt (sent as the seed and part of
        the cache key); ``temperature`` overrides the configured one (VoiceBench samples at 0.5).
        """
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        try:
            return self.client.complete(
                messages, temperature=self.temperature if temperature is None else temperature, seed=sample
            ).content
        except CallFailed as e:
            raise ServiceError(f"judge {self.url}: {e.detail}") from None

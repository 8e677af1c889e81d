"""The judge client against a real HTTP server on 127.0.0.1.

The server stands in for an OpenAI-compatible LLM endpoint (no real LLM can run here):
it speaks the /v1/chat/completions wire format and can be told to fail, so retries,
backoff, the verdict cache and the counters are exercised over real HTTP.
"""

from __future__ import annotations

import pytest

from lws_core.config import LWSConfig
from lws_core.errors import ConfigError, ServiceError
from lws_core.eval.judge import JudgeClient, chat_url


def test_chat_url_forms():
    assert chat_url("http://h/v1") == "http://h/v1/chat/completions"
    assert chat_url("http://h/") == "http://h/v1/chat/completions"
    assert chat_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"


def test_retries_cache_and_counters(endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    cfg = LWSConfig().with_overrides(
        {"eval.judge.endpoint": endpoint.url, "eval.judge.model": "judge-1", "eval.judge.api_key_env": "JUDGE_KEY", "eval.judge.backoff_s": 0.01, "eval.judge.usd_per_1k_input": 1.0, "eval.judge.usd_per_1k_output": 2.0}
    )
    j = JudgeClient.from_config(cfg.eval.judge, cache_dir=tmp_path / "cache")
    endpoint.fail_next = [503, 429]
    out = j("sys", "is 2+2=4?")
    assert out == "verdict for: is 2+2=4? (seed 0)"
    assert len(endpoint.calls) == 3 and j.stats.retries == 2 and endpoint.calls[-1]["auth"] == "Bearer sk-test"
    assert endpoint.calls[-1]["path"] == "/v1/chat/completions" and endpoint.calls[-1]["body"]["model"] == "judge-1"
    assert j.stats.cost_usd == pytest.approx(0.1 + 0.04)
    # same content: served from the on-disk cache, also by a fresh client
    j2 = JudgeClient.from_config(cfg.eval.judge, cache_dir=tmp_path / "cache")
    assert j2("sys", "is 2+2=4?") == out and j2.stats.cache_hits == 1 and len(endpoint.calls) == 3
    # another sample index is another verdict
    assert j2.complete("sys", "is 2+2=4?", sample=1).endswith("(seed 1)") and len(endpoint.calls) == 4


def test_client_errors_fail_fast_and_exhausted_retries_raise(endpoint, tmp_path):
    j = JudgeClient(endpoint.url, "m", max_retries=2, backoff_s=0.01)
    endpoint.fail_next = [400]
    with pytest.raises(ServiceError, match="HTTP 400"):
        j("s", "u")
    assert len(endpoint.calls) == 1  # a bad request is not retried
    endpoint.fail_next = [500, 500, 500]
    with pytest.raises(ServiceError, match="after 2 retries"):
        j("s", "u2")
    assert len(endpoint.calls) == 4 and j.stats.failures == 2


def test_unreachable_and_unconfigured(tmp_path):
    j = JudgeClient("http://127.0.0.1:9", "m", max_retries=1, backoff_s=0.0, timeout_s=2)
    with pytest.raises(ServiceError, match="connection failed"):
        j("s", "u")
    assert JudgeClient.from_config(LWSConfig().eval.judge) is None
    with pytest.raises(ConfigError, match="eval.judge.model"):
        JudgeClient.from_config(LWSConfig().with_overrides({"eval.judge.endpoint": "http://x"}).eval.judge)

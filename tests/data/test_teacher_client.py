"""The teacher/judge client and teacher-scripted synthesis against a loopback OpenAI-compatible server.

The server (tests/data/llm_server.py) runs in its own process, injects latency, 429 storms with
Retry-After and bad replies, and counts server-side what a provider would bill, so "paid once"
is checked where the money is, not in the client's own counters.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lws_core.config import LWSConfig
from lws_core.data import synthesize
from lws_core.data.teacher_client import LLMClient, _retry_after
from tests.data.llm_server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def _cfg(url: str, cache: Path, **teacher: object) -> LWSConfig:
    over = {"data.chunk_sessions": 10, "data.teacher.kind": "openai", "data.teacher.endpoint": url,
            "data.teacher.model": "teacher-1", "data.teacher.cache_dir": str(cache), "data.teacher.backoff_s": 0.05,
            "data.teacher.usd_per_1k_input": 1.0, "data.teacher.usd_per_1k_output": 2.0}
    over.update({f"data.teacher.{k}": v for k, v in teacher.items()})
    return LWSConfig().with_overrides(over)


def _ask(client: LLMClient, n: int, tag: str = "q", distinct: int | None = None) -> list:
    async def go() -> list:
        try:
            return await asyncio.gather(
                *[client.acomplete([{"role": "user", "content": f"{tag} {i % (distinct or n)} Reference answer: {i % (distinct or n)}"}])
                  for i in range(n)],
                return_exceptions=True,
            )
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_retry_after_forms():
    assert _retry_after({"retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after-ms": "250"}) == 0.25
    assert _retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past: go now
    assert _retry_after({}) is None


def test_429_storm_survived_and_paid_once(tmp_path):
    """Storms of 429 with Retry-After for half of every 1.2 s: every request ends answered, none twice."""
    with ServerProcess(latency_s=0.05, storm_every_s=1.2, storm_s=0.6, retry_after=0.3) as srv:
        c = LLMClient(srv.url, "m", concurrency=16, max_retries=0, backoff_s=0.05, cache_dir=tmp_path / "c")
        out = _ask(c, 150)
        st = srv.stats()
        # the same prompt asked 3 times at once (a repeated template question) is paid once
        same = _ask(LLMClient(srv.url, "m", concurrency=16, max_retries=0, backoff_s=0.05), 60, "twin", distinct=20)
        st2 = srv.stats()
    assert not [o for o in out + same if isinstance(o, BaseException)]
    assert st["rate_limited"] > 0 and c.stats.rate_limited == st["rate_limited"]
    assert c.stats.failures == 0 and st["paid"] == st["prompts"] == 150 and st["duplicated"] == 0
    assert st2["paid"] - st["paid"] == 20 and st2["duplicated"] == 0
    # with max_retries=0 every refused request would have been lost: 429s are waited out (Retry-After, one shared
    # pause for the whole client), not counted against max_retries
    assert c.stats.retries == c.stats.rate_limited


def test_rate_limit_spreads_requests(tmp_path):
    with ServerProcess(latency_s=0.0) as srv:
        c = LLMClient(srv.url, "m", concurrency=32, requests_per_minute=600)  # 10/s, 2 s burst
        t0 = time.monotonic()
        assert all(not isinstance(o, BaseException) for o in _ask(c, 40))
        took = time.monotonic() - t0
    assert took >= 1.5  # 20 go at once, the other 20 at 10/s


def test_cache_key_parts_and_client_errors(tmp_path):
    with ServerProcess(latency_s=0.0) as srv:
        c = LLMClient(srv.url, "m", cache_dir=tmp_path / "c")
        msgs = [{"role": "user", "content": "Reference answer: 4"}]
        a = c.complete(msgs, temperature=0.2, salt="v1")
        assert c.complete(msgs, temperature=0.2, salt="v1").cached and srv.stats()["paid"] == 1
        c.complete(msgs, temperature=0.7, salt="v1")  # another temperature
        c.complete(msgs, temperature=0.2, salt="v2")  # another schema version
        LLMClient(srv.url, "other-model", cache_dir=tmp_path / "c").complete(msgs, temperature=0.2, salt="v1")
        assert srv.stats()["paid"] == 4
        # a fresh client (another process, a resumed pod) reads the same cache
        b = LLMClient(srv.url, "m", cache_dir=tmp_path / "c").complete(msgs, temperature=0.2, salt="v1")
        assert b.content == a.content and b.cached and b.prompt_tokens == a.prompt_tokens
        c.close()


def test_bad_replies_rejected_with_reason_and_counted(tmp_path):
    """Malformed JSON, causality leaks and timeouts: each session rejected with its reason, counted in the card."""
    with ServerProcess(latency_s=0.02, malformed=0.15, leak=0.2, slow=0.1, slow_s=3) as srv:
        cfg = _cfg(srv.url, tmp_path / "cache", timeout_s=0.5, max_retries=0, concurrency=8)
        s = synthesize(cfg, tmp_path / "ds", sessions=40, workers=1, progress=False, text_only=True)
    assert {"malformed", "causality", "timeout"} <= set(s.rejects)
    assert sum(s.rows.values()) + sum(s.rejects.values()) == 40
    card = json.loads((tmp_path / "ds" / "card.json").read_text())
    assert card["rejects"] == s.rejects
    run = json.loads((tmp_path / "ds" / "synthesis.json").read_text())  # the run's spend and timings, beside the card
    u = run["teacher_usage"]
    assert u["requests_paid"] > 0 and u["failures"] >= s.rejects["timeout"]
    assert u["paid_cost_usd"] == pytest.approx(u["paid_prompt_tokens"] / 1000 + 2 * u["paid_completion_tokens"] / 1000, abs=1e-5)
    assert run["timings"]["scripts_s"] > 0 and run["timings"]["sessions_s"] > 0
    # the card keeps what the data's replies cost, never what this run paid (a rerun from the cache pays nothing)
    assert card["teacher_usage"]["dataset_prompt_tokens"] == u["dataset_prompt_tokens"] and "requests_paid" not in card["teacher_usage"]


def test_kill_and_resume_pays_nothing_twice(tmp_path):
    """A synthesis killed (SIGKILL) mid-way through its teacher calls, then rerun: every reply stored before the
    kill is reused; only those in flight at the kill can be paid twice."""
    with ServerProcess(latency_s=0.2) as srv:
        cfg = _cfg(srv.url, tmp_path / "cache", concurrency=8)
        cfg_file = tmp_path / "cfg.json"
        cfg_file.write_text(json.dumps(cfg.to_dict()))
        code = (
            "import json,sys; from lws_core.config import config_from_dict; from lws_core.data import synthesize; "
            "synthesize(config_from_dict(json.load(open(sys.argv[1]))), sys.argv[2], sessions=120, workers=1, "
            "progress=False, text_only=True)"
        )
        p = subprocess.Popen([sys.executable, "-c", code, str(cfg_file), str(tmp_path / "ds")], cwd=ROOT,
                             start_new_session=True)
        deadline = time.monotonic() + 120
        while srv.stats()["paid"] < 40 and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        at_kill = srv.stats()["paid"]
        assert 40 <= at_kill < srv.stats()["prompts"] + 200 and not (tmp_path / "ds").exists()
        s = synthesize(cfg, tmp_path / "ds", sessions=120, workers=1, progress=False, text_only=True)
        st = srv.stats()
        # only replies in flight at the kill (billed, not yet stored) can be paid again: at most the concurrency;
        # it is 0 on a quiet machine and was 2 under `make test`'s two workers
        dup = st["duplicated"]
        assert dup <= 8 and st["paid"] == st["prompts"] + dup
        assert s.extra["teacher_usage"]["requests_paid"] == st["paid"] - at_kill
        assert s.extra["teacher_usage"]["cache_hits"] >= at_kill - dup
        # a third run pays nothing at all and makes the same rows
        again = synthesize(cfg, tmp_path / "ds2", sessions=120, workers=1, progress=False, text_only=True)
        assert srv.stats()["paid"] == st["paid"] and again.rows == s.rows and again.rejects == s.rejects

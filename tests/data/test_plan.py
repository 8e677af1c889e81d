"""`lws data plan`: shard count, wall time and teacher cost from latency, concurrency, limits and price."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lws_core.config import LWSConfig
from lws_core.data.plan import calls_per_session, plan

W = dict(LWSConfig().data.scenarios)


def test_plan_arithmetic():
    assert calls_per_session(W) == pytest.approx(1.2)  # silence 0, barge-in and multi-turn 2, the rest 1
    p = plan(500_000, W, latency_s=0.3, concurrency=60, shards=8, parallelism=8, usd_per_1k_input=1.0,
             usd_per_1k_output=2.0, prompt_tokens_per_call=100, completion_tokens_per_call=50, build_sessions_per_s=100)
    assert p.calls_per_s_per_pod == pytest.approx(200) and p.limited_by == "concurrency / latency"
    assert p.sessions_per_shard == 62_500 and p.teacher_calls == 600_000
    assert p.scripts_s_per_shard == pytest.approx(62_500 * 1.2 / 200, abs=0.1)
    assert p.wall_s == pytest.approx(375 + 625, abs=0.2)  # one wave: scripts + TTS stage
    assert p.cost_usd == pytest.approx(600_000 * (0.1 + 0.1))
    # half the pods at once: two waves; a request budget below concurrency/latency is the limit
    q = plan(500_000, W, latency_s=0.3, concurrency=60, shards=8, parallelism=4, requests_per_minute=6000,
             build_sessions_per_s=100)
    assert q.limited_by == "requests per minute" and q.calls_per_s_per_pod == 100
    assert q.wall_s == pytest.approx(2 * (62_500 * 1.2 / 100 + 625), abs=0.2)
    assert q.provider_requests_per_minute == pytest.approx(4 * 6000)


def test_plan_cli():
    lws = [sys.executable, "-m", "lws_core.cli.main"]
    p = subprocess.run([*lws, "data", "plan", "--sessions", "500000", "--latency-s", "0.3", "--concurrency", "64",
                        "--shards", "8", "--price-per-1k-tokens", "0.001", "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["shards"] == 8 and d["teacher_calls"] == 600_000 and d["cost_usd"] == pytest.approx(600_000 * 550 / 1000 * 0.001)
    assert d["wall_s"] > 0
    bad = subprocess.run([*lws, "data", "plan", "--sessions", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--sessions must be >= 1" in bad.stderr and "Traceback" not in bad.stderr

"""How long and how much a teacher-scripted synthesis will take, before anyone pays for it.

A pod scripts sessions at ``min(concurrency / latency, requests-per-minute / 60, tokens-per-minute
/ 60 / tokens per call)`` teacher calls per second (the client keeps ``concurrency`` requests in
flight under the shared limit); a session needs a known number of calls by scenario (silence none,
barge-in and multi-turn two, the others one). Then the pod's workers build the sessions (TTS),
at a measured rate. Shards run ``parallelism`` at a time, each in its own pod, each with the
config's per-pod limits — which is why the plan also prints the request rate the provider sees.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# teacher calls a session of each scenario makes (lws_core.data.synth._plan)
CALLS_PER_SCENARIO = {"silence": 0, "single_turn": 1, "pause": 1, "backchannel": 1, "barge_in": 2, "multi_turn": 2}


@dataclass(frozen=True)
class Plan:
    sessions: int
    shards: int
    parallelism: int
    sessions_per_shard: int
    calls_per_session: float
    teacher_calls: int
    calls_per_s_per_pod: float
    limited_by: str
    scripts_s_per_shard: float
    build_s_per_shard: float
    wall_s: float
    provider_requests_per_minute: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def calls_per_session(scenarios: dict[str, float]) -> float:
    total = sum(scenarios.values())
    return sum(w * CALLS_PER_SCENARIO.get(k, 1) for k, w in scenarios.items()) / total if total else 0.0


def plan(
    sessions: int,
    scenarios: dict[str, float],
    *,
    latency_s: float,
    concurrency: int,
    shards: int,
    parallelism: int,
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    prompt_tokens_per_call: int = 300,
    completion_tokens_per_call: int = 250,
    usd_per_1k_input: float = 0.0,
    usd_per_1k_output: float = 0.0,
    build_sessions_per_s: float = 90.0,
) -> Plan:
    """The plan for ``sessions`` sessions; ``build_sessions_per_s`` is the TTS stage's rate per pod
    (benchmarks/results/data.md: ~90 sessions/s on 2 cores)."""
    shards = max(1, min(shards, sessions))
    parallelism = max(1, min(parallelism, shards))
    per_shard = math.ceil(sessions / shards)
    cps = calls_per_session(scenarios)
    tokens = prompt_tokens_per_call + completion_tokens_per_call
    rates = {"concurrency / latency": concurrency / max(latency_s, 1e-9)}
    if requests_per_minute:
        rates["requests per minute"] = requests_per_minute / 60
    if tokens_per_minute:
        rates["tokens per minute"] = tokens_per_minute / 60 / max(1, tokens)
    limited_by = min(rates, key=rates.__getitem__)
    rate = rates[limited_by]
    scripts_s = per_shard * cps / rate
    build_s = per_shard / build_sessions_per_s
    waves = math.ceil(shards / parallelism)
    calls = round(sessions * cps)
    pt, ct = calls * prompt_tokens_per_call, calls * completion_tokens_per_call
    return Plan(
        sessions=sessions,
        shards=shards,
        parallelism=parallelism,
        sessions_per_shard=per_shard,
        calls_per_session=round(cps, 3),
        teacher_calls=calls,
        calls_per_s_per_pod=round(rate, 2),
        limited_by=limited_by,
        scripts_s_per_shard=round(scripts_s, 1),
        build_s_per_shard=round(build_s, 1),
        wall_s=round(waves * (scripts_s + build_s), 1),
        provider_requests_per_minute=round(rate * 60 * parallelism, 1),
        prompt_tokens=pt,
        completion_tokens=ct,
        cost_usd=round(pt / 1000 * usd_per_1k_input + ct / 1000 * usd_per_1k_output, 2),
    )

"""Config section `eval`: benchmarks, judge, consistency, ablations."""

from __future__ import annotations

from pydantic import Field

from lws_core.config.base import Section


class JudgeConfig(Section):
    """An OpenAI-compatible judge. Without an endpoint, judged metrics say "not judged"."""

    endpoint: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)


class EvalConfig(Section):
    limit: int | None = Field(200, description="Max test sessions to evaluate (None = all).")
    fdb_probe_per_task: int = Field(4, ge=1, description="Probe samples per Full-Duplex-Bench task.")
    judge: JudgeConfig = JudgeConfig()
    consistency_embedding: bool = True

"""Config section `eval`: benchmarks, judge, consistency, ablations."""

from __future__ import annotations

from pydantic import Field

from lws_core.config.base import Section


class JudgeConfig(Section):
    """An OpenAI-compatible judge. Without an endpoint, judged metrics say "not judged"."""

    endpoint: str | None = Field(None, description="Base URL (…/v1) or full …/chat/completions URL of an OpenAI-compatible API.")
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)
    backoff_s: float = Field(1.0, ge=0, description="First retry wait; doubles per retry (Retry-After wins when given).")
    max_backoff_s: float = Field(60.0, gt=0, description="Longest single wait, Retry-After included.")
    concurrency: int = Field(16, ge=1, description="Judge requests in flight.")
    requests_per_minute: int | None = Field(None, ge=1, description="Client-side request budget (None = no limit).")
    tokens_per_minute: int | None = Field(None, ge=1, description="Client-side token budget (None = no limit).")
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature of judge calls.")
    cache_dir: str | None = Field(None, description="Verdict cache (content-hash keyed); default: <out>/judge_cache.")
    usd_per_1k_input: float = Field(0.0, ge=0, description="Price for the cost counter (0 = unknown).")
    usd_per_1k_output: float = Field(0.0, ge=0)


class EvalConfig(Section):
    limit: int | None = Field(100, description="Max sessions to evaluate per held-out split (None = all).")
    liberation: bool = Field(
        True, description="Also score the backbone the model started from on text (the ceiling) and on the encoder's transcript (cascade)."
    )
    fdb_probe_per_task: int = Field(
        20,
        ge=1,
        description="Probe samples per Full-Duplex-Bench task. 20 moves each TOR in steps of 0.05 (4 moved it in steps "
        "of 0.25: one session decided the turn-taking target); the 80 probe sessions take ~40 s on 2 cores.",
    )
    fdb_probe: bool = Field(True, description="Run the Full-Duplex-Bench probe inside `lws eval run`.")
    fdb_probe_seen_phrasing: bool = Field(
        True,
        description="Also run the probe's pause and turn-taking tasks on training phrasings (fdb_*_seen_phrasing): "
        "separates misreading a new phrasing from not hearing (~20 s more).",
    )
    stream_questions: int = Field(
        10,
        ge=2,
        description="Held-out questions per stream: sessions asked back to back in one engine session, each graded "
        "against its own labels (stream_* metrics: are later questions of a live session still answered?).",
    )
    streams: int = Field(
        6, ge=0, description="Streams per held-out split (0 = no stream_* metrics); 6 x 10 questions take ~30 s on 2 cores."
    )
    judge: JudgeConfig = JudgeConfig()
    consistency_embedding: bool = True
    voicebench_samples: int = Field(3, ge=1, description="Judge samples averaged per VoiceBench response (VoiceBench uses 3).")

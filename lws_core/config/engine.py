"""Config section `engine`: decoding and context policy of streaming sessions (simulate, eval, serve).

The one definition of the engine's settings: ``lws_core.engine.EngineConfig`` subclasses
it (mutable, with ``with_overrides``), and this module imports no torch, so reading the
config stays light.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lws_core.config.base import Section


class EngineSection(Section):
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    max_context_tokens: int = Field(
        1024,
        ge=64,
        description="KV-cache bound; the window slides when a unit could overflow it. 1024 (2048 before stop 51): on "
        "20 held-out questions asked one after another in one session the model answered more of the later ones "
        "(written +0.068 +- 0.009 on test_seen, +0.036 +- 0.016 on test, three seeds; benchmarks/long_context.py), a "
        "decode step at 120 s cost 1.45 ms a token against 1.78 (medians of 5; attention reads a shorter cache), and a "
        "session's cache takes half the memory (benchmarks/results/engine.md). Raise it for write/say budgets past a "
        "few hundred tokens a unit (a session checks that the prompt, the kept document and a unit fit twice).",
    )
    keep_units: int = Field(16, ge=1, description="Units kept verbatim when the window slides.")
    keep_document_tokens: int = Field(128, ge=0, description="Tail of the written document re-prefilled on a slide.")
    speak: bool = Field(True, description="Render speech with the TTS (False: text only).")
    tts: Literal["espeak", "none"] = Field(
        "espeak",
        description="Speech synthesizer: espeak (espeak-ng) or none (no TTS is loaded; say text is still decided "
        "and recorded, nothing is played). An Engine given a TTS object uses that one.",
    )
    speak_onset_margin: float = Field(
        0.0,
        description="Logit margin by which <|speak|> must beat <|listen|> for the model to take the turn after "
        "listening (subtracted from speak's logit at onsets only; an answer under way is never cut). 0 = the "
        "model's own decision. Higher values wait for more certainty that the user has finished: fewer "
        "take-overs in mid-question pauses, later answers (benchmarks/turn_margin.py measures the trade-off).",
    )
    endpoint_timeout_s: float | None = Field(
        None, gt=0.0,
        description="Endpoint fallback: take the turn when the user's latest speech (at least endpoint_min_speech_s of "
        "it, by a causal energy gate) has had no reply and has been followed by this many seconds of silence, whatever "
        "the model's own state logits say. Why: on held-out phrasings the model sometimes never answers at all (it "
        "listens on as if the question were unfinished), and a caller left in silence is the worst outcome. Set it "
        "above the longest mid-question pause the model should wait through. null: off (the model's own decision).",
    )
    endpoint_min_speech_s: float = Field(
        0.5, ge=0.0,
        description="Speech the user must have said since the model last spoke for the endpoint fallback to answer it "
        "(a short 'uh-huh' or a click is not a turn to answer).",
    )
    fast_path: bool = Field(True, description="Decode Llama/Qwen2/Qwen3 with the fused-weight forward (same function; batched across sessions in a server).")
    compile_decode: bool = Field(
        False,
        description="Compile the fused forward's single-token decode step with torch.compile (inductor, C++ wrapper) "
        "when the engine starts: the same function with fewer per-op costs (measured 1.57 against 1.70 ms a step at "
        "100 positions and 2.51 against 2.94 at 1,500 on the 2-core CPU; engine RTF not measurably changed there, "
        "benchmarks/results/engine.md), for a start-up longer by the compile (30 s with inductor's on-disk cache warm, "
        "up to ~4 min cold). For long-running servers and GPUs; needs a C++ compiler.",
    )
    cuda_graphs: bool = Field(
        True,
        description="On CUDA, capture each session's single-token decode step of the fused forward as a CUDA graph "
        "(one launch per token instead of ~20 a layer; same function, attention masked over the preallocated cache). "
        "Why: eager launches made a 0.5B step cost 53 ms on an H200 (benchmarks/results/gpu.md). No effect on CPU.",
    )
    threads: int = Field(
        1,
        ge=0,
        description="torch CPU threads that `lws simulate` and `lws serve` use (0 = torch's default, one per core). "
        "A tiny model's steps are too small to split: extra threads spin (measured: simulate 2x slower with 2).",
    )
    kv_dtype: Literal["model", "bfloat16", "float16"] = Field(
        "model",
        description="KV-cache precision of the fused forward: the model's own (exact), or bfloat16/float16 (half the "
        "memory and the bytes attention reads per token; logits then differ slightly from the training forward).",
    )
    weight_dtype: Literal["auto", "model", "float16", "bfloat16", "int8"] = Field(
        "auto",
        description="Weight precision of the fused forward's single-token decode steps: the model's own (exact), or "
        "float16/bfloat16 copies (half the bytes a step reads; logits then differ slightly from the training forward; "
        "prefills and batched steps keep the model's weights), or int8 with one scale per output channel (a quarter "
        "of the bytes, CPU only; larger logit error). auto: int8 for a float32 model on a CPU whose torch runs aten's "
        "int8 kernel (float16 where it does not), where a small model's decode step is bound by reading its weights "
        "(stop 46, three models: answers, states and consistency unchanged within a graded session or two; "
        "benchmarks/results/engine.md), else the model's own.",
    )
    batch_dtype: Literal["auto", "model", "bfloat16"] = Field(
        "model",
        description="Weight precision of forwards over many rows (prefills and batched rounds of at least batch_rows "
        "tokens; the audio encoder over 8 or more windows): the model's own (exact, the default) or bfloat16 copies. "
        "auto: bfloat16 for a float32 model on a CPU with native bf16 dot products, else the model's own. Measured on "
        "such a CPU: single products 2-3x faster, but whole 128-session rounds only ~10 % and served latency not "
        "measurably (benchmarks/results/serve.md), so it is opt-in. A session's logits then depend slightly on the "
        "size of the round it is decoded in.",
    )
    batch_rows: int = Field(32, ge=1, description="Rows (tokens over all sessions of one forward) from which batch_dtype applies.")
    weight_rows: int = Field(
        0, ge=0,
        description="Rows (tokens over all sessions of one forward) up to which the weight_dtype copies serve; 0 = auto: "
        "one row for float16/bfloat16 copies (their products over more rows are slower than float32 on a CPU without "
        "native half-precision arithmetic), 4 for int8 (decode steps and a grammar-forced token's feed; a unit's "
        "audio prefill, where its state is decided, keeps exact weights: benchmarks/results/engine.md). Past it, forwards use the exact (or batch_dtype) weights; "
        "batch_rows is raised past it where it is not already.",
    )


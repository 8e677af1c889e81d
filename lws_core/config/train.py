"""Config section `train`: HF Trainer + DeepSpeed settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lws_core.config.base import Section, Switch


class TrainConfig(Section):
    """Training loop settings. `backend=deepspeed` on CPU runs one gloo process; `torch` is the plain fallback."""

    backend: Literal["deepspeed", "torch"] = "deepspeed"
    zero_stage: int = Field(2, ge=0, le=3)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    max_steps: int = Field(
        1350, ge=1,
        description="Optimizer steps. 1,350 since stop 55, with data.extra_phrasings (three times the phrasings to hear "
        "from the same audio): written test_seen 0.492 -> 0.527 over three seeds against 900 on the same stand-ins. "
        "900 from stop 36 (600 in stop 35, 300 before): on 4,000 sessions, written "
        "test_seen 0.51 +- 0.02 against 0.45 +- 0.07 at 600 steps on 2,000 (three seeds); at 600 steps 4,000 gave nothing.",
    )
    batch_size: int = Field(
        3, ge=1,
        description="Sequences per step. 3 chains (train.chain_sessions=6: 3.5 sessions a chain on average) since stop 48; "
        "8 single sessions before.",
    )
    grad_accum: int = Field(1, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(30, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    logging_steps: int = Field(20, ge=1)
    save_steps: int = Field(100, ge=1)
    max_length: int = Field(2048, ge=64, description="Longest training sequence (tokens); longer sessions are cut at a unit boundary.")
    max_memory_gb: float | None = Field(
        None, gt=0,
        description="Refuse configs whose estimated training peak exceeds this many GB (None = the device's free memory now).",
    )
    num_threads: int | None = Field(None, description="torch threads on CPU (None = all cores).")
    group_by_length: bool = Field(
        True,
        description="Batch sessions of similar token length together (HF's length-grouped sampler): random "
        "batches of the default data carry 46 % padding, which every step computed for nothing.",
    )
    chain_sessions: int = Field(
        6, ge=1, le=8,
        description="Train on chains of 1..N consecutive sessions (uniform) joined into one sequence, so the model "
        "learns to answer the second and later questions of a long live session; 1 = one session per sequence. "
        "6 (with batch_size 3) since stop 48: held-out questions asked one after another in one session, written "
        "0.30 against 0.05 for single sessions, single-session test_seen 0.508 against 0.534 (three seeds, "
        "benchmarks/results/long_context.md).",
    )
    unheard_word_rate: float = Field(
        0.0, ge=0.0, le=1.0,
        description="Share of the question's value-free words (never a number, a slot value or a word the answers "
        "say back) whose audio is silenced in training, the audio analogue of the backbone's "
        "pretrain.backbone.heard_noise: a question with words the recogniser cannot hear, as on a held-out "
        "phrasing; 0 = off (lws_core/train/unheard.py). Off by default: at 0.3, three seeds paired (stop 60), held-out "
        "written accuracy -0.022 +- 0.084 and state accuracy +0.004 +- 0.005, nothing past its interval "
        "(benchmarks/results/liberation.md).",
    )
    cpu_bf16: Switch = Field(
        "auto",
        description="bf16 autocast of the forward when training on a CPU (weights, optimizer and losses stay fp32); "
        "auto = on where the CPU multiplies bf16 natively (AVX512-BF16 or AMX), where it is faster.",
    )

"""Out-of-memory pre-check: estimate the training peak from the config and compare it with the real memory.

Runs before any weight exists (the model is sized on the ``meta`` device), so an
8B backbone on a 16 GB machine, or a batch that cannot fit, fails in a second
with the numbers and the knobs to turn, not after the weights were loaded or
hours into training. The estimate is deliberately rough and on the generous side:
its job is to refuse hopeless configs, not to pack memory to the last byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lws_core.errors import ConfigError
from lws_core.model.sizing import ModelShape

_ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# activations kept for backward, per token, layer and hidden unit: ~34 bytes in 16 bit (Korthikanti et al. 2022,
# without the attention-score matrices, which SDPA does not keep), i.e. 17 elements
_ACT_ELEMENTS_PER_TOKEN_LAYER = 17


@dataclass(frozen=True)
class MemoryEstimate:
    weights_gb: float
    grads_optimizer_gb: float
    activations_gb: float
    logits_gb: float
    audio_gb: float

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.grads_optimizer_gb + self.activations_gb + self.logits_gb + self.audio_gb


def estimate_training_memory(
    shape: ModelShape, precision: str, zero_stage: int | None, world_size: int, batch: int, seq_len: int, units: int
) -> MemoryEstimate:
    """Peak bytes per process, from the model's shape, the precision and how ZeRO partitions it.

    Per parameter: weights in the training dtype. Per trainable parameter: a
    gradient in that dtype, AdamW's two fp32 moments, and an fp32 master copy when
    training in 16 bit. ZeRO-1 splits the optimizer state over the world, ZeRO-2
    also the gradients, ZeRO-3 also the weights (one process splits nothing).
    """
    eb = _ELEMENT_BYTES.get(precision, 4)
    n, t = shape.parameters, shape.trainable
    stage = zero_stage or 0
    ws = max(1, world_size)
    weights = n * eb / (ws if stage >= 3 else 1)
    grads = t * eb / (ws if stage >= 2 else 1)
    optim = t * (8 + (4 if eb == 2 else 0)) / (ws if stage >= 1 else 1)
    acts = batch * seq_len * shape.lm_hidden * shape.lm_layers * _ACT_ELEMENTS_PER_TOKEN_LAYER * eb
    logits = batch * seq_len * shape.vocab * (eb + 4 + 4)  # logits, their fp32 copy for the loss, its gradient
    audio = units * shape.encoder_positions * shape.encoder_width * shape.encoder_layers * _ACT_ELEMENTS_PER_TOKEN_LAYER * eb
    return MemoryEstimate(weights / 1e9, (grads + optim) / 1e9, acts / 1e9, logits / 1e9, audio / 1e9)


def available_memory_gb(on_gpu: bool) -> tuple[float, str]:
    """Free memory of the device training will run on: the current GPU's free memory, or the available RAM."""
    if on_gpu:
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free / 1e9, f"free on {torch.cuda.get_device_name()}"
    try:
        import psutil

        free, where = psutil.virtual_memory().available / 1e9, "available RAM"
    except ImportError:  # pragma: no cover - psutil ships with the environment
        free, where = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9, "free RAM"
    cg = _cgroup_headroom_gb()
    if cg is not None and cg < free:  # in a container (a Kubernetes pod) the limit, not the node, is what counts
        return cg, "left under the container's memory limit"
    return free, where


def _cgroup_headroom_gb() -> float | None:
    """cgroup v2 memory.max - memory.current, or None outside a memory-limited cgroup."""
    base = "/sys/fs/cgroup"
    try:
        with open(f"{base}/memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(f"{base}/memory.current") as f:
            used = int(f.read().strip())
        return max(0, int(limit) - used) / 1e9
    except (OSError, ValueError):
        return None


def check_training_memory(
    shape: ModelShape,
    precision: str,
    zero_stage: int | None,
    batch: int,
    seq_len: int,
    units: int,
    max_memory_gb: float | None,
    on_gpu: bool,
) -> MemoryEstimate:
    """ConfigError (one line, with the numbers and the knobs) if the estimated peak exceeds the memory limit.

    The limit is ``train.max_memory_gb`` when set, else what the device really has free now.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    est = estimate_training_memory(shape, precision, zero_stage, world, batch, seq_len, units)
    if max_memory_gb is not None:
        limit, what = max_memory_gb, f"train.max_memory_gb={max_memory_gb:g}"
    else:
        free, where = available_memory_gb(on_gpu)
        limit, what = free, f"{free:.1f} GB {where} (set train.max_memory_gb to override)"
    if est.total_gb > limit:
        raise ConfigError(
            f"estimated training peak {est.total_gb:.1f} GB > {what}: {shape.parameters / 1e6:,.0f}M params "
            f"({shape.trainable / 1e6:,.0f}M trainable, {precision}, ZeRO-{zero_stage or 0} over {world} process(es)) "
            f"weights {est.weights_gb:.1f} + grads/optimizer {est.grads_optimizer_gb:.1f} + activations {est.activations_gb:.1f} "
            f"+ logits {est.logits_gb:.1f} + audio {est.audio_gb:.1f} GB for batch {batch} x {seq_len} tokens; "
            "lower train.batch_size (raise train.grad_accum) or train.max_length, freeze (model.freeze_backbone, "
            "model.lora.enabled), use bf16 on a GPU, or ZeRO-3 over more GPUs"
        )
    return est

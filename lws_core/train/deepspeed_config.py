"""DeepSpeed configs and the single-process CPU setup (pitfalls from the stack notes).

- Without a launcher, DeepSpeed needs the torch.distributed rank variables, or it
  tries MPI. We set them for one process and pick a free port.
- On CPU, DeepSpeed must not be combined with ``use_cpu=True`` (the Trainer then
  silently drops DeepSpeed); the CPU accelerator is detected by DeepSpeed itself.
- ``torch_adam`` avoids JIT-compiling DeepSpeed's Adam; the shm comm op is still
  JIT-built once and cached under ``TORCH_EXTENSIONS_DIR``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_RANK_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def torch_extensions_dir() -> Path:
    """Persistent cache for DeepSpeed's JIT ops (the shm comm build takes ~20 s once)."""
    return Path(os.environ.get("LWS_TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "lws" / "torch_extensions"))


def ensure_single_process_env() -> dict[str, str | None]:
    """Make one process look like a torch.distributed world of size 1 (no MPI, no launcher).

    Variables a launcher (torchrun, the Kubeflow runtime) already set are kept.
    Returns the previous values so :func:`restore_env` can undo exactly what was set,
    so that child processes started later (tests, the pipeline) do not inherit a
    port that this process's process group is listening on.
    """
    before = {k: os.environ.get(k) for k in (*_RANK_VARS, "TORCH_EXTENSIONS_DIR", "ACCELERATE_USE_CPU")}
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    ext = torch_extensions_dir()
    ext.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ext))
    os.environ.pop("ACCELERATE_USE_CPU", None)  # it silently disables DeepSpeed in the Trainer
    return before


def restore_env(before: dict[str, str | None]) -> None:
    """Put back exactly the values in ``before`` (None = unset); with a full snapshot, also drop keys added since."""
    if len(before) >= len(_RANK_VARS) + 2 and not any(v is None for v in before.values()):
        for k in set(os.environ) - set(before):
            os.environ.pop(k, None)
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def deepspeed_config(zero_stage: int, precision: str, on_gpu: bool, hidden_size: int) -> dict[str, Any]:
    """ZeRO-`zero_stage` config; values left "auto" are filled by the HF Trainer from TrainingArguments.

    Bucket sizes are set from the LM hidden size here, because the Trainer can only
    fill them from a PreTrainedModel config and the LWS model wraps one.
    """
    zero: dict[str, Any] = {"stage": zero_stage}
    if zero_stage >= 2:
        zero.update({"overlap_comm": on_gpu, "contiguous_gradients": True, "reduce_bucket_size": hidden_size * hidden_size})
    if zero_stage == 3:
        zero.update({"stage3_gather_16bit_weights_on_model_save": True, "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
                     "stage3_param_persistence_threshold": 10 * hidden_size})
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": zero,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto", "torch_adam": True},
        },
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {"warmup_min_lr": 0, "warmup_max_lr": "auto", "warmup_num_steps": "auto", "total_num_steps": "auto",
                       "warmup_type": "linear"},  # like the Trainer's own linear schedule (default is log)
        },
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    elif precision == "fp16":
        cfg["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    return cfg


def resolve_precision(precision: str, on_gpu: bool) -> str:
    """"auto" means bf16 on GPUs that support it, fp32 on CPU."""
    if precision != "auto":
        return precision
    if on_gpu:
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"

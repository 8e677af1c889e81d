"""What this machine's CPU can do fast, read once: shared by training (autocast) and the engine (bf16 copies)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): only there are bf16 products faster.

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also says yes on plain AVX-512, where
    bf16 is emulated; the CPU flags are read from /proc/cpuinfo (Linux; elsewhere: no).
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def bf16_autocast(setting: str):  # noqa: ANN201 - a context manager
    """bf16 autocast of a training forward (``auto`` | ``on`` | ``off``); weights and optimizer stay fp32.

    ``auto`` turns it on where bf16 products are native: a GPU, or a CPU with AVX512-BF16 or AMX (1.45x
    on this project's AMX CPUs for the stand-in pretraining, measured). The losses are computed in fp32
    either way (the models upcast their logits before the cross-entropy).
    """
    on_gpu = torch.cuda.is_available()
    enabled = setting == "on" or (setting == "auto" and (on_gpu or native_bf16()))
    return torch.autocast("cuda" if on_gpu else "cpu", dtype=torch.bfloat16, enabled=enabled)

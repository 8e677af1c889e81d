"""Shared parts of the GPU check (benchmarks/gpu_check.sh): backbones, model building, device facts.

The GPU figures are for random-init backbones of real shapes: no weights are read
(none can be downloaded on the device machine), and throughput and latency depend on
the shapes, not on the values. Every function also runs on CPU at toy sizes
(``smoke``), so the check is exercised by the CPU test suite before a GPU is lent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.model.synthetic (training rows) and lws_core without an installed package
    sys.path.insert(0, str(ROOT))

# Qwen2.5 and Qwen3 checkpoints carry a 151,936-row embedding (their 151,6xx tokens padded to a multiple
# of 128). The LM head over that vocabulary is ~136M of a 0.5B model's parameters and a large share of
# its FLOPs, so the benchmark pads the project's small test tokenizer to that size: the shapes, and the
# cost, are those of a run that extends a real Qwen tokenizer (lws_core.schema.extend_tokenizer).
QWEN_VOCAB = 151936

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from NVIDIA's data sheets, matched on the device name.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H200 NVL", 835.0),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("H100 NVL", 835.0),
    ("H100 PCIE", 756.5),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H800", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("A10G", 70.0),
]


@dataclass(frozen=True)
class Backbone:
    """A backbone shape the check can build. ``preset`` is the project preset the model is built from;
    ``lm`` (when set) replaces the preset's LM config with another architecture of the given shape."""

    name: str
    preset: str
    note: str
    lm: dict[str, Any] | None = None
    vocab: int = QWEN_VOCAB


BACKBONES: dict[str, Backbone] = {
    "qwen-0.5b": Backbone(
        "qwen-0.5b",
        "qwen-0.5b",
        "the project's own qwen-0.5b preset (Qwen2 architecture, Qwen2.5-0.5B shape: hidden 896, 24 layers, "
        "14 heads, 2 KV heads, intermediate 4864, tied embeddings), vocabulary padded to Qwen's 151,936",
    ),
    "qwen3-0.6b": Backbone(
        "qwen3-0.6b",
        "qwen-0.5b",
        "Qwen3-0.6B shape (Qwen3 architecture with q/k norm: hidden 1024, 28 layers, 16 heads of 128, 8 KV heads, "
        "intermediate 3072, tied embeddings, vocabulary 151,936) swapped into the qwen-0.5b preset's model build "
        "(the project presets build Llama/Qwen2 only); the audio projector follows the hidden size",
        lm=dict(model_type="qwen3", hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                num_key_value_heads=8, head_dim=128, intermediate_size=3072, rope_theta=1000000.0,
                tie_word_embeddings=True),
    ),
    # toy sizes for --smoke (CPU test, code check): same code path, seconds instead of minutes
    "tiny": Backbone("tiny", "tiny", "the project's tiny preset (Llama, hidden 256, 4 layers), test tokenizer vocabulary",
                     vocab=0),
    "tiny-qwen3": Backbone(
        "tiny-qwen3", "tiny", "a toy Qwen3 (hidden 64, 2 layers) in the tiny preset's build: checks the Qwen3 swap",
        lm=dict(model_type="qwen3", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=16, intermediate_size=128, tie_word_embeddings=True),
        vocab=0,
    ),
}


@contextlib.contextmanager
def _lm_swapped(lm: dict[str, Any] | None) -> Iterator[None]:
    """While building, make the preset's LM config another architecture (only inside this benchmark)."""
    if lm is None:
        yield
        return
    from transformers import AutoConfig

    from lws_core.model import lws_model

    kw = dict(lm)
    model_type = kw.pop("model_type")
    original = lws_model.lm_config

    def swapped(preset: object, vocab_size: int, pad_id: int, max_positions: int = 8192):  # noqa: ANN202
        return AutoConfig.for_model(model_type, vocab_size=vocab_size, pad_token_id=pad_id,
                                    max_position_embeddings=max_positions, **kw)

    lws_model.lm_config = swapped
    try:
        yield
    finally:
        lws_model.lm_config = original


def build_model(backbone: str, seed: int = 0, overrides: dict[str, Any] | None = None):  # noqa: ANN201 - LWSModel
    """A random-init LWS model (backbone + audio encoder) of the named shape, on CPU in fp32.

    ``overrides`` are project-config keys (``schema.max_write_tokens``...): smoke runs shrink the budgets.
    """
    import torch

    from lws_core.config import LWSConfig
    from lws_core.model import LWSModel
    from lws_core.schema import train_bpe_tokenizer
    from tests.model import synthetic

    if backbone not in BACKBONES:
        raise SystemExit(f"error: unknown backbone {backbone!r} (choose from {', '.join(BACKBONES)})")
    b = BACKBONES[backbone]
    torch.manual_seed(seed)
    cfg = LWSConfig().with_overrides({"model.preset": b.preset, **(overrides or {})})
    tok = train_bpe_tokenizer(synthetic.CORPUS, vocab_size=300)
    with _lm_swapped(b.lm):
        model = LWSModel.build(cfg, tokenizer=tok)
    if b.vocab and model.lm.get_input_embeddings().weight.shape[0] < b.vocab:
        model.lm.resize_token_embeddings(b.vocab, mean_resizing=False)
    return model


def lm_shape(model: Any) -> dict[str, int]:
    """Parameter counts and attention width of the model, for the FLOPs formulas."""
    from torch import nn

    lm = model.lm
    c = lm.config
    n_lm = sum(p.numel() for p in lm.parameters())
    n_embed = sum(m.weight.numel() for m in lm.modules() if isinstance(m, nn.Embedding))
    n_all = sum(p.numel() for p in model.parameters())
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    head = lm.get_output_embeddings().weight
    vocab, hidden = head.shape
    tied = head is lm.get_input_embeddings().weight
    return {
        "parameters": n_all,
        "lm_parameters": n_lm,
        "lm_non_embedding_parameters": n_lm - n_embed,
        # what the matmuls see per token: every LM weight except the embedding lookup, the LM head counted
        # once (a tied head shares the embedding's tensor, which the line above left out)
        "lm_matmul_parameters": n_lm - n_embed + (head.numel() if tied else 0),
        "tied_embeddings": bool(tied),
        "audio_parameters": n_all - n_lm,
        "vocab": int(vocab),
        "hidden": int(hidden),
        "layers": int(c.num_hidden_layers),
        "heads": int(c.num_attention_heads),
        "kv_heads": int(getattr(c, "num_key_value_heads", c.num_attention_heads)),
        "head_dim": int(head_dim),
        "architecture": type(lm).__name__,
    }


def gpu_name() -> str:
    """The device's name from torch, and from nvidia-smi when torch has no CUDA."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
    except Exception:  # pragma: no cover - torch is always installed
        pass
    return nvidia_smi().get("name", "")


def nvidia_smi() -> dict[str, str]:
    """First GPU's name, driver, memory and clocks as nvidia-smi reports them ({} without nvidia-smi)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    fields = ["name", "driver_version", "memory.total", "clocks.max.sm", "power.limit"]
    try:
        out = subprocess.run([exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    line = out.strip().splitlines()[0] if out.strip() else ""
    vals = [v.strip() for v in line.split(",")]
    return dict(zip(fields, vals, strict=False)) if len(vals) == len(fields) else {}


def peak_bf16_tflops(name: str) -> float | None:
    """Dense bf16 peak of the named GPU (None when unknown; ``LWS_PEAK_TFLOPS`` overrides)."""
    if os.environ.get("LWS_PEAK_TFLOPS"):
        return float(os.environ["LWS_PEAK_TFLOPS"])
    up = name.upper()
    for key, tf in PEAK_BF16_TFLOPS:
        if key in up:
            return tf
    return None


def device_facts(device: str) -> dict[str, Any]:
    import platform

    import torch

    facts: dict[str, Any] = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
                             "cpu_count": os.cpu_count()}
    if device.startswith("cuda"):
        name = gpu_name()
        facts.update({"gpu": name, "peak_bf16_dense_tflops": peak_bf16_tflops(name), "nvidia_smi": nvidia_smi(),
                      "cuda": torch.version.cuda})
    else:
        facts["gpu"] = None
    return facts


def resolve_device(device: str) -> str:
    """``auto`` = cuda when present; an explicit ``cuda`` without CUDA is a user error (exit 2)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {device} but torch.cuda is not available here (torch {torch.__version__})",
              file=sys.stderr)
        raise SystemExit(2)
    return device


def pct(xs: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(xs, q)), 4) if xs else None


def write_json(path: str | Path | None, obj: dict) -> None:
    """Print the result and, when a path is given, write it there (directories created)."""
    text = json.dumps(obj, indent=1, default=str)
    print(text, flush=True)
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")

"""Decode-only modules that load a saved LWS model without transformers' modeling code.

Why: ``lws simulate`` and ``lws serve`` should be ready in about 3 s on the tiny
model, and importing transformers' Llama and Whisper modeling code costs ~3 s of
CPU on its own (it pulls in ``torch._dynamo``, ``torch.distributed.tensor``,
accelerate and scipy unconditionally; ``benchmarks/results/startup.md``). The
streaming engine never runs the HF forward when its fused path
(:class:`~lws_core.engine.fastpath.FastPath`) covers the backbone, so it only
needs the *weights* in modules with the same names and attributes.

These classes hold exactly that: :class:`LeanCausalLM` mirrors the parameter
names and the attributes :class:`FastPath` reads of ``LlamaForCausalLM`` /
``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM``, and has no forward of its own;
:class:`LeanWhisperEncoder` is Whisper's encoder forward (conv stem, positions,
pre-LN blocks), a few dozen lines. The tests load the same directory both ways
and compare the engine's logits and outputs (``tests/model/test_lean.py``).

Anything outside what they cover (sliding windows, scaled rotary, other
architectures) makes :func:`lean_supported` say no, and the caller loads the HF
classes as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

LEAN_TYPES = ("llama", "qwen2", "qwen3")


def _rope(cfg: dict[str, Any]) -> tuple[str, float] | None:
    """(rope type, theta) of a config, in either the old (``rope_theta``) or new (``rope_parameters``) form."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    return (kind, float(theta)) if kind == "default" else None


def lean_supported(lm_dir: str | Path) -> bool:
    """Whether :class:`LeanCausalLM` can hold this backbone (the same set :class:`FastPath` decodes)."""
    try:
        cfg = json.loads((Path(lm_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if cfg.get("model_type") not in LEAN_TYPES or _rope(cfg) is None:
        return False
    if cfg.get("use_sliding_window") and cfg.get("sliding_window"):
        return False
    if any(t != "full_attention" for t in cfg.get("layer_types") or []):
        return False
    if cfg.get("partial_rotary_factor", 1.0) != 1.0 or cfg.get("hidden_act") != "silu":
        return False
    return (Path(lm_dir) / "model.safetensors").is_file()  # sharded checkpoints: the HF loader


class _RMSNorm(nn.Module):
    def __init__(self, n: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.variance_epsilon = eps


class _Rotary(nn.Module):
    """The default rotary embedding: ``(cos, sin)`` [B, T, head_dim] for ``position_ids`` [B, T], as HF computes them."""

    rope_type = "default"

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = (self.inv_freq[None, :, None].float() @ position_ids[:, None, :].float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


class _Linear(nn.Linear):
    """A Linear left uninitialised: its weights come from the checkpoint.

    Why not the meta device: initialising a meta tensor goes through ``torch._refs``,
    which imports ``torch._dynamo`` (1.8 s here), the very import this module avoids.
    """

    def reset_parameters(self) -> None:
        pass


class _Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        pass


class _Conv1d(nn.Conv1d):
    def reset_parameters(self) -> None:
        pass


def _linear(keys: set[str], name: str, n_in: int, n_out: int) -> nn.Linear:
    """A Linear with a bias exactly when the checkpoint has one (Qwen2's q/k/v, Llama's ``attention_bias``)."""
    return _Linear(n_in, n_out, bias=f"{name}.bias" in keys)


class _Attention(nn.Module):
    def __init__(self, cfg: dict[str, Any], keys: set[str], prefix: str) -> None:
        super().__init__()
        h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        kv_heads = cfg.get("num_key_value_heads") or heads
        self.head_dim = cfg.get("head_dim") or h // heads
        self.scaling = self.head_dim**-0.5
        self.q_proj = _linear(keys, f"{prefix}.q_proj", h, heads * self.head_dim)
        self.k_proj = _linear(keys, f"{prefix}.k_proj", h, kv_heads * self.head_dim)
        self.v_proj = _linear(keys, f"{prefix}.v_proj", h, kv_heads * self.head_dim)
        self.o_proj = _linear(keys, f"{prefix}.o_proj", heads * self.head_dim, h)
        if f"{prefix}.q_norm.weight" in keys:  # Qwen3
            self.q_norm = _RMSNorm(self.head_dim, cfg["rms_norm_eps"])
            self.k_norm = _RMSNorm(self.head_dim, cfg["rms_norm_eps"])


class _MLP(nn.Module):
    def __init__(self, cfg: dict[str, Any], keys: set[str], prefix: str) -> None:
        super().__init__()
        h, inter = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = _linear(keys, f"{prefix}.gate_proj", h, inter)
        self.up_proj = _linear(keys, f"{prefix}.up_proj", h, inter)
        self.down_proj = _linear(keys, f"{prefix}.down_proj", inter, h)
        self.act_fn = F.silu


class _Layer(nn.Module):
    def __init__(self, cfg: dict[str, Any], keys: set[str], prefix: str) -> None:
        super().__init__()
        self.self_attn = _Attention(cfg, keys, f"{prefix}.self_attn")
        self.mlp = _MLP(cfg, keys, f"{prefix}.mlp")
        self.input_layernorm = _RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.post_attention_layernorm = _RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class _Core(nn.Module):
    def __init__(self, cfg: dict[str, Any], keys: set[str]) -> None:
        super().__init__()
        self.embed_tokens = _Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(_Layer(cfg, keys, f"model.layers.{i}") for i in range(cfg["num_hidden_layers"]))
        self.norm = _RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        self.rotary_emb = _Rotary(head_dim, _rope(cfg)[1])


class LeanCausalLM(nn.Module):
    """The weights of a Llama / Qwen2 / Qwen3 causal LM under HF's names; decoded only through FastPath."""

    def __init__(self, cfg: dict[str, Any], keys: set[str]) -> None:
        super().__init__()
        self.config = SimpleNamespace(**cfg)
        self.model = _Core(cfg, keys)
        self.lm_head = _Linear(cfg["hidden_size"], cfg["vocab_size"], bias="lm_head.bias" in keys)
        if cfg.get("tie_word_embeddings") or "lm_head.weight" not in keys:
            self.lm_head.weight = self.model.embed_tokens.weight

    @classmethod
    def load(cls, lm_dir: str | Path, dtype: torch.dtype = torch.float32) -> LeanCausalLM:
        """From a ``save_pretrained`` directory (one ``model.safetensors``); every checkpoint tensor must land."""
        from safetensors.torch import load_file

        cfg = json.loads((Path(lm_dir) / "config.json").read_text())
        state = load_file(str(Path(lm_dir) / "model.safetensors"))
        lm = cls(cfg, set(state))
        tied = bool(cfg.get("tie_word_embeddings")) or "lm_head.weight" not in state
        missing, unexpected = lm.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in missing if not (tied and k == "lm_head.weight")]
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match its {cfg['model_type']} config: missing {missing[:3]}, unexpected {unexpected[:3]}")
        if tied:  # assign=True replaced the shared parameter with the checkpoint's tensor: share it again
            lm.lm_head.weight = lm.model.embed_tokens.weight
        return lm.to(dtype).eval()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ARG002
        raise RuntimeError("a lean (decode-only) backbone runs only through the engine's fused path; load the model with transformers to train or run its forward")


class _EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.self_attn = nn.Module()
        self.self_attn.q_proj = _Linear(d, d)
        self.self_attn.k_proj = _Linear(d, d, bias=False)
        self.self_attn.v_proj = _Linear(d, d)
        self.self_attn.out_proj = _Linear(d, d)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = _Linear(d, ffn)
        self.fc2 = _Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = self.self_attn
        n, t, d = h.shape
        hd = d // self.heads
        x = self.self_attn_layer_norm(h)
        q = (a.q_proj(x) * hd**-0.5).view(n, t, self.heads, hd).transpose(1, 2)  # scaled before, as Whisper does
        k = a.k_proj(x).view(n, t, self.heads, hd).transpose(1, 2)
        v = a.v_proj(x).view(n, t, self.heads, hd).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, scale=1.0).transpose(1, 2).reshape(n, t, d)
        h = h + a.out_proj(o)
        return h + self.fc2(F.gelu(self.fc1(self.final_layer_norm(h))))


class LeanWhisperEncoder(nn.Module):
    """Whisper's encoder forward (``WhisperEncoder``) under its parameter names, for inference."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        if cfg.get("activation_function", "gelu") != "gelu":
            raise ValueError(f"lean Whisper encoder: activation {cfg.get('activation_function')!r} not supported")
        self.config = SimpleNamespace(**cfg)
        d = cfg["d_model"]
        self.conv1 = _Conv1d(cfg["num_mel_bins"], d, kernel_size=3, padding=1)
        self.conv2 = _Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = _Embedding(cfg["max_source_positions"], d)
        self.layers = nn.ModuleList(
            _EncoderLayer(d, cfg["encoder_attention_heads"], cfg["encoder_ffn_dim"]) for _ in range(cfg["encoder_layers"])
        )
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, input_features: torch.Tensor) -> SimpleNamespace:
        need = self.config.max_source_positions * 2
        if input_features.shape[-1] != need:
            raise ValueError(f"Whisper expects {need} feature frames, got {input_features.shape[-1]}")
        h = F.gelu(self.conv2(F.gelu(self.conv1(input_features)))).permute(0, 2, 1)
        h = h + self.embed_positions.weight
        for layer in self.layers:
            h = layer(h)
        return SimpleNamespace(last_hidden_state=self.layer_norm(h))


def whisper_encoder_config(path: str | Path) -> dict[str, Any]:
    """A saved ``encoder_config.json`` as a dict (the lean encoder reads its sizes from it)."""
    cfg = json.loads(Path(path).read_text())
    missing = [k for k in ("d_model", "num_mel_bins", "max_source_positions", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim") if k not in cfg]
    if missing:
        raise ValueError(f"encoder config lacks {missing}")
    return cfg


__all__ = ["LeanCausalLM", "LeanWhisperEncoder", "lean_supported", "whisper_encoder_config"]

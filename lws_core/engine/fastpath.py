"""A lean, batched forward for Llama / Qwen2 / Qwen3 backbones, used by the streaming engine.

Why hand-fused: a tiny model's decode step is dominated by per-op overhead and
weight reads, not FLOPs. This path computes exactly the same function as the HF
forward with fused weights (one QKV product and one gate/up product per layer),
the model's own norm, rotary and activation modules, and SDPA over each
session's own :class:`~lws_core.engine.kv.StaticKV`. ``torch.compile`` was
measured against it on the 2-core CPU (``benchmarks/decode_step.py``): inductor's
static-shape decode step was slower than this eager path, so this one is kept.

Why batched: a server advances many sessions per unit. :meth:`FastPath.forward`
takes any number of *feeds* (one per session: its new embeddings, its cache, its
start position) and runs the dense products once over all their tokens together
(ragged: no padding), so each weight matrix is read once per step for every
session instead of once per session. Only attention is per session, over that
session's own buffer, so sessions never see each other's context. The engine's
tests compare its logits with the HF model's own full forward, alone and batched.

Anything it does not recognise (other architectures, LoRA wrappers,
sliding-window attention) uses the HF forward instead, one session at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from lws_core.engine.kv import StaticKV


@dataclass
class Feed:
    """One session's part of a batched forward: ``embeds`` [n, H] at positions ``start .. start+n-1``."""

    embeds: torch.Tensor
    kv: StaticKV
    start: int
    want_logits: bool = True


class FastPath:
    """Fused-weight forward over an HF ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM``."""

    SUPPORTED = ("llama", "qwen2", "qwen3")

    @classmethod
    def supports(cls, lm: nn.Module) -> bool:
        cfg = getattr(lm, "config", None)
        if cfg is None or getattr(cfg, "model_type", None) not in cls.SUPPORTED:
            return False
        if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", False):
            return False
        if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
            return False
        core = getattr(lm, "model", None)
        if core is None or not hasattr(core, "layers") or not hasattr(core, "rotary_emb"):
            return False
        layer = core.layers[0]
        a = getattr(layer, "self_attn", None)
        need = ("q_proj", "k_proj", "v_proj", "o_proj")
        if a is None or not all(isinstance(getattr(a, n, None), nn.Linear) for n in need):
            return False  # e.g. LoRA-wrapped projections
        mlp = getattr(layer, "mlp", None)
        return mlp is not None and all(
            isinstance(getattr(mlp, n, None), nn.Linear) for n in ("gate_proj", "up_proj", "down_proj")
        )

    @torch.no_grad()
    def __init__(self, lm: nn.Module) -> None:
        self.lm = lm
        self.core = lm.model
        self.layers = []
        for layer in self.core.layers:
            a, m = layer.self_attn, layer.mlp
            qkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight], 0).contiguous()
            bias = None
            if a.q_proj.bias is not None:
                bias = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias], 0).contiguous()
            self.layers.append(
                dict(
                    ln1=layer.input_layernorm,
                    ln2=layer.post_attention_layernorm,
                    q_norm=getattr(a, "q_norm", None),  # Qwen3: RMSNorm per head on q and k, before rotary
                    k_norm=getattr(a, "k_norm", None),
                    qkv=qkv,
                    qkv_bias=bias,
                    o=a.o_proj,
                    gu=torch.cat([m.gate_proj.weight, m.up_proj.weight], 0).contiguous(),
                    gu_bias=None
                    if m.gate_proj.bias is None
                    else torch.cat([m.gate_proj.bias, m.up_proj.bias], 0),
                    down=m.down_proj,
                    act=m.act_fn,
                    q=a.q_proj.out_features,
                    kv=a.k_proj.out_features,
                    hd=a.head_dim,
                    scale=a.scaling,
                    inter=m.gate_proj.out_features,
                )
            )
        first = self.layers[0]
        self.kv_heads = first["kv"] // first["hd"]
        self.head_dim = first["hd"]

    def new_kv(self, max_tokens: int, device: torch.device, dtype: torch.dtype) -> StaticKV:
        """A session's cache for this backbone (see :class:`StaticKV` for the sizing)."""
        return StaticKV(len(self.layers), self.kv_heads, self.head_dim, max_tokens, dtype, device)

    @torch.no_grad()
    def forward(self, feeds: Sequence[Feed]) -> list[torch.Tensor | None]:
        """Feed every session its new embeddings; return each one's last-position logits (or None)."""
        sizes = [f.embeds.shape[0] for f in feeds]
        for f, n in zip(feeds, sizes, strict=True):
            f.kv.length = f.start
            f.kv.reserve(n)
        h = feeds[0].embeds if len(feeds) == 1 else torch.cat([f.embeds for f in feeds])
        device = h.device
        pos = torch.cat([torch.arange(f.start, f.start + n, device=device) for f, n in zip(feeds, sizes, strict=True)])
        h = h.unsqueeze(0)  # [1, T, H]: the model's modules expect a batch axis
        cos, sin = self.core.rotary_emb(h, pos.unsqueeze(0))
        cos, sin = cos[0].unsqueeze(1), sin[0].unsqueeze(1)  # [T, 1, hd]: broadcast over heads
        t = h.shape[1]
        bounds = []
        t0 = 0
        for n in sizes:
            bounds.append((t0, t0 + n))
            t0 += n
        masks = [
            None if n == 1 else torch.ones(n, f.start + n, dtype=torch.bool, device=device).tril(f.start)
            for f, n in zip(feeds, sizes, strict=True)
        ]
        for i, L in enumerate(self.layers):
            hd = L["hd"]
            r = L["ln1"](h)
            qkv = F.linear(r[0], L["qkv"], L["qkv_bias"])
            q, k, v = qkv.split([L["q"], L["kv"], L["kv"]], dim=-1)
            q, k, v = q.view(t, -1, hd), k.view(t, -1, hd), v.view(t, -1, hd)
            if L["q_norm"] is not None:
                q, k = L["q_norm"](q), L["k_norm"](k)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            outs = []
            for f, (a, b), mask in zip(feeds, bounds, masks, strict=True):
                f.kv.write(i, f.start, k[a:b].transpose(0, 1), v[a:b].transpose(0, 1))
                kk, vv = f.kv.view(i, f.start + (b - a))
                qb = q[a:b].transpose(0, 1).unsqueeze(0)  # [1, heads, n, hd]
                o = F.scaled_dot_product_attention(
                    qb, kk, vv, attn_mask=mask, scale=L["scale"], enable_gqa=qb.shape[1] != kk.shape[1]
                )
                outs.append(o[0].transpose(0, 1).reshape(b - a, -1))
            o = outs[0] if len(outs) == 1 else torch.cat(outs)
            h = h + L["o"](o.unsqueeze(0))
            r = L["ln2"](h)
            g, u = F.linear(r, L["gu"], L["gu_bias"]).split([L["inter"], L["inter"]], dim=-1)
            h = h + L["down"](L["act"](g) * u)
        for f, n in zip(feeds, sizes, strict=True):
            f.kv.length = f.start + n
        want = [j for j, f in enumerate(feeds) if f.want_logits]
        result: list[torch.Tensor | None] = [None] * len(feeds)
        if want:
            last = torch.tensor([bounds[j][1] - 1 for j in want], device=device)
            logits = self.lm.lm_head(self.core.norm(h[0, last]))
            for row, j in enumerate(want):
                result[j] = logits[row]
        return result


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

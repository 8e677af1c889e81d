"""A lean forward for Llama/Qwen2-family backbones on CPU, used by the streaming engine.

Why: a tiny model's decode step on CPU is dominated by per-op overhead, not
FLOPs — ~29 small matrix-vector products plus mask building, position and
cache bookkeeping per token. This path computes exactly the same function with
fused weights (one QKV product and one gate/up product per layer), the model's
own norm, rotary and activation modules, and SDPA over the kept cache. It
writes into the same ``DynamicCache``; the engine's tests compare its logits
with the HF model's own full forward. Anything it does not recognise (other
architectures, LoRA wrappers, sliding-window or scaled attention variants) uses
the HF forward instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class FastPath:
    """Fused-weight forward over an HF ``LlamaForCausalLM`` / ``Qwen2ForCausalLM``."""

    SUPPORTED = ("llama", "qwen2")

    @classmethod
    def supports(cls, lm: nn.Module) -> bool:
        cfg = getattr(lm, "config", None)
        if cfg is None or getattr(cfg, "model_type", None) not in cls.SUPPORTED:
            return False
        if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", False):
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

    @torch.no_grad()
    def __call__(
        self, embeds: torch.Tensor, cache, start: int, want_logits: bool = True
    ) -> torch.Tensor | None:  # noqa: ANN001
        """Feed ``embeds`` [1, n, H] at positions ``start..start+n-1``; return the last position's logits."""
        n = embeds.shape[1]
        pos = torch.arange(start, start + n, device=embeds.device).unsqueeze(0)
        cos, sin = self.core.rotary_emb(embeds, pos)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        h = embeds
        mask = None
        total = start + n
        if n > 1:
            mask = torch.ones(n, total, dtype=torch.bool, device=embeds.device).tril(start)
        for i, L in enumerate(self.layers):
            hd = L["hd"]
            r = L["ln1"](h)
            qkv = F.linear(r, L["qkv"], L["qkv_bias"])
            q, k, v = qkv.split([L["q"], L["kv"], L["kv"]], dim=-1)
            q = q.view(1, n, -1, hd).transpose(1, 2)
            k = k.view(1, n, -1, hd).transpose(1, 2)
            v = v.view(1, n, -1, hd).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            k, v = cache.update(k, v, i)
            o = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=L["scale"], enable_gqa=q.shape[1] != k.shape[1]
            )
            h = h + L["o"](o.transpose(1, 2).reshape(1, n, -1))
            r = L["ln2"](h)
            g, u = F.linear(r, L["gu"], L["gu_bias"]).split([L["inter"], L["inter"]], dim=-1)
            h = h + L["down"](L["act"](g) * u)
        if not want_logits:
            return None
        return self.lm.lm_head(self.core.norm(h[:, -1:]))[0, -1]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

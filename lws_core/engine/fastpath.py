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

Why copies in other precisions (``engine.weight_dtype``, ``engine.batch_dtype``): a one-row decode
step is bound by reading the weights, which float16 halves (1.5 vs 2.4 ms a step on the 2-core CPU),
while products over many rows are bound by arithmetic, which is faster in bfloat16 only on CPUs with
native bf16 dot products. Each copy serves only the row counts it was measured to speed up; the exact
weights serve the rest, and the model itself is never cast (training and evaluation see it unchanged).
The copies cost memory: half the dense weights' size each.

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
        if not all(hasattr(n, "variance_epsilon") for n in (layer.input_layernorm, layer.post_attention_layernorm, core.norm)):
            return False  # not a Llama-style RMSNorm
        mlp = getattr(layer, "mlp", None)
        return mlp is not None and all(
            isinstance(getattr(mlp, n, None), nn.Linear) for n in ("gate_proj", "up_proj", "down_proj")
        )

    @torch.no_grad()
    def __init__(
        self, lm: nn.Module, weight_dtype: torch.dtype | None = None, batch_dtype: torch.dtype | None = None, batch_rows: int = 32
    ) -> None:
        """``weight_dtype`` (e.g. float16): also keep half-precision copies of the dense weights, used for
        single-token steps (see :func:`_low_mm`): a one-session decode step is bound by reading the weights.
        ``batch_dtype`` (bfloat16): copies for forwards of ``batch_rows`` rows or more, which are bound by
        arithmetic, 2-3x faster in bf16 on a CPU with native bf16 dot products."""
        self.lm = lm
        self.core = lm.model
        self.layers = []
        model_dtype = lm.get_input_embeddings().weight.dtype
        self.weight_dtype = None if weight_dtype in (None, model_dtype) else weight_dtype
        self.batch_dtype = None if batch_dtype in (None, model_dtype) else batch_dtype
        self.batch_rows = max(2, batch_rows)  # one row is weight_dtype's

        def dense(w: torch.Tensor) -> torch.Tensor:
            # pre-transposed ([in, out], contiguous): torch.mm on them skips the per-call
            # transpose/dispatch of F.linear, measurable at a tiny model's per-op scale
            return w.t().contiguous()

        def low(w: torch.Tensor | None, dtype: torch.dtype | None = self.weight_dtype) -> torch.Tensor | None:
            # the single-token copy: [out, in] for F.linear, whose half-precision CPU kernel is the fast
            # one for one row (mm on a transposed float16 weight measured 5x slower); with more rows
            # float16 products measured slower than float32 on this CPU (no native float16 arithmetic),
            # so those keep the exact weights or take the bfloat16 copies (``big``)
            return None if w is None or dtype is None else w.to(dtype).contiguous()

        def copies(ws: dict[str, tuple[torch.Tensor, torch.Tensor | None]], dtype: torch.dtype | None) -> dict | None:
            return None if dtype is None else {k: (low(w, dtype), low(b, dtype)) for k, (w, b) in ws.items()}

        for layer in self.core.layers:
            a, m = layer.self_attn, layer.mlp
            qkv_w = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight], 0)
            gu_w = torch.cat([m.gate_proj.weight, m.up_proj.weight], 0)
            bias = None
            if a.q_proj.bias is not None:
                bias = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias], 0).contiguous()
            gu_bias = None if m.gate_proj.bias is None else torch.cat([m.gate_proj.bias, m.up_proj.bias], 0)
            dense_ws = {
                "qkv": (qkv_w, bias),
                "o": (a.o_proj.weight, a.o_proj.bias),
                "gu": (gu_w, gu_bias),
                "down": (m.down_proj.weight, m.down_proj.bias),
            }
            q_norm = getattr(a, "q_norm", None)  # Qwen3: RMSNorm per head on q and k, before rotary
            self.layers.append(
                dict(
                    ln1=_norm_params(layer.input_layernorm),
                    ln2=_norm_params(layer.post_attention_layernorm),
                    q_norm=None if q_norm is None else _norm_params(q_norm),
                    k_norm=None if q_norm is None else _norm_params(a.k_norm),
                    qkv=dense(qkv_w),
                    qkv_bias=bias,
                    o=dense(a.o_proj.weight),
                    o_bias=a.o_proj.bias,
                    gu=dense(gu_w),
                    gu_bias=gu_bias,
                    down=dense(m.down_proj.weight),
                    down_bias=m.down_proj.bias,
                    low=copies(dense_ws, self.weight_dtype),  # None: no single-token copies
                    big=copies(dense_ws, self.batch_dtype),  # None: no many-row copies
                    act=F.silu if getattr(lm.config, "hidden_act", None) == "silu" else m.act_fn,
                    q=a.q_proj.out_features,
                    kv=a.k_proj.out_features,
                    hd=a.head_dim,
                    scale=a.scaling,
                    inter=m.gate_proj.out_features,
                    heads=a.q_proj.out_features // a.head_dim,
                    gqa=a.q_proj.out_features != a.k_proj.out_features,
                )
            )
        self.final_norm = _norm_params(self.core.norm)
        self.head_low = None if self.weight_dtype is None else (low(lm.lm_head.weight), low(lm.lm_head.bias))
        self.head_big = None if self.batch_dtype is None else (low(lm.lm_head.weight, self.batch_dtype), low(lm.lm_head.bias, self.batch_dtype))
        first = self.layers[0]
        self.kv_heads = first["kv"] // first["hd"]
        self.head_dim = first["hd"]
        # rotary: a cos/sin table by position for the plain variants (the same numbers the model's
        # rotary module computes); scaled variants that depend on the length use the module itself
        rot = self.core.rotary_emb
        self._table = getattr(rot, "rope_type", None) in ("default", "linear") and hasattr(rot, "inv_freq")
        self._cos = self._sin = None

    def _rotary(self, pos: torch.Tensor | None, start: int, n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sign-folded sin, [T, 1, hd], for positions ``pos`` (or the range ``start .. start+n-1``).

        rotate_half(x) * sin == x.roll(hd/2) * sin_folded, with the first half of sin negated:
        one roll instead of two slices, a negation and a concatenation per layer.
        """
        if not self._table:
            p = pos if pos is not None else torch.arange(start, start + n, device=like.device)
            cos, sin = self.core.rotary_emb(like.unsqueeze(0), p.unsqueeze(0))
            return cos[0].unsqueeze(1), _fold(sin[0]).unsqueeze(1)
        top = (int(pos.max()) if pos is not None else start + n - 1) + 1
        if self._cos is None or self._cos.shape[0] < top or self._cos.device != like.device:
            m = max(top, 2 * (0 if self._cos is None else self._cos.shape[0]), 4096)
            cos, sin = self.core.rotary_emb(like.unsqueeze(0), torch.arange(m, device=like.device).unsqueeze(0))
            self._cos, self._sin = cos[0].unsqueeze(1), _fold(sin[0]).unsqueeze(1)
        if pos is None:
            return self._cos[start : start + n], self._sin[start : start + n]
        return self._cos[pos], self._sin[pos]

    def new_kv(self, max_tokens: int, device: torch.device, dtype: torch.dtype) -> StaticKV:
        """A session's cache for this backbone (see :class:`StaticKV` for the sizing)."""
        return StaticKV(len(self.layers), self.kv_heads, self.head_dim, max_tokens, dtype, device)

    @torch.no_grad()
    def forward(self, feeds: Sequence[Feed]) -> list[torch.Tensor | None]:
        """Feed every session its new embeddings; return each one's last-position logits (or None).

        Written for op count: a tiny model's decode step costs what its Python-level ops cost, so
        the one-session path slices instead of gathering, and each layer issues as few ops as it can.
        """
        sizes = [f.embeds.shape[0] for f in feeds]
        for f, n in zip(feeds, sizes, strict=True):
            f.kv.length = f.start
            f.kv.reserve(n)
        if len(feeds) == 1:
            f = feeds[0]
            h = f.embeds
            cos, sin = self._rotary(None, f.start, sizes[0], h)
        else:
            h = torch.cat([f.embeds for f in feeds])
            pos = torch.cat([torch.arange(f.start, f.start + n, device=h.device) for f, n in zip(feeds, sizes, strict=True)])
            cos, sin = self._rotary(pos, 0, 0, h)
        device = h.device
        t = h.shape[0]
        rows = []  # (kv, start, first token, last token + 1, mask)
        t0 = 0
        for f, n in zip(feeds, sizes, strict=True):
            mask = None if n == 1 else torch.ones(n, f.start + n, dtype=torch.bool, device=device).tril(f.start)
            rows.append((f.kv, f.start, t0, t0 + n, mask))
            t0 += n
        single = len(rows) == 1
        one_row = t == 1  # a single-token step: the half-precision copies, when there are any
        many = t >= self.batch_rows  # a big prefill or batched round: the bfloat16 copies, when there are any
        for i, L in enumerate(self.layers):
            hd, nq, nkv, heads, half = L["hd"], L["q"], L["kv"], L["heads"], L["hd"] // 2
            lw = L["low"] if one_row else L["big"] if many else None
            qkv = _mm(_rms(h, L["ln1"]), L["qkv"], L["qkv_bias"]) if lw is None else _low_mm(_rms(h, L["ln1"]), *lw["qkv"])
            v = qkv[:, nq + nkv :].view(t, -1, hd)
            if L["q_norm"] is None:  # q and k rotated in one go
                qk = qkv[:, : nq + nkv].view(t, -1, hd)
            else:
                qk = torch.cat(
                    [_rms(qkv[:, :nq].view(t, -1, hd), L["q_norm"]), _rms(qkv[:, nq : nq + nkv].view(t, -1, hd), L["k_norm"])],
                    dim=1,
                )
            qk = qk * cos + qk.roll(half, -1) * sin
            q, k = qk[:, :heads], qk[:, heads:]
            outs = []
            for kv, start, a, b, mask in rows:
                n = b - a
                kb, vb = kv.k[i], kv.v[i]  # [kv_heads, capacity, hd] views of the session's buffer
                if single:
                    kb[:, start : start + n].copy_(k.transpose(0, 1))
                    vb[:, start : start + n].copy_(v.transpose(0, 1))
                    qb = q.transpose(0, 1)
                else:
                    kb[:, start : start + n].copy_(k[a:b].transpose(0, 1))
                    vb[:, start : start + n].copy_(v[a:b].transpose(0, 1))
                    qb = q[a:b].transpose(0, 1)
                if qb.dtype != kb.dtype:  # engine.kv_dtype
                    qb = qb.to(kb.dtype)
                # 4-D: with 3-D inputs torch takes its slow "math" attention on CPU (measured 290 µs vs ~40)
                o = F.scaled_dot_product_attention(
                    qb.unsqueeze(0), kb[None, :, : start + n], vb[None, :, : start + n], attn_mask=mask,
                    scale=L["scale"], enable_gqa=L["gqa"],
                )
                o = o[0].transpose(0, 1).reshape(n, nq)
                outs.append(o if o.dtype == h.dtype else o.to(h.dtype))
            o = outs[0] if single else torch.cat(outs)
            if lw is None:
                h = h + _mm(o, L["o"], L["o_bias"])
                gu = _mm(_rms(h, L["ln2"]), L["gu"], L["gu_bias"])
                h = h + _mm(L["act"](gu[:, : L["inter"]]) * gu[:, L["inter"] :], L["down"], L["down_bias"])
            else:
                h = h + _low_mm(o, *lw["o"])
                gu = _low_mm(_rms(h, L["ln2"]), *lw["gu"])
                h = h + _low_mm(L["act"](gu[:, : L["inter"]]) * gu[:, L["inter"] :], *lw["down"])
        for f, n in zip(feeds, sizes, strict=True):
            f.kv.length = f.start + n
        want = [j for j, f in enumerate(feeds) if f.want_logits]
        result: list[torch.Tensor | None] = [None] * len(feeds)
        if want:
            last = [rows[j][3] - 1 for j in want]
            sel = h[last[0] : last[0] + 1] if len(last) == 1 else h[torch.tensor(last, device=device)]
            x = _rms(sel, self.final_norm)
            head = self.head_low if one_row else self.head_big if many else None
            if head is not None:
                logits = _low_mm(x, *head)
            else:
                logits = F.linear(x, self.lm.lm_head.weight, self.lm.lm_head.bias)
            for row, j in enumerate(want):
                result[j] = logits[row]
        return result


def _norm_params(norm: nn.Module) -> tuple[torch.Tensor, float]:
    """(weight, eps) of a Llama-style RMSNorm (Llama, Qwen2 and Qwen3 all use the same form)."""
    return norm.weight, float(norm.variance_epsilon)


def _rms(x: torch.Tensor, params: tuple[torch.Tensor, float]) -> torch.Tensor:
    """LlamaRMSNorm's function (computed in float32, weight applied in the input's dtype)."""
    w, eps = params
    if x.dtype == torch.float32:  # (F.rms_norm measured slower on CPU: it is composite there, with copies)
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    x32 = x.float()
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _mm(x: torch.Tensor, w_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.mm(x, w_t) if bias is None else torch.addmm(bias, x, w_t)


def _low_mm(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ W.T (+ b) with a lower-precision [out, in] weight; the product comes back in the activations'
    dtype, so norms, rotary and attention stay as they were."""
    return F.linear(x.to(w.dtype), w, bias).to(x.dtype)


def _fold(sin: torch.Tensor) -> torch.Tensor:
    """sin with its first half negated (see :meth:`FastPath._rotary`)."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)

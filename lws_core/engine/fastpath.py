"""A lean, batched forward for Llama / Qwen2 / Qwen3 backbones, used by the streaming engine.

Why hand-fused: a tiny model's decode step is dominated by per-op overhead and
weight reads, not FLOPs. This path computes exactly the same function as the HF
forward with fused weights (one QKV product and one gate/up product per layer),
the model's own norm, rotary and activation modules, and SDPA over each
session's own :class:`~lws_core.engine.kv.StaticKV`. ``torch.compile`` of the HF
forward on a static cache was measured against it on the 2-core CPU
(``benchmarks/decode_step.py``) and was slower than this eager path, so this one is
kept; its own single-token step compiles well (``engine.compile_decode``, opt-in for
the compile's start-up cost: :meth:`FastPath.compile_decode`).

Why batched: a server advances many sessions per unit. :meth:`FastPath.forward`
takes any number of *feeds* (one per session: its new embeddings, its cache, its
start position) and runs the dense products once over all their tokens together
(ragged: no padding), so each weight matrix is read once per step for every
session instead of once per session. Attention reads each session's own buffer only,
so sessions never see each other's context. A session's buffer is a slot of a shared
pool block (:class:`~lws_core.engine.kv.KVPool`), so a decode round (one new token
for each of many sessions) attends for all of them in one masked call over the block
(:func:`_block_groups`) rather than one call per session and layer, whose overhead
on the 2-core CPU matched the dense products' cost at 64 sessions. The engine's
tests compare its logits with the HF model's own full forward, alone and batched.

Why copies in other precisions (``engine.weight_dtype``, ``engine.batch_dtype``): a one-row decode
step is bound by reading the weights, which float16 halves (1.5 vs 2.4 ms a step on the 2-core CPU) and
int8 quarters (the CPU default since stop 46: 0.74 against 1.06 ms a step in float16 at 100 positions),
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

from lws_core.engine.kv import PREALLOCATE_MAX, KVPool, StaticKV


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
        self, lm: nn.Module, weight_dtype: torch.dtype | None = None, batch_dtype: torch.dtype | None = None, batch_rows: int = 32,
        weight_rows: int = 0,
    ) -> None:
        """``weight_dtype`` (e.g. float16): also keep half-precision copies of the dense weights, used for
        single-token steps (see :func:`_low_mm`): a one-session decode step is bound by reading the weights.
        ``torch.int8``: int8 copies with one scale per output channel (see :func:`_int8_rows`), a quarter of
        the float32 bytes; CPU only.
        ``weight_rows``: forwards of up to this many rows use the ``weight_dtype`` copies (0: one row, or
        :data:`INT8_ROWS` for int8, whose kernel stays bound by the weights' bytes over a few rows).
        ``batch_dtype`` (bfloat16): copies for forwards of ``batch_rows`` rows or more, which are bound by
        arithmetic, 2-3x faster in bf16 on a CPU with native bf16 dot products."""
        self.lm = lm
        self.core = lm.model
        self.layers = []
        model_dtype = lm.get_input_embeddings().weight.dtype
        self.weight_dtype = None if weight_dtype in (None, model_dtype) else weight_dtype
        self.batch_dtype = None if batch_dtype in (None, model_dtype) else batch_dtype
        self.weight_rows = weight_rows or (INT8_ROWS if self.weight_dtype == torch.int8 else 1)
        self.batch_rows = max(self.weight_rows + 1, batch_rows)  # fewer rows are weight_dtype's

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

        def copy(w: torch.Tensor, b: torch.Tensor | None, dtype: torch.dtype | None) -> tuple:
            """(weight, bias, per-channel scale or None): what :func:`_low_mm` multiplies by."""
            if dtype == torch.int8:
                wq, scale = _int8_rows(w)
                return wq, b, scale
            return low(w, dtype), low(b, dtype), None

        def copies(ws: dict[str, tuple[torch.Tensor, torch.Tensor | None]], dtype: torch.dtype | None) -> dict | None:
            return None if dtype is None else {k: copy(w, b, dtype) for k, (w, b) in ws.items()}

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
        self.head_low = None if self.weight_dtype is None else copy(lm.lm_head.weight, lm.lm_head.bias, self.weight_dtype)
        self.head_big = None if self.batch_dtype is None else copy(lm.lm_head.weight, lm.lm_head.bias, self.batch_dtype)
        first = self.layers[0]
        self.kv_heads = first["kv"] // first["hd"]
        self.head_dim = first["hd"]
        # rotary: a cos/sin table by position for the plain variants (the same numbers the model's
        # rotary module computes); scaled variants that depend on the length use the module itself
        rot = self.core.rotary_emb
        self._table = getattr(rot, "rope_type", None) in ("default", "linear") and hasattr(rot, "inv_freq")
        self._cos = self._sin = None
        self._decode = None  # _decode_fn(self), made on first use
        self.graphs = False  # CUDA graphs for single-token steps (engine.cuda_graphs; set by the engine on CUDA)
        self._compiled = None  # compile_decode()'s compiled _decode_fn
        self._pools: dict[tuple, KVPool] = {}  # session caches by (capacity, dtype, device): see new_kv
        self.batched_forwards = 0  # forwards of two or more sessions (metrics)
        self.pooled_rounds = 0  # ... of which some attention ran over pool blocks (tests, metrics)

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
            with torch.inference_mode(False):  # normal tensors: see _normal
                cos, sin = self.core.rotary_emb(like.unsqueeze(0), torch.arange(m, device=like.device).unsqueeze(0))
                self._cos, self._sin = cos[0].unsqueeze(1), _fold(sin[0]).unsqueeze(1)
        if pos is None:
            return self._cos[start : start + n], self._sin[start : start + n]
        return self._cos[pos], self._sin[pos]

    def new_kv(self, max_tokens: int, device: torch.device, dtype: torch.dtype, pooled: bool = True) -> StaticKV:
        """A session's cache for this backbone (see :class:`StaticKV` for the sizing): a slot of this path's
        :class:`KVPool` for its shape, so that decode rounds can attend over many sessions in one call."""
        pool = None
        if pooled and max_tokens <= PREALLOCATE_MAX:
            key = (max_tokens, dtype, torch.device(device))
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = KVPool(len(self.layers), self.kv_heads, self.head_dim, max_tokens, dtype, device)
        return StaticKV(len(self.layers), self.kv_heads, self.head_dim, max_tokens, dtype, device, pool=pool)

    def compile_decode(self, kv_dtype: torch.dtype | None = None) -> float:
        """Compile the single-token decode step (:meth:`_decode_one`) with inductor and run it once on a
        scratch cache, so the first session does not wait for the compile; returns the seconds it took.

        Why: a tiny model's decode step costs its ~100 ops' dispatch as much as their arithmetic; inductor
        fuses the norms, rotary and residual adds into a few C++ kernels (the C++ wrapper also drops
        the Python launcher): 1.57 against 1.70 ms a step at 100 positions, 2.51 against 2.94 at 1,500
        (``benchmarks/decode_step.py --compile-decode``). Positions and the cache's capacity are symbolic
        (``dynamic=True``), so a growing session does not recompile.
        """
        import time

        t0 = time.perf_counter()
        self._compiled = torch.compile(_decode_fn(self), dynamic=True, fullgraph=True, options={"cpp_wrapper": True})
        w = self.lm.get_input_embeddings().weight
        dtype = kv_dtype or w.dtype
        kv = self.new_kv(64, w.device, dtype, pooled=False)
        # no "duck" sizing while it compiles: sizes that happen to be equal at the first call (a rotary slice's
        # offset and a weight's width) would otherwise become guards that a later position breaks; called
        # as the engine calls it, in inference mode on normal tensors (see _normal)
        x = torch.zeros(1, w.shape[1], dtype=w.dtype, device=w.device)
        with _duck_off(), torch.inference_mode():
            # a step inside the cache and one that fills it (its keys' slice is then the whole, contiguous
            # buffer: a second graph); positions 0 and 1 would be specialised, but decode steps come later
            for start in (8, 9, kv.capacity - 1):
                self.forward([Feed(x, kv, start)])
        return time.perf_counter() - t0

    def _decode_one(
        self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, ks: list[torch.Tensor], vs: list[torch.Tensor], start: int
    ) -> torch.Tensor:
        """One token of one session, [1, H] at position ``start`` -> its logits [V]; writes its keys and
        values into the session's per-layer buffers ``ks`` / ``vs``. The same function as :meth:`forward`
        on one single-token feed, without its branches for batches and prefills (see :func:`_decode_fn`)."""
        if self._decode is None:
            self._decode = _decode_fn(self)
        return self._decode(h, cos, sin, ks, vs, start)

    def _with_graphs(self, feeds: Sequence[Feed], sizes: list[int]) -> list[torch.Tensor | None]:
        """Single-token feeds replay their session's captured step (:mod:`lws_core.engine.cuda_graph`), one
        launch each; the others (prefills, no-logits feeds) take the batched forward."""
        from lws_core.engine.cuda_graph import GraphStep

        out: list[torch.Tensor | None] = [None] * len(feeds)
        rest = [i for i, (f, n) in enumerate(zip(feeds, sizes, strict=True)) if not (n == 1 and f.want_logits)]
        if rest:
            for i, lg in zip(rest, self.forward([feeds[i] for i in rest]), strict=True):
                out[i] = lg
        for i, (f, n) in enumerate(zip(feeds, sizes, strict=True)):
            if n != 1 or not f.want_logits:
                continue
            f.kv.length = f.start
            f.kv.reserve(1)
            self._rotary(None, f.start, 1, f.embeds)  # grows the table first, if this position needs it
            g = f.kv.graph
            if g is None or not g.fits(f.kv, self._cos):
                g = f.kv.graph = GraphStep(self, f.kv, f.embeds, f.start)
            out[i] = g.run(f.embeds, f.start)
            f.kv.length = f.start + 1
            f.kv.wrote(f.start + 1)
        return out

    @staticmethod
    def _attend(L: dict, i: int, kv: StaticKV, start: int, n: int, mask: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        """One session's attention in layer ``i``: store its ``n`` new keys and values at ``start`` in its own
        buffer, attend over the filled part; [n, heads * hd] in ``q``'s dtype."""
        kb, vb = kv.k[i], kv.v[i]  # [kv_heads, capacity, hd] views of the session's buffer
        kb[:, start : start + n].copy_(k.transpose(0, 1))
        vb[:, start : start + n].copy_(v.transpose(0, 1))
        qb = q.transpose(0, 1)
        if qb.dtype != kb.dtype:  # engine.kv_dtype
            qb = qb.to(kb.dtype)
        # 4-D: with 3-D inputs torch takes its slow "math" attention on CPU (measured 290 µs vs ~40)
        o = F.scaled_dot_product_attention(
            qb.unsqueeze(0), kb[None, :, : start + n], vb[None, :, : start + n], attn_mask=mask,
            scale=L["scale"], enable_gqa=L["gqa"],
        )
        o = o[0].transpose(0, 1).reshape(n, L["q"])
        return o if o.dtype == q.dtype else o.to(q.dtype)

    @staticmethod
    def _attend_block(L: dict, i: int, g: _BlockGroup, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Single new tokens of sessions sharing a pool block, in layer ``i``: their keys and values stored in
        their slots with one indexed write each, and one attention call over the block's slots ``lo:hi``
        (queries of the slots not in the round are zeros, their outputs dropped; each row is masked to its
        own session's filled positions, so sessions never see each other). [B, heads * hd]."""
        kc, vc = g.block[i, 0, g.lo : g.hi], g.block[i, 1, g.lo : g.hi]  # [span, kv_heads, capacity, hd]
        kc[g.rel, :, g.pos] = k[g.rows].to(kc.dtype)
        vc[g.rel, :, g.pos] = v[g.rows].to(vc.dtype)
        qb = torch.zeros(g.hi - g.lo, q.shape[1], 1, q.shape[2], dtype=kc.dtype, device=kc.device)
        qb[g.rel, :, 0] = q[g.rows].to(kc.dtype)
        o = F.scaled_dot_product_attention(
            qb, kc[:, :, : g.lmax], vc[:, :, : g.lmax], attn_mask=g.mask, scale=L["scale"], enable_gqa=L["gqa"]
        )
        return o[g.rel, :, 0].reshape(len(g.rows), L["q"])

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
        if self.graphs and any(n == 1 and f.want_logits for f, n in zip(feeds, sizes, strict=True)):
            return self._with_graphs(feeds, sizes)
        if sizes == [1] and feeds[0].want_logits:  # a decode step: the fixed single-token graph
            f = feeds[0]
            cos, sin = self._rotary(None, f.start, 1, f.embeds)
            if self._compiled is None:
                logits = self._decode_one(f.embeds, cos, sin, f.kv.k, f.kv.v, f.start)
            else:
                logits = self._compiled(_normal(f.embeds), cos, sin, f.kv.k, f.kv.v, f.start)
            f.kv.length = f.start + 1
            f.kv.wrote(f.start + 1)
            return [logits]
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
        groups, loose = ([], rows) if single else _block_groups(feeds, sizes, rows, device)
        self.batched_forwards += not single
        self.pooled_rounds += bool(groups)
        few_rows = t <= self.weight_rows  # a single-token step (or a few rows): the weight_dtype copies, if any
        many = t >= self.batch_rows  # a big prefill or batched round: the bfloat16 copies, when there are any
        for i, L in enumerate(self.layers):
            hd, nq, nkv, heads, half = L["hd"], L["q"], L["kv"], L["heads"], L["hd"] // 2
            lw = L["low"] if few_rows else L["big"] if many else None
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
            if single:
                kv, start, a, b, mask = rows[0]
                o = self._attend(L, i, kv, start, b - a, mask, q, k, v)
            else:
                o = h.new_empty(t, nq)
                for g in groups:  # many sessions' new tokens, one call over their pool block
                    o[g.rows] = self._attend_block(L, i, g, q, k, v).to(h.dtype)
                for kv, start, a, b, mask in loose:
                    o[a:b] = self._attend(L, i, kv, start, b - a, mask, q[a:b], k[a:b], v[a:b])
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
            f.kv.wrote(f.start + n)
        want = [j for j, f in enumerate(feeds) if f.want_logits]
        result: list[torch.Tensor | None] = [None] * len(feeds)
        if want:
            last = [rows[j][3] - 1 for j in want]
            sel = h[last[0] : last[0] + 1] if len(last) == 1 else h[torch.tensor(last, device=device)]
            x = _rms(sel, self.final_norm)
            head = self.head_low if few_rows else self.head_big if many else None
            if head is not None:
                logits = _low_mm(x, *head)
            else:
                logits = F.linear(x, self.lm.lm_head.weight, self.lm.lm_head.bias)
            for row, j in enumerate(want):
                result[j] = logits[row]
        return result


@dataclass(frozen=True)
class _BlockGroup:
    """Feeds of one new token each whose caches are slots ``lo:hi`` of one pool block (see :func:`_block_groups`)."""

    block: torch.Tensor
    lo: int
    hi: int
    rows: torch.Tensor  # the feeds' token rows in the forward's activations
    rel: torch.Tensor  # their slots, minus lo
    pos: torch.Tensor  # their new tokens' positions
    lmax: int
    mask: torch.Tensor  # [span, 1, 1, lmax]: each slot's own filled positions (position 0 for slots not in the round)


# Rows up to which int8 copies serve (engine.weight_rows=0): the decode steps, one row or a few (a grammar-forced
# token is fed with the next: two or three rows), and server rounds of a few sessions' tokens; a unit's audio prefill
# (11+ rows), where the unit's state is decided, keeps the exact weights. Why not more: int8 products stay faster
# than float32 up to ~16 rows (benchmarks/weight_read.py --rows), but with int8 prefills too the stop 39 champion's
# FDB probe moved more than with int8 decode steps alone (benchmarks/results/engine.md, stop 46).
INT8_ROWS = 4
BLOCK_MIN_FEEDS = 4  # fewer feeds than this attend one by one
# A block call reads every slot of its range up to the longest context; one call per session reads only that
# session's positions but pays a call's overhead. Measured per layer on the 2-core CPU (fp32 cache, tiny preset;
# /tmp scratch of FastPath._attend against _attend_block, 32-slot blocks): a block call ~0.2 µs per slot-position,
# a session's own call ~35 µs + 0.18 µs per position. So a group attends as a block only where
# 0.2 * span * lmax <= 35 * feeds + 0.18 * positions, in positions: span * lmax <= 0.9 * positions + 175 * feeds.
BLOCK_CALL_POSITIONS = 175.0  # a per-session call's overhead, in positions of block reading
BLOCK_READ_RATIO = 0.9  # a per-session call's cost per position, against the block's per slot-position


def _block_groups(feeds: Sequence[Feed], sizes: list[int], rows: list, device: torch.device) -> tuple[list[_BlockGroup], list]:
    """Split a forward's attention into block groups and the rest (attended one session at a time).

    A group is the single-token feeds of one pool block, when there are at least ``BLOCK_MIN_FEEDS`` and the
    block call is predicted cheaper (see ``BLOCK_CALL_POSITIONS``): its one attention call reads every slot in
    the range up to the longest context, so a sparse round (a few speaking sessions among many listening
    ones) or one whose contexts differ much costs less one by one; at a few hundred positions only a nearly
    full range pays."""
    by_block: dict[int, list[int]] = {}
    for j, (f, n) in enumerate(zip(feeds, sizes, strict=True)):
        if n == 1 and f.kv.block is not None:
            by_block.setdefault(id(f.kv.block), []).append(j)
    grouped: set[int] = set()
    groups = []
    for js in by_block.values():
        if len(js) < BLOCK_MIN_FEEDS:
            continue
        slots = [feeds[j].kv.slot for j in js]
        lo, hi = min(slots), max(slots) + 1
        pos = [feeds[j].start for j in js]
        lmax = max(pos) + 1
        if (hi - lo) * lmax > BLOCK_READ_RATIO * (sum(pos) + len(js)) + BLOCK_CALL_POSITIONS * len(js):
            continue
        for j in js:  # the call reads every row up to lmax: positions never written must hold finite values
            feeds[j].kv.clean_to(lmax)
        limit = torch.zeros(hi - lo, dtype=torch.long)
        rel = torch.tensor(slots) - lo
        limit[rel] = torch.tensor(pos)
        mask = (torch.arange(lmax)[None, :] <= limit[:, None]).view(hi - lo, 1, 1, lmax)
        groups.append(_BlockGroup(
            block=feeds[js[0]].kv.block, lo=lo, hi=hi, rows=torch.tensor([rows[j][2] for j in js], device=device),
            rel=rel.to(device), pos=torch.tensor(pos, device=device), lmax=lmax, mask=mask.to(device),
        ))
        grouped.update(js)
    return groups, [r for j, r in enumerate(rows) if j not in grouped]


@dataclass(frozen=True)
class DecodePlan:
    """What a single-token step reads, as flat tuples: each layer's norms and product weights, and the sizes."""

    layers: tuple
    final_w: torch.Tensor
    head: tuple
    head_low: bool
    prod: object  # _low_mm or _mm: the same signature
    hd: int
    nq: int
    nkv: int
    heads: int
    inter: int
    scale: float
    gqa: bool
    act: object
    qk_norm: bool
    eps: float


def decode_plan(fast: FastPath) -> DecodePlan:
    """The weights of ``fast``'s single-token step, flattened (see :func:`_decode_fn` for why tuples)."""
    first = fast.layers[0]
    low = first["low"] is not None
    qk_norm = first["q_norm"] is not None
    plan = []
    for L in fast.layers:
        if low:
            ws = tuple(t for k in ("qkv", "o", "gu", "down") for t in L["low"][k])
        else:
            ws = (L["qkv"], L["qkv_bias"], None, L["o"], L["o_bias"], None, L["gu"], L["gu_bias"], None, L["down"], L["down_bias"], None)
        norms = (L["ln1"][0], L["ln2"][0], *((L["q_norm"][0], L["k_norm"][0]) if qk_norm else (None, None)))
        plan.append(norms + ws)
    head = fast.head_low if fast.head_low is not None else (fast.lm.lm_head.weight, fast.lm.lm_head.bias)
    return DecodePlan(
        layers=tuple(plan), final_w=fast.final_norm[0], head=head, head_low=fast.head_low is not None,
        prod=_low_mm if low else _mm, hd=first["hd"], nq=first["q"], nkv=first["kv"], heads=first["heads"],
        inter=first["inter"], scale=first["scale"], gqa=first["gqa"], act=first["act"], qk_norm=qk_norm, eps=first["ln1"][1],
    )


def _decode_fn(fast: FastPath):  # noqa: ANN202 - the step's signature is _decode_one's
    """The single-token step of ``fast`` as a plain function over flat tuples of its weights.

    Why a closure over tuples, not a method reading ``fast.layers``: what ``torch.compile`` captures
    is guarded at every call, and guards over tuples of tensors are cheap where guards over a list
    of dicts of tensors, ints and functions cost ~0.4 ms a step (measured: 1.73 against 1.29 ms)."""
    p = decode_plan(fast)
    hd, nq, nkv, heads, inter = p.hd, p.nq, p.nkv, p.heads, p.inter
    half, scale, gqa, act, eps = hd // 2, p.scale, p.gqa, p.act, p.eps
    plan_t, final_w, head, prod, head_low = p.layers, p.final_w, p.head, p.prod, p.head_low
    del p  # the step closes over the plain values only (what a compiled step guards)

    def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return _rms(x, (w, eps))

    def step(h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, ks: list[torch.Tensor], vs: list[torch.Tensor], start: int) -> torch.Tensor:
        for i, (ln1, ln2, qn, kn, qkv_w, qkv_b, qkv_s, o_w, o_b, o_s, gu_w, gu_b, gu_s, d_w, d_b, d_s) in enumerate(plan_t):
            qkv = prod(rms(h, ln1), qkv_w, qkv_b, qkv_s)
            v = qkv[:, nq + nkv :].view(1, -1, hd)
            if qn is None:
                qk = qkv[:, : nq + nkv].view(1, -1, hd)
            else:
                qk = torch.cat([rms(qkv[:, :nq].view(1, -1, hd), qn), rms(qkv[:, nq : nq + nkv].view(1, -1, hd), kn)], dim=1)
            qk = qk * cos + qk.roll(half, -1) * sin
            q, k = qk[:, :heads], qk[:, heads:]
            kb, vb = ks[i], vs[i]
            kb[:, start : start + 1].copy_(k.transpose(0, 1))
            vb[:, start : start + 1].copy_(v.transpose(0, 1))
            qb = q.transpose(0, 1)
            if qb.dtype != kb.dtype:
                qb = qb.to(kb.dtype)
            o = F.scaled_dot_product_attention(
                qb.unsqueeze(0), kb[None, :, : start + 1], vb[None, :, : start + 1], scale=scale, enable_gqa=gqa
            )
            o = o[0].transpose(0, 1).reshape(1, nq).to(h.dtype)
            h = h + prod(o, o_w, o_b, o_s)
            gu = prod(rms(h, ln2), gu_w, gu_b, gu_s)
            h = h + prod(act(gu[:, :inter]) * gu[:, inter:], d_w, d_b, d_s)
        x = rms(h, final_w)
        return (_low_mm(x, *head) if head_low else F.linear(x, *head))[0]

    return step


def _normal(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a normal tensor. Why: the compiled step is guarded on the kind of tensor it was compiled for,
    and over inference tensors (what the engine's inference mode makes) inductor's code measured 50 % slower
    (2.0 against 1.4 ms a step); so the step only ever sees normal ones (the cache and rotary table are made
    normal, and an input row costs a copy of one embedding)."""
    if not x.is_inference():
        return x
    with torch.inference_mode(False):
        return x.clone()


def _duck_off():  # noqa: ANN202 - a config patch context
    import torch.fx.experimental._config as fx_config

    return fx_config.patch(use_duck_shape=False)


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


def _mm(x: torch.Tensor, w_t: torch.Tensor, bias: torch.Tensor | None, scale: None = None) -> torch.Tensor:
    """x @ W (+ b) with the exact, pre-transposed weight; ``scale`` (always None) matches :func:`_low_mm`'s signature."""
    return torch.mm(x, w_t) if bias is None else torch.addmm(bias, x, w_t)


def _low_mm(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W.T (+ b) with a lower-precision [out, in] weight; the product comes back in the activations'
    dtype, so norms, rotary and attention stay as they were. With ``scale``, ``w`` is int8 (:func:`_int8_rows`)."""
    if scale is not None:
        # aten's weight-only int8 kernel (the one torchao and gpt-fast call on CPU); no library wraps it
        # without tensor subclasses, whose per-op dispatch would cost more than the product at this size.
        # Its fast path takes bfloat16 activations (float32 ones measured 10x slower)
        y = torch._weight_int8pack_mm(x.to(torch.bfloat16), w, scale).to(x.dtype)
        return y if bias is None else y + bias
    return F.linear(x.to(w.dtype), w, bias).to(x.dtype)


def _int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 copy of a [out, in] weight, one bfloat16 scale per output row: w ~ q * scale[:, None].

    Why: a one-session decode step reads every weight once, and on a CPU whose caches cannot hold the
    float32 model that read is a large part of the step; a chain of the tiny preset's 17 products measured
    0.40 ms in int8 against 0.99-1.10 in float16 and 0.74-1.65 in float32 (benchmarks/weight_read.py,
    benchmarks/results/engine.md, stop 36)."""
    w32 = w.detach().float()
    # the kernel takes the scale in bfloat16: nudged up by one bfloat16 step before rounding, so the rounded
    # scale is never below the exact one (a row's largest weight then needs no clipping), and quantized against
    # the rounded value, so every weight stays within half a step of what the kernel multiplies by
    scale = (w32.abs().amax(dim=1) / 127.0 * (1 + 2**-8)).clamp_min(1e-12).to(torch.bfloat16)
    q = torch.round(w32 / scale.float()[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
    return q, scale


def _fold(sin: torch.Tensor) -> torch.Tensor:
    """sin with its first half negated (see :meth:`FastPath._rotary`)."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)

"""A session's single-token decode step as one CUDA graph (``engine.cuda_graphs``, on CUDA only).

Why: the fused forward's decode step is ~20 small kernels per layer. On a GPU each is launched
from Python one at a time, so a 0.5B backbone's step costs what those ~500 launches cost, not
what its weights cost to read: the GPU check measured 53 ms a token on an H200 eagerly
(``benchmarks/results/gpu.md``), against ~0.3 ms for reading the bf16 weights once. A captured
graph replays every kernel with one launch.

A graph replays fixed kernels on fixed memory, so the captured step has static shapes and
addresses: the position is a device tensor (not a Python int), keys and values are written with
``index_copy_`` at that position, and attention runs over the session's whole buffer with a
mask that hides the positions not yet written. The buffer is the session's own
:class:`~lws_core.engine.kv.StaticKV` (preallocated at ``max_context_tokens``), so each session
captures its own graph on its first decode step and keeps it while the buffer stays where it is
(a window's rebuild resets the length, not the memory). Same function as
:func:`~lws_core.engine.fastpath._decode_fn`: tested against it on CPU (the static step run
eagerly) and against the eager step on CUDA (``tests/gpu``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F  # noqa: N812

from lws_core.engine.fastpath import _low_mm, _rms, decode_plan

if TYPE_CHECKING:
    from lws_core.engine.fastpath import FastPath
    from lws_core.engine.kv import StaticKV


def static_decode_fn(fast: FastPath):  # noqa: ANN201 - step(h, pos, cos_t, sin_t, ks, vs, idx) -> logits [V]
    """The single-token step with static shapes: ``pos`` a 0-d long tensor, ``cos_t``/``sin_t`` the rotary
    tables [>= capacity, 1, hd], ``idx`` = arange(capacity). Attends over the whole buffer, masked at > pos."""
    p = decode_plan(fast)
    hd, nq, nkv, heads, inter = p.hd, p.nq, p.nkv, p.heads, p.inter
    half, scale, gqa, act, eps = hd // 2, p.scale, p.gqa, p.act, p.eps
    plan_t, final_w, head, prod, head_low = p.layers, p.final_w, p.head, p.prod, p.head_low

    def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return _rms(x, (w, eps))

    def step(
        h: torch.Tensor, pos: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor,
        ks: list[torch.Tensor], vs: list[torch.Tensor], idx: torch.Tensor,
    ) -> torch.Tensor:
        at = pos.view(1)
        cos, sin = cos_t.index_select(0, at), sin_t.index_select(0, at)
        mask = (idx <= pos).view(1, 1, 1, -1)
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
            kb.index_copy_(1, at, k.transpose(0, 1).to(kb.dtype))
            vb.index_copy_(1, at, v.transpose(0, 1).to(vb.dtype))
            qb = q.transpose(0, 1).to(kb.dtype)
            o = F.scaled_dot_product_attention(qb.unsqueeze(0), kb[None], vb[None], attn_mask=mask, scale=scale, enable_gqa=gqa)
            o = o[0].transpose(0, 1).reshape(1, nq).to(h.dtype)
            h = h + prod(o, o_w, o_b, o_s)
            gu = prod(rms(h, ln2), gu_w, gu_b, gu_s)
            h = h + prod(act(gu[:, :inter]) * gu[:, inter:], d_w, d_b, d_s)
        x = rms(h, final_w)
        return (_low_mm(x, *head) if head_low else F.linear(x, *head))[0]

    return step


class GraphStep:
    """One session's captured decode step; :meth:`run` feeds one token at ``start`` and returns its logits."""

    def __init__(self, fast: FastPath, kv: StaticKV, h: torch.Tensor, start: int) -> None:
        """Capture with this step's own input (the warm-up and the capture write the same keys and values at
        ``start`` that the step itself writes next)."""
        dev = kv.buf.device
        cos_t, sin_t = fast._rotary(None, 0, kv.capacity, h)  # the whole table: later positions only index it
        self._keys = (kv.buf.data_ptr(), cos_t.data_ptr())
        with torch.inference_mode(False):
            # never-written positions are masked, but masked garbage can still be NaN, and NaN * 0 is NaN
            kv.buf[:, :, :, start:].zero_()
            self.h = h.detach().reshape(1, -1).clone()
            self.pos = torch.tensor(start, dtype=torch.long, device=dev)
            idx = torch.arange(kv.capacity, device=dev)
        step = static_decode_fn(fast)
        # held for the graph's lifetime: a replay reads these addresses, and a tensor freed after the capture
        # (the mask's index, say) would hand its memory to whatever the allocator places there next
        self._args = args = (self.h, self.pos, cos_t, sin_t, kv.k, kv.v, idx)
        side = torch.cuda.Stream(dev)  # warm up off the default stream, as CUDA graph capture asks
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            step(*args)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = step(*args)

    def fits(self, kv: StaticKV, cos_table: torch.Tensor | None) -> bool:
        """Whether the captured addresses are still the session's buffer and the rotary table."""
        return cos_table is not None and self._keys == (kv.buf.data_ptr(), cos_table.data_ptr())

    def run(self, h: torch.Tensor, start: int) -> torch.Tensor:
        self.h.copy_(h.reshape(1, -1))
        self.pos.fill_(start)
        self.graph.replay()
        return self.out.clone()  # the graph's output buffer is overwritten by the next replay

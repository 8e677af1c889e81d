"""One session's KV cache for the fused forward: one preallocated buffer, written in place.

Why not transformers' ``StaticCache``: it is built for one batch that advances in
lockstep (one ``cache_position`` for every row). Streaming sessions advance
independently — each has its own length, its own sliding-window rebuilds, and joins
and leaves a server's batch at any unit — so each owns its buffer, and the batched
forward (:mod:`lws_core.engine.fastpath`) writes every row's new keys into its own
session's buffer at that session's positions and attends over that buffer's filled
part. Rows share the weight reads (the dense products run once for all of them);
they never share cache memory, so one session cannot see another's context.

The buffer holds ``capacity`` positions for every layer: ``[layers, 2, kv_heads,
capacity, head_dim]``. The session's window policy keeps the context under
``engine.max_context_tokens``, so with the default (2048) the buffer is allocated
once, at full size, and never moves. A very large bound (benchmarks switch the window
off with 10^6) would reserve gigabytes up front, so past ``PREALLOCATE_MAX`` the
buffer starts small and doubles when full (amortised O(1) per token, as before).
"""

from __future__ import annotations

import torch

PREALLOCATE_MAX = 8192
INITIAL_GROWABLE = 1024


class StaticKV:
    """Keys and values of every layer of one session, in one preallocated buffer."""

    def __init__(
        self,
        layers: int,
        kv_heads: int,
        head_dim: int,
        max_tokens: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.max_tokens = max_tokens
        self.shape = (layers, 2, kv_heads, head_dim)
        cap = max_tokens if max_tokens <= PREALLOCATE_MAX else INITIAL_GROWABLE
        # normal tensors (not inference tensors) wherever the cache is made or grown, even inside the engine's
        # inference mode: a compiled decode step (engine.compile_decode) guards on the kind of tensor, and its
        # in-place writes into an inference tensor measured 50 % slower (2.0 against 1.3 ms a step)
        with torch.inference_mode(False):
            self.buf = torch.empty((layers, 2, kv_heads, cap, head_dim), dtype=dtype, device=device)
        self._views()
        self.length = 0
        self.allocations = 1
        self.graph = None  # the session's captured decode step (lws_core.engine.cuda_graph), on CUDA

    def _views(self) -> None:
        """Per-layer ``[kv_heads, capacity, head_dim]`` views of keys and values (made once, not per token)."""
        self.k = [self.buf[i, 0] for i in range(self.buf.shape[0])]
        self.v = [self.buf[i, 1] for i in range(self.buf.shape[0])]

    @property
    def capacity(self) -> int:
        return self.buf.shape[3]

    def reset(self) -> None:
        """Forget the context (the window's rebuild refills it from position 0); keeps the memory."""
        self.length = 0

    def reserve(self, n: int) -> None:
        """Make room for ``n`` more positions (doubling, up to at least what is needed)."""
        need = self.length + n
        if need <= self.capacity:
            return
        cap = max(need, 2 * self.capacity)
        with torch.inference_mode(False):
            new = self.buf.new_empty((*self.buf.shape[:3], cap, self.buf.shape[4]))
            new[:, :, :, : self.length].copy_(self.buf[:, :, :, : self.length])
        self.buf = new
        self._views()
        self.allocations += 1

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store ``k``/``v`` ([kv_heads, n, head_dim]) at positions ``start .. start+n-1`` of ``layer``."""
        n = k.shape[1]
        self.buf[layer, 0, :, start : start + n].copy_(k)
        self.buf[layer, 1, :, start : start + n].copy_(v)

    def view(self, layer: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` positions of ``layer``: views ``[1, kv_heads, n, head_dim]`` (no copy)."""
        b = self.buf[layer, :, :, :n]
        return b[0].unsqueeze(0), b[1].unsqueeze(0)

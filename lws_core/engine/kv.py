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
``engine.max_context_tokens``, so with the default (1024) the buffer is allocated
once, at full size, and never moves. A very large bound (benchmarks switch the window
off with 10^6) would reserve gigabytes up front, so past ``PREALLOCATE_MAX`` the
buffer starts small and doubles when full (amortised O(1) per token, as before).

Preallocated buffers are *slots* of shared blocks (:class:`KVPool`): a block holds
``BLOCK_SLOTS`` sessions' buffers side by side, ``[layers, 2, slots, kv_heads, capacity,
head_dim]``. A session still owns its slot alone, but a server's decode round, one new
token for each of many sessions, can then attend for all of them in one call over the
block instead of one call per session and layer (:meth:`FastPath.forward
<lws_core.engine.fastpath.FastPath.forward>`): on the 2-core CPU the per-session calls'
overhead was as large as the dense products of a 64-session round.
"""

from __future__ import annotations

import threading
import weakref

import torch

PREALLOCATE_MAX = 8192
INITIAL_GROWABLE = 1024
BLOCK_SLOTS = 32
BLOCK_BYTES = 1 << 30  # a block holds at most this much (at least one slot): a big backbone's slot is 0.3 GB


class KVPool:
    """Blocks of preallocated session buffers of one shape, handed out slot by slot (thread-safe).

    A block is allocated when every slot of the others is taken, and kept (a server's load comes
    back). Slots are not zeroed when handed out (16 MB of the tiny preset's slot took 6 ms to clear, and
    would make every page resident): a block call zeroes what it reads beyond a slot's written
    positions (:meth:`StaticKV.clean_to`), since masked weights are 0 but 0 * NaN still poisons the sum."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, capacity: int, dtype: torch.dtype, device: torch.device,
                 block_slots: int = BLOCK_SLOTS) -> None:
        slot_bytes = layers * 2 * kv_heads * capacity * head_dim * torch.empty(0, dtype=dtype).element_size()
        block_slots = max(1, min(block_slots, BLOCK_BYTES // slot_bytes))
        self.shape = (layers, 2, block_slots, kv_heads, capacity, head_dim)
        self.dtype, self.device = dtype, device
        self.blocks: list[torch.Tensor] = []
        self._free: list[list[int]] = []
        self._lock = threading.Lock()

    def acquire(self) -> tuple[int, int]:
        """A free (block, slot); its contents are whatever the block held (see :meth:`StaticKV.clean_to`)."""
        with self._lock:
            b = next((i for i, free in enumerate(self._free) if free), None)
            if b is None:
                with torch.inference_mode(False):  # normal tensors (see StaticKV)
                    self.blocks.append(torch.empty(self.shape, dtype=self.dtype, device=self.device))
                self._free.append(list(range(self.shape[2] - 1, -1, -1)))  # lowest slots first: dense rounds
                b = len(self.blocks) - 1
            slot = self._free[b].pop()
        return b, slot

    def release(self, block: int, slot: int) -> None:
        with self._lock:
            self._free[block].append(slot)
            self._free[block].sort(reverse=True)

    @property
    def in_use(self) -> int:
        with self._lock:
            return sum(self.shape[2] - len(f) for f in self._free)


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
        pool: KVPool | None = None,
    ) -> None:
        """``pool``: take a slot of its blocks (its shape must match) instead of a buffer of one's own."""
        self.max_tokens = max_tokens
        self.shape = (layers, 2, kv_heads, head_dim)
        cap = max_tokens if max_tokens <= PREALLOCATE_MAX else INITIAL_GROWABLE
        self.block: torch.Tensor | None = None  # the pool block this buffer is a slot of (None: its own)
        self.slot = -1
        self._release = None
        if pool is not None and cap <= PREALLOCATE_MAX:
            if pool.shape != (layers, 2, pool.shape[2], kv_heads, cap, head_dim) or pool.dtype != dtype:
                raise ValueError(f"StaticKV: pool of shape {pool.shape} / {pool.dtype} does not fit this cache")
            b, self.slot = pool.acquire()
            self.block = pool.blocks[b]
            self.buf = self.block[:, :, self.slot]
            self._release = weakref.finalize(self, pool.release, b, self.slot)  # on close, growth or garbage collection
        else:
            # normal tensors (not inference tensors) wherever the cache is made or grown, even inside the engine's
            # inference mode: a compiled decode step (engine.compile_decode) guards on the kind of tensor, and its
            # in-place writes into an inference tensor measured 50 % slower (2.0 against 1.3 ms a step)
            with torch.inference_mode(False):
                self.buf = torch.empty((layers, 2, kv_heads, cap, head_dim), dtype=dtype, device=device)
        self._views()
        self.length = 0
        self.clean = 0  # positions below this hold finite values (written, or zeroed by clean_to)
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
            new = torch.empty((*self.buf.shape[:3], cap, self.buf.shape[4]), dtype=self.buf.dtype, device=self.buf.device)
            new[:, :, :, : self.length].copy_(self.buf[:, :, :, : self.length])
        self.buf = new
        self._views()
        self.allocations += 1
        self.free_slot()  # the buffer is its own now

    def clean_to(self, n: int) -> None:
        """Make positions ``clean .. n-1`` finite (zeros) in every layer, if a batched call will read them masked.

        Why: a slot's memory is whatever it held (a fresh block's, or a closed session's); a session only writes
        positions in order from 0 (window rebuilds rewrite from 0), so everything below ``clean`` is finite."""
        if n > self.clean:
            with torch.inference_mode(False):
                self.buf[:, :, :, self.clean : n].zero_()
            self.clean = n

    def wrote(self, end: int) -> None:
        """Positions up to ``end`` were written (sequentially, from at most ``clean``)."""
        if end > self.clean:
            self.clean = end

    def free_slot(self) -> None:
        """Give the pool slot back (the session is closed, or its buffer outgrew the slot); idempotent."""
        if self._release is not None:
            self._release()
            self._release, self.block, self.slot = None, None, -1

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store ``k``/``v`` ([kv_heads, n, head_dim]) at positions ``start .. start+n-1`` of ``layer``."""
        n = k.shape[1]
        self.buf[layer, 0, :, start : start + n].copy_(k)
        self.buf[layer, 1, :, start : start + n].copy_(v)
        self.wrote(start + n)

    def view(self, layer: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` positions of ``layer``: views ``[1, kv_heads, n, head_dim]`` (no copy)."""
        b = self.buf[layer, :, :, :n]
        return b[0].unsqueeze(0), b[1].unsqueeze(0)

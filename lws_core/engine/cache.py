"""A DynamicCache whose layers append in amortised O(1).

transformers' ``DynamicLayer.update`` grows the cache with ``torch.cat``, which
copies the whole cache at every decoded token: per-token cost grows with the
context (measured here: the cat was over half of a tiny model's decode step at
300 tokens). A streaming session decodes forever on one cache, so the layers
below keep a preallocated buffer that doubles when full and expose views of its
filled part. It is still a ``DynamicCache`` (HF models, masks and
``get_seq_length`` work unchanged); only the storage differs.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_CAPACITY = 256


class BufferedLayer(DynamicLayer):
    """``DynamicLayer`` with capacity-doubling storage; ``keys``/``values`` are views of the filled part."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._len = 0
        self.allocations = 0

    def _grow(self, need: int, like_k: torch.Tensor, like_v: torch.Tensor) -> None:
        cap = max(need, MIN_CAPACITY, 2 * (0 if self._kbuf is None else self._kbuf.shape[-2]))
        kb = like_k.new_empty((*like_k.shape[:-2], cap, like_k.shape[-1]))
        vb = like_v.new_empty((*like_v.shape[:-2], cap, like_v.shape[-1]))
        if self._kbuf is not None and self._len:
            kb[..., : self._len, :].copy_(self._kbuf[..., : self._len, :])
            vb[..., : self._len, :].copy_(self._vbuf[..., : self._len, :])
        self._kbuf, self._vbuf = kb, vb
        self.allocations += 1

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN002, ANN003
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        need = self._len + n
        if self._kbuf is None or need > self._kbuf.shape[-2]:
            self._grow(need, key_states, value_states)
        self._kbuf[..., self._len : need, :].copy_(key_states)
        self._vbuf[..., self._len : need, :].copy_(value_states)
        self._len = need
        self.keys = self._kbuf[..., :need, :]
        self.values = self._vbuf[..., :need, :]
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.is_initialized and self.keys is not None:
            self._len = self.keys.shape[-2]

    def reset(self) -> None:
        super().reset()
        self._kbuf = self._vbuf = None
        self._len = 0


def kept_cache() -> DynamicCache:
    """A ``DynamicCache`` (lazily one layer per model layer) made of :class:`BufferedLayer`."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = BufferedLayer
    return cache

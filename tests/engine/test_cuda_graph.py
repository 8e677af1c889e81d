"""The CUDA-graph decode step's function (``engine.cuda_graphs``): static shapes, the position as a
tensor, attention masked over the whole preallocated buffer. The capture itself needs CUDA
(``tests/gpu/test_gpu_paths.py``); here the same static step runs eagerly on CPU and must equal the
fused forward's own single-token step, logits and cache writes, for every supported architecture."""

from __future__ import annotations

import pytest
import torch

from lws_core.engine.cuda_graph import static_decode_fn
from lws_core.engine.fastpath import FastPath, Feed
from tests.engine.test_batched import _tiny_lm


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_static_step_equals_the_fused_decode_step(arch):
    lm = _tiny_lm(arch)
    fast = FastPath(lm)
    cpu = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    stream = torch.randn(30, 64, generator=gen)
    a, b = fast.new_kv(64, cpu, torch.float32), fast.new_kv(64, cpu, torch.float32)
    b.buf.fill_(float("nan"))  # never-written positions must not leak into attention...
    step = static_decode_fn(fast)
    with torch.inference_mode():
        for kv in (a, b):
            fast.forward([Feed(stream[:20], kv, 0, want_logits=False)])
        b.buf[:, :, :, 20:].zero_()  # ...which the graph's capture ensures by zeroing them (NaN * 0 is NaN)
        cos_t, sin_t = fast._rotary(None, 0, b.capacity, stream)
        idx = torch.arange(b.capacity)
        for p in range(20, 30):
            want = fast.forward([Feed(stream[p : p + 1], a, p)])[0]
            got = step(stream[p : p + 1], torch.tensor(p), cos_t, sin_t, b.k, b.v, idx)
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(b.buf[:, :, :, :30], a.buf[:, :, :, :30])
        assert not b.buf[:, :, :, 30:].any()  # nothing written past the last position fed


def test_graphs_stay_off_on_cpu(engine):
    """``engine.cuda_graphs`` (default on) only acts on CUDA: a CPU engine decodes eagerly."""
    assert engine.config.cuda_graphs and engine.fast_path is not None and not engine.fast_path.graphs

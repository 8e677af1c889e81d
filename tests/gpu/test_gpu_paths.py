"""Real GPU paths (marked ``gpu``: skipped cleanly without CUDA, see tests/conftest.py).

Run on a CUDA machine with ``python -m pytest -q -m gpu tests/gpu`` (about a minute on an
H100/H200, most of it imports and DeepSpeed start-up). They check what a CPU machine cannot:
the engine on CUDA decides what the CPU engine decides, a DeepSpeed ZeRO-2 bf16 step trains,
and the GPU check's Python parts run on the device at smoke sizes.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

pytestmark = pytest.mark.gpu


def _units(engine, audio: np.ndarray) -> tuple[list[tuple[str, str, str]], list]:  # noqa: ANN001
    with engine.session(trace=True) as s:
        outs = [s.step(block) for block in engine.iter_units(audio)]
        logits = list(s.trace_logits)
    return [(u.state, u.write, u.say) for u in outs], logits


def test_engine_cuda_matches_cpu_greedy() -> None:
    """fp32 on both sides, TF32 off: the unit-0 prefill logits agree to 1e-3 and greedy decisions agree.

    The CPU engine uses its fused fast path, CUDA the HF forward: this also checks the two against each other.
    """
    from gpu_common import build_model
    from gpu_engine import test_audio

    from lws_core.engine import Engine, EngineConfig

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = build_model("tiny", seed=1).eval()
    on_cuda = copy.deepcopy(model).to("cuda")  # copied before the CPU engine sets up its fast path
    cfg = EngineConfig(tts="none", temperature=0.0)
    cpu = Engine(model, cfg)
    cuda = Engine(on_cuda, cfg)
    audio = test_audio(4.0, "none")
    a, la = _units(cpu, audio)
    b, lb = _units(cuda, audio)
    pos_a, first_a = la[0]
    pos_b, first_b = lb[0]
    assert pos_a == pos_b
    diff = (first_a.cpu() - first_b.cpu()).abs().max().item()
    assert diff < 1e-3 * max(1.0, first_a.abs().max().item()), diff
    assert a[0] == b[0]  # the first unit: same state, same text
    same = sum(x == y for x, y in zip(a, b, strict=True))
    assert same >= len(a) - 1, (a, b)  # a near-tie may flip one later token on a random model, no more


def test_deepspeed_zero2_bf16_step_on_cuda(tmp_path: Path) -> None:
    """A fresh process (DeepSpeed's process group and rank variables stay out of pytest's)."""
    out = tmp_path / "train.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--gpu", "--smoke",
                        "--device", "cuda", "--steps", "4", "--warmup", "1", "--out", str(tmp_path / "run"),
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["device"] == "cuda" and r["backend"] == "deepspeed" and r["zero_stage"] == 2
    assert r["precision"] == "bf16" and r["loss_finite"] and len(r["losses"]) >= 3
    assert r["tokens_per_s"] > 0 and r["peak_memory_gib"] > 0
    if r["peak_bf16_dense_tflops"]:
        assert 0 < r["mfu"] < 1


def test_gpu_engine_smoke_on_cuda(tmp_path: Path) -> None:
    import gpu_engine

    rtf = gpu_engine.main(["rtf", "--smoke", "--device", "cuda", "--json", str(tmp_path / "rtf.json")])
    cap = gpu_engine.main(["capacity", "--smoke", "--device", "cuda", "--json", str(tmp_path / "cap.json")])
    assert rtf["device"] == "cuda" and rtf["gpu"] and rtf["dtype"] == "bf16"
    assert rtf["units"] == 3 and rtf["decode_ms_per_token_p50"] > 0 and rtf["rtf_p95"] > 0
    assert [r["sessions"] for r in cap["series"]] == [1, 2]
    assert json.loads((tmp_path / "cap.json").read_text())["path"] in ("step_many", "loop")


def test_cuda_graph_decode_equals_the_eager_step_alone_and_batched() -> None:
    """``engine.cuda_graphs``: each session's captured step gives what the eager fused step gives (fp32, TF32
    off), alone and in ``Engine.step_many``, and a session captures once, not per token."""
    from gpu_common import build_model
    from gpu_engine import test_audio

    from lws_core.engine import Engine, EngineConfig

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = build_model("tiny", seed=1).eval().to("cuda")
    graphs = Engine(model, EngineConfig(tts="none", temperature=0.0, cuda_graphs=True))
    eager = Engine(model, EngineConfig(tts="none", temperature=0.0, cuda_graphs=False))
    assert graphs.fast_path.graphs and not eager.fast_path.graphs
    audio = test_audio(4.0, "none")
    a, la = _units(graphs, audio)
    b, lb = _units(eager, audio)
    assert len(la) == len(lb) and len(la) > 10
    for (pa, xa), (pb, xb) in zip(la, lb, strict=True):
        assert pa == pb
        torch.testing.assert_close(xa, xb, atol=1e-3, rtol=1e-3)
    assert a == b
    captured = []
    orig = __import__("lws_core.engine.cuda_graph", fromlist=["GraphStep"]).GraphStep.__init__

    def counting(self, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        captured.append(1)
        return orig(self, *args, **kw)

    from lws_core.engine import cuda_graph

    cuda_graph.GraphStep.__init__ = counting
    try:
        blocks = list(graphs.iter_units(audio))
        s1, s2 = graphs.session(), graphs.session()
        alone = eager.session()
        try:
            for u, block in enumerate(blocks):
                many = graphs.step_many([(s1, block), (s2, blocks[(u + 1) % len(blocks)])])
                one = alone.step(block)
                assert (many[0].state, many[0].write, many[0].say) == (one.state, one.write, one.say)
        finally:
            for s in (s1, s2, alone):
                s.close()
    finally:
        cuda_graph.GraphStep.__init__ = orig
    assert 1 <= len(captured) <= 2 * 2  # once per session (twice if a window slide moved a buffer), not per token

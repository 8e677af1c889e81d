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

"""The GPU check's Python parts at toy sizes on CPU, and the shell script's syntax and no-CUDA exit.

These run on every machine, so the script a lent GPU runs has already been exercised:
the same functions, the same JSON fields, only the sizes and the device differ.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))

ENGINE_FIELDS = {"rtf_p50", "rtf_p95", "decode_ms_per_token_p50", "decode_ms_per_token_p95", "prefill_ms_p50",
                 "decode_forwards_per_unit_p50", "backbone", "dtype", "device", "unit_s", "weights"}
CAPACITY_FIELDS = {"path", "capacity_sessions", "series", "units_per_n", "max_sessions_tried"}
TRAIN_FIELDS = {"tokens_per_s", "mfu", "mfu_with_encoder", "mfu_formula", "model_flops_per_token", "loss_finite",
                "lm_matmul_parameters", "seq_len", "backend", "precision", "architecture"}


def test_python_parts_smoke_on_cpu(tmp_path: Path) -> None:
    import gpu_engine
    import train_throughput

    rtf = gpu_engine.main(["rtf", "--smoke", "--device", "cpu", "--json", str(tmp_path / "rtf.json")])
    fast = gpu_engine.main(["rtf", "--smoke", "--device", "cpu", "--engine-path", "fast"])
    cap = gpu_engine.main(["capacity", "--smoke", "--device", "cpu", "--json", str(tmp_path / "cap.json")])
    tr = train_throughput.main(["--gpu", "--smoke", "--device", "cpu", "--backend", "torch",
                                "--json", str(tmp_path / "train.json")])
    for name, fields in (("rtf", ENGINE_FIELDS), ("cap", CAPACITY_FIELDS), ("train", TRAIN_FIELDS)):
        on_disk = json.loads((tmp_path / f"{name}.json").read_text())
        assert fields <= set(on_disk), (name, fields - set(on_disk))
    assert rtf["device"] == "cpu" and rtf["gpu"] is None and rtf["architecture"] == "Qwen3ForCausalLM"
    assert rtf["units"] == 3 and 0 < rtf["rtf_p50"] <= rtf["rtf_p95"]
    # the forward hook saw the decode phase: random weights fill the smoke budgets (4 write + 2 say tokens)
    assert rtf["decode_forwards_per_unit_p50"] >= 6 and rtf["decode_ms_per_token_p50"] > 0
    # the fused path's forwards are counted on FastPath.forward: the same schedule, so the same count
    assert fast["engine_path"] == "fast" and rtf["engine_path"] == "hf"
    assert fast["decode_forwards_per_unit_p50"] == rtf["decode_forwards_per_unit_p50"]
    has_many = callable(getattr(__import__("lws_core.engine", fromlist=["Engine"]).Engine, "step_many", None))
    assert cap["path"] == ("step_many" if has_many else "loop")
    assert [r["sessions"] for r in cap["series"]] == [1, 2]  # smoke tries every N
    assert all(r["rounds"] == 2 and r["round_s_p95"] > 0 for r in cap["series"])
    assert tr["loss_finite"] and tr["tokens_per_s"] > 0 and tr["measured_steps"] == 2
    assert tr["mfu"] is None  # no GPU peak on CPU: no MFU is claimed
    prof = train_throughput.main(["--gpu", "--smoke", "--device", "cpu", "--backend", "torch", "--profile", "1"])
    assert prof["measured_steps"] == 1 and prof["profile_steps"] == 1  # the profiled step is not timed
    assert prof["profile_wall_ms_per_step"] > 0 and prof["profile_host_ops_per_step"] > 100
    assert prof["profile_top_host"][0]["self_ms_per_step"] > 0 and prof["profile_device_busy_ms_per_step"] == 0
    assert tr["lm_matmul_parameters"] > tr["lm_non_embedding_parameters"]  # tied head counted once


def test_gpu_check_sh_syntax() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-S", "error", str(SCRIPT)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA exit")
def test_gpu_check_without_cuda_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "LWS_PYTHON": sys.executable}
    p = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "torch.cuda is not available" in p.stderr and "no GPU figures were measured" in p.stderr
    assert not (tmp_path / "out" / "summary.json").exists()  # nothing measured, nothing reported

"""Training with DeepSpeed on CPU, per-channel loss reporting, SIGKILL + resume, clear errors before training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lws_core.errors import ConfigError, InputError, SchemaMismatchError
from lws_core.train import HistoryCallback, train
from lws_core.train.trainer import checkpoint_dir_for


def test_deepspeed_zero2_cpu_trains_and_reports_channels(tiny_cfg, tiny_dataset, tmp_path):
    cfg = tiny_cfg.with_overrides({"train.backend": "deepspeed", "train.zero_stage": 2, "train.max_steps": 10})
    h = HistoryCallback()
    s = train(cfg, tiny_dataset, tmp_path / "m", callbacks=[h], progress=False)
    assert s.backend == "deepspeed" and s.zero_stage == 2 and s.steps == 10
    logged = [m for _, m in h.history if "loss" in m]
    assert len(logged) == 5
    for m in logged:
        assert {"loss_state", "loss_write_listen", "loss_write_respond", "loss_say"} <= set(m)
    assert logged[-1]["loss"] < logged[0]["loss"]  # it learns something in 10 steps
    assert h.summary is not None and set(h.summary.val_losses) >= {"state", "say", "total"}
    saved = json.loads((tmp_path / "m" / "train_summary.json").read_text())
    assert saved["steps"] == 10
    assert not checkpoint_dir_for(tmp_path / "m").exists()  # checkpoints cleaned after success


_RUNNER = """
import sys
from lws_core.config import LWSConfig
from lws_core.train import train
cfg = LWSConfig().with_overrides({"train.backend": "torch", "train.max_steps": 12, "train.save_steps": 4,
    "train.batch_size": 4, "train.logging_steps": 4, "train.num_threads": 1})
train(cfg, sys.argv[1], sys.argv[2], progress=False)
"""


def _run(data: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", CUBLAS_WORKSPACE_CONFIG=":4096:8")
    return subprocess.Popen([sys.executable, "-c", _RUNNER, str(data), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _weights(d: Path) -> dict[str, torch.Tensor]:
    from lws_core.model import LWSModel

    m = LWSModel.load(d)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_sigkill_then_resume_reaches_the_same_weights(tiny_dataset, tmp_path):
    """Kill training with SIGKILL after a checkpoint, restart: same final weights as an uninterrupted run."""
    ref = _run(tiny_dataset, tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()[-2000:]

    out = tmp_path / "killed"
    ckpts = checkpoint_dir_for(out)
    p = _run(tiny_dataset, out)
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts / "checkpoint-8").is_dir():
        assert p.poll() is None, "training ended before it could be killed"
        time.sleep(0.2)
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not out.exists(), "a killed run must not leave a complete-looking model directory"
    assert (ckpts / "checkpoint-4").is_dir() or (ckpts / "checkpoint-8").is_dir()

    again = _run(tiny_dataset, out)
    assert again.wait(timeout=300) == 0, again.stderr.read().decode()[-2000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"] and "checkpoint-" in summary["resumed_from"]
    a, b = _weights(tmp_path / "ref"), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k


def test_clear_errors_before_training(tiny_cfg, tiny_dataset, tmp_path):
    with pytest.raises(InputError, match="not found|no dataset"):
        train(tiny_cfg, tmp_path / "missing", tmp_path / "m", progress=False)
    with pytest.raises(ConfigError, match="max_memory_gb"):
        train(tiny_cfg.with_overrides({"train.max_memory_gb": 0.001}), tiny_dataset, tmp_path / "m", progress=False)
    with pytest.raises(InputError, match="backbone_path"):
        train(tiny_cfg.with_overrides({"model.backbone_path": str(tmp_path / "nope")}), tiny_dataset, tmp_path / "m", progress=False)
    # a dataset from another schema version
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_dataset, other)
    card = json.loads((other / "card.json").read_text())
    card["schema_version"] = "lws-v0"
    (other / "card.json").write_text(json.dumps(card))
    with pytest.raises(SchemaMismatchError):
        train(tiny_cfg, other, tmp_path / "m", progress=False)


def test_model_save_load_round_trip_and_schema_check(tiny_model, tmp_path):
    import shutil

    from lws_core.model import LWSModel

    m = LWSModel.load(tiny_model)
    m.save(tmp_path / "copy")
    a = load_file(str(tiny_model / "audio.safetensors"))
    b = load_file(str(tmp_path / "copy" / "audio.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    spec = json.loads((tmp_path / "copy" / "lws_model.json").read_text())
    spec["schema_version"] = "lws-v0"
    (tmp_path / "copy" / "lws_model.json").write_text(json.dumps(spec))
    with pytest.raises(SchemaMismatchError, match="lws-v0"):
        LWSModel.load(tmp_path / "copy")
    shutil.rmtree(tmp_path / "copy" / "lm")
    spec["schema_version"] = "lws-v1"
    (tmp_path / "copy" / "lws_model.json").write_text(json.dumps(spec))
    with pytest.raises(InputError, match="incomplete or corrupt"):
        LWSModel.load(tmp_path / "copy")


def test_freezing_and_lora(tiny_cfg):
    from lws_core.model import LWSModel

    m = LWSModel.build(tiny_cfg.with_overrides({"model.freeze_encoder": True}))
    assert not any(p.requires_grad for p in m.audio.encoder.parameters())
    assert all(p.requires_grad for p in m.audio.projector.parameters())
    lora = LWSModel.build(tiny_cfg.with_overrides({"model.lora.enabled": True, "model.lora.r": 4}))
    trainable = [n for n, p in lora.lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)

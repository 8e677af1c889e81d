"""Guards that must fire before any weight is allocated: memory pre-check, empty splits."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import psutil
import pytest

from lws_core.errors import ConfigError, InputError
from lws_core.model.sizing import model_shape
from lws_core.train import train
from lws_core.train.memory import available_memory_gb, estimate_training_memory


def test_qwen8b_and_huge_batch_fail_fast_without_allocating(tiny_cfg, tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="train.max_length"):  # 4M params but a batch no machine holds
        train(tiny_cfg.with_overrides({"train.batch_size": 200_000}), tiny_dataset, tmp_path / "m", progress=False)
    rss0 = psutil.Process().memory_info().rss
    t0 = time.time()
    with pytest.raises(ConfigError, match=r"estimated training peak [\d.]+ GB > [\d.]+ GB (available RAM|left under the container)") as e:
        train(tiny_cfg.with_overrides({"model.preset": "qwen-8b"}), tiny_dataset, tmp_path / "m", progress=False)
    assert time.time() - t0 < 5
    msg = str(e.value)
    assert "\n" not in msg and "train.batch_size" in msg and "8,5" in msg  # ~8,500M params named
    assert psutil.Process().memory_info().rss - rss0 < 400e6, "an 8B model was sized, not built"
    assert not (tmp_path / "m").exists()


def test_estimate_follows_precision_zero_and_freezing(tiny_cfg):
    big = tiny_cfg.with_overrides({"model.preset": "qwen-0.5b"})
    full = model_shape(big, 151_700)
    assert 4.5e8 < full.parameters < 6.5e8 and full.trainable == full.parameters
    lora = model_shape(big.with_overrides({"model.lora.enabled": True, "model.freeze_encoder": True}), 151_700)
    assert lora.parameters > full.parameters and lora.trainable < 0.1 * full.parameters
    est = {p: estimate_training_memory(full, p, 2, 1, 1, 512, 8) for p in ("fp32", "bf16")}
    assert est["bf16"].weights_gb == pytest.approx(est["fp32"].weights_gb / 2)
    assert estimate_training_memory(lora, "bf16", 2, 1, 1, 512, 8).grads_optimizer_gb < 0.1 * est["bf16"].grads_optimizer_gb
    z3 = estimate_training_memory(full, "bf16", 3, 8, 1, 512, 8)
    assert z3.weights_gb == pytest.approx(est["bf16"].weights_gb / 8)
    assert available_memory_gb(on_gpu=False)[0] > 0


def _with_empty_split(src, dst, split: str):  # noqa: ANN001, ANN202
    from datasets import DatasetDict, load_from_disk

    dd = load_from_disk(str(src))
    # what `datasets` writes for a split with no rows (a state.json without data files)
    DatasetDict({k: (v.select([]) if k == split else v) for k, v in dd.items()}).save_to_disk(str(dst))
    for extra in ("card.json", "tokenizer"):
        s = src / extra
        (shutil.copytree if s.is_dir() else shutil.copy)(s, dst / extra)
    return dst


def test_empty_split_is_one_line_exit_2_before_training(tiny_cfg, tiny_dataset, tmp_path):
    with pytest.raises(InputError, match="split 'train' is empty"):
        train(tiny_cfg, _with_empty_split(tiny_dataset, tmp_path / "e_train", "train"), tmp_path / "m", progress=False)
    d = _with_empty_split(tiny_dataset, tmp_path / "e_val", "validation")
    p = subprocess.run([sys.executable, "-m", "lws_core.cli.main", "train", "--data", str(d), "--out", str(tmp_path / "m")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip() and not ln.startswith("training preset")]
    assert len(lines) == 1 and lines[0].startswith("error:") and "split 'validation' is empty" in lines[0], p.stderr
    assert not (tmp_path / "m").exists()

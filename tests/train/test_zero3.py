"""ZeRO-3 on CPU (one process over gloo): trains, gathers the partitioned weights and saves a loadable model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from lws_core.model import LWSModel
from lws_core.train import train
from lws_core.train.collator import LWSCollator
from lws_core.train.trainer import checkpoint_dir_for


@pytest.mark.parametrize("lora", [False, True])
def test_zero3_saves_gathered_weights_that_load(tiny_cfg, tiny_dataset, tmp_path, lora):
    cfg = tiny_cfg.with_overrides({"train.backend": "deepspeed", "train.zero_stage": 3, "train.max_steps": 3,
                                   "train.batch_size": 2, "train.save_steps": 100, "train.num_threads": 1,
                                   "model.lora.enabled": lora, "model.lora.r": 4})
    out = tmp_path / "m3"
    s = train(cfg, tiny_dataset, out, progress=False)
    assert s.zero_stage == 3 and s.steps == 3
    # fp32 training on CPU: the "16-bit" gather returns the weights in the dtype they trained in, fp32
    assert s.saved_dtype == "float32" and s.model_bytes == 4 * s.parameters
    with safe_open(str(out / "lm" / "model.safetensors"), "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118 - safe_open has keys(), no __iter__
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 - safe_open has keys(), no __iter__
    assert dtypes == {"F32"}
    assert all(0 not in shp for shp in shapes.values()), "saved ZeRO-3 shards (empty tensors) instead of full weights"
    assert json.loads((out / "train_summary.json").read_text())["zero_stage"] == 3
    assert not checkpoint_dir_for(out).exists()

    m = LWSModel.load(out)
    # the weights trained: they differ from the same seed's initial weights
    torch.manual_seed(cfg.train.seed)
    init = LWSModel.build(cfg.with_overrides({"model.lora.enabled": False}), tokenizer=m.tokenizer)  # same base init
    assert all(p.numel() for p in init.parameters()), "a model built after ZeRO-3 must not be partitioned"
    moved = [k for k, v in init.state_dict().items() if not torch.equal(v, m.state_dict()[k])]
    if not lora:
        assert len(moved) > len(init.state_dict()) // 2
    else:  # LoRA merged into the gathered weights; of the vocabulary only schema-token rows trained
        assert any("q_proj" in k for k in moved) and any(k.startswith("audio.projector") for k in moved)
        rows = (m.lm.get_input_embeddings().weight - init.lm.get_input_embeddings().weight).abs().amax(1).nonzero().flatten()
        assert len(rows) and set(rows.tolist()) <= set(m.tokenizer.special.as_mapping().values())
    from datasets import load_from_disk

    rows = load_from_disk(str(tiny_dataset))["validation"]
    batch = LWSCollator(m.tokenizer, m.spec.audio_tokens_per_unit, m.spec.unit_samples)([rows[0], rows[1]])
    with torch.no_grad():
        o = m(**batch)
    assert torch.isfinite(o.logits).all() and torch.isfinite(o.loss)

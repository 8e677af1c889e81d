"""Each cached pipeline step depends only on the config sections `STEP_SECTIONS` names.

The pipeline hands a step only those sections (so KFP's cache reruns exactly the steps a
change affects). That is safe only if the step never reads another section: here each
step's science function runs on a config whose other sections raise on any read.
"""

from __future__ import annotations

import pytest

from lws_core.config import SHARED_SECTIONS, STEP_SECTIONS, LWSConfig, config_from_dict, step_view
from lws_core.errors import ConfigError

_ATTR = {"schema": "schema_"}


def _unreadable(section, where: str, step: str, allowed: frozenset[str] = frozenset()):  # noqa: ANN001, ANN202
    """A copy of ``section`` that raises when any field but ``allowed`` is read (the serializer still sees them)."""

    class Unreadable(type(section)):
        def __getattribute__(self, attr, _where=where):  # noqa: ANN001, ANN204
            if attr in type(self).model_fields and attr not in allowed:
                raise AssertionError(f"step {step!r} read {_where}.{attr}, which STEP_SECTIONS leaves out")
            return super().__getattribute__(attr)

    return Unreadable.model_construct(**dict(section))


def _poisoned(cfg: LWSConfig, step: str) -> LWSConfig:
    """``cfg`` with everything the step must not depend on replaced by sections that raise when read:
    whole sections, or, for ``section.key`` entries, every other key of that section."""
    keep = {*STEP_SECTIONS[step], *SHARED_SECTIONS}
    update = {}
    for name in cfg.to_dict():
        if name in keep:
            continue
        section = getattr(cfg, _ATTR.get(name, name))
        allowed = frozenset(k.split(".", 1)[1] for k in keep if k.startswith(f"{name}."))
        update[_ATTR.get(name, name)] = _unreadable(section, name, step, allowed)
    return cfg.model_copy(update=update)


def test_step_view_keeps_only_the_steps_sections():
    cfg = LWSConfig().with_overrides({"eval.limit": 5, "train.max_steps": 7, "data.sessions": 9})
    train = config_from_dict(step_view(cfg, "train"))
    assert train.train.max_steps == 7 and train.eval.limit == LWSConfig().eval.limit
    assert config_from_dict(step_view(cfg, "evaluate")).eval.limit == 5
    assert step_view(cfg, "synthesize") == step_view(cfg.with_overrides({"eval.limit": 1, "train.max_steps": 2}), "synthesize")
    assert step_view(cfg, "train") != step_view(cfg.with_overrides({"train.learning_rate": 1e-4}), "train")
    # resizing a pod is not a reason to retrain: no step's view holds pipeline.resources
    assert step_view(cfg, "train") == step_view(cfg.with_overrides({"pipeline.resources.train.memory_limit": "64Gi"}), "train")
    with pytest.raises(ConfigError, match="unknown pipeline step"):
        step_view(cfg, "deploy")


def test_pretrain_views_keep_single_keys():
    """The pretrain steps depend on a few keys of `model` and `train`, and on their own `pretrain` part: a new
    train setting re-trains without pretraining again; a new encoder setting re-pretrains only the encoder."""
    cfg = LWSConfig()
    bb = step_view(cfg, "pretrain_backbone")
    assert set(bb["model"]) == {"preset", "backbone_path"} and set(bb["pretrain"]) == {"backbone", "bf16"}
    assert set(bb["train"]) == {"max_length"} and "data" in bb and "eval" not in bb
    enc = step_view(cfg, "pretrain_encoder")
    assert set(enc["model"]) == {"preset", "audio_context_s", "encoder_path"} and set(enc["pretrain"]) == {"encoder", "bf16"}
    assert "data" in enc and "train" not in enc  # its extra speech corpus (pretrain.encoder.sessions) is synthesized from `data`
    assert set(step_view(cfg, "train")["pretrain"]) == {"warmup"}
    changes = {
        "train.learning_rate": 1e-4, "model.lora.r": 4, "pretrain.warmup.projector_steps": 5,
        "pretrain.encoder.max_steps": 7, "data.sessions": 3, "model.backbone_path": "/ckpt/lm",
    }
    for key, value in changes.items():
        other = cfg.with_overrides({key: value})
        moved = {s for s in ("pretrain_backbone", "pretrain_encoder", "train") if step_view(other, s) != step_view(cfg, s)}
        want = {
            "train.learning_rate": {"train"}, "model.lora.r": {"train"}, "pretrain.warmup.projector_steps": {"train"},
            "pretrain.encoder.max_steps": {"pretrain_encoder"}, "data.sessions": {"pretrain_backbone", "pretrain_encoder"},
            "model.backbone_path": {"pretrain_backbone", "train"},
        }[key]
        assert moved == want, key
    # a view reads back as a config: what it leaves out is the default
    assert config_from_dict(enc).pretrain.backbone.max_steps == LWSConfig().pretrain.backbone.max_steps


def test_poison_catches_a_read():
    p = _poisoned(LWSConfig(), "synthesize")
    with pytest.raises(AssertionError, match="eval.limit"):
        _ = p.eval.limit
    assert p.data.sessions == LWSConfig().data.sessions and p.digest()
    p = _poisoned(LWSConfig(), "pretrain_encoder")
    assert p.model.audio_context_s == LWSConfig().model.audio_context_s and p.pretrain.encoder.max_steps
    with pytest.raises(AssertionError, match="model.lora"):
        _ = p.model.lora
    with pytest.raises(AssertionError, match="pretrain.backbone"):
        _ = p.pretrain.backbone


def test_each_step_reads_only_its_sections(tiny_cfg, tmp_path):
    from lws_core.data import synthesize
    from lws_core.eval import evaluate
    from lws_core.train import train

    cfg = tiny_cfg.with_overrides({
        "data.sessions": 24, "train.max_steps": 2, "train.backend": "torch", "eval.fdb_probe": False,
        "eval.consistency_embedding": False,
    })
    synthesize(_poisoned(cfg, "synthesize"), tmp_path / "data", progress=False)
    train(_poisoned(cfg, "train"), tmp_path / "data", tmp_path / "model", progress=False)
    s = evaluate(_poisoned(cfg, "evaluate"), tmp_path / "model", tmp_path / "data", tmp_path / "ev", limit=2, progress=False)
    assert 1 <= s.metrics["eval_sessions"] <= 2


def test_pretrain_steps_read_only_their_keys(tiny_cfg, tiny_dataset, tmp_path):
    from lws_core.train.pretrain_backbone import build_backbone
    from lws_core.train.pretrain_encoder import pretrain_encoder

    cfg = tiny_cfg.with_overrides({
        "pretrain.backbone.sessions": 24, "pretrain.backbone.max_steps": 2, "pretrain.backbone.batch_size": 4,
        "pretrain.encoder.max_steps": 2, "pretrain.encoder.batch_size": 8, "pretrain.encoder.sessions": 0, "pretrain.encoder.eval_sessions": 2,
    })
    assert build_backbone(_poisoned(cfg, "pretrain_backbone"), tmp_path / "bb", progress=False).steps == 2
    assert pretrain_encoder(_poisoned(cfg, "pretrain_encoder"), tiny_dataset, tmp_path / "enc", progress=False).steps == 2

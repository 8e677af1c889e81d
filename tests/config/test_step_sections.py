"""Each cached pipeline step depends only on the config sections `STEP_SECTIONS` names.

The pipeline hands a step only those sections (so KFP's cache reruns exactly the steps a
change affects). That is safe only if the step never reads another section: here each
step's science function runs on a config whose other sections raise on any read.
"""

from __future__ import annotations

import json

import pytest

from lws_core.config import SHARED_KEYS, STEP_PINNED, STEP_SECTIONS, LWSConfig, config_from_dict, step_view
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
    whole sections, or, for ``section.key`` entries, every other key of that section; and the keys the step
    pins itself (``STEP_PINNED``) in a section it otherwise reads."""
    keep = {*STEP_SECTIONS[step], *SHARED_KEYS}
    pinned = STEP_PINNED.get(step, ())
    update = {}
    for name in cfg.to_dict():
        section = getattr(cfg, _ATTR.get(name, name))
        if name in keep:
            gone = {k.split(".", 1)[1] for k in pinned if k.startswith(f"{name}.")}
            if gone:
                update[_ATTR.get(name, name)] = _unreadable(section, name, step, frozenset(type(section).model_fields) - gone)
            continue
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
    assert set(bb["model"]) == {"preset", "backbone_path"} and set(bb["pretrain"]) == {"backbone", "bf16", "extra_phrasings"}
    assert set(bb["train"]) == {"max_length"} and "data" in bb and "eval" not in bb
    enc = step_view(cfg, "pretrain_encoder")
    assert set(enc["model"]) == {"preset", "audio_context_s", "encoder_path"} and set(enc["pretrain"]) == {"encoder", "bf16", "extra_phrasings"}
    assert "data" in enc and "train" not in enc  # its extra speech corpus (pretrain.encoder.sessions) is synthesized from `data`
    assert set(step_view(cfg, "train")["pretrain"]) == {"warmup"}
    changes = {
        "train.learning_rate": 1e-4, "model.lora.r": 4, "pretrain.warmup.projector_steps": 5,
        "pretrain.encoder.max_steps": 7, "data.sessions": 3, "model.backbone_path": "/ckpt/lm",
        "pretrain.extra_phrasings": False, "data.filler_rate": 0.0, "data.filler_max": 3,
    }
    for key, value in changes.items():
        other = cfg.with_overrides({key: value})
        moved = {s for s in ("pretrain_backbone", "pretrain_encoder", "train") if step_view(other, s) != step_view(cfg, s)}
        want = {
            "train.learning_rate": {"train"}, "model.lora.r": {"train"}, "pretrain.warmup.projector_steps": {"train"},
            "pretrain.encoder.max_steps": {"pretrain_encoder"}, "data.sessions": {"pretrain_backbone", "pretrain_encoder"},
            "model.backbone_path": {"pretrain_backbone", "train"},
            "pretrain.extra_phrasings": {"pretrain_backbone", "pretrain_encoder"},
            # the backbone's text corpus takes no fillers (STEP_PINNED); the recogniser's own corpus draws from the list
            "data.filler_rate": {"pretrain_encoder"}, "data.filler_max": {"pretrain_encoder"},
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
    p = _poisoned(LWSConfig(), "pretrain_backbone")
    assert p.data.sessions == LWSConfig().data.sessions
    with pytest.raises(AssertionError, match="data.filler_rate"):
        _ = p.data.filler_rate


def test_run_time_settings_leave_every_view_alone():
    """What only the compiler, the scheduler or the register step reads (the gate, the schedule, images,
    retries, pod sizes) is in no cached step's view: changing it reruns nothing. The train step keeps what
    its TrainJob hand-off reads, and every step where it logs."""
    cfg = LWSConfig()
    runtime = {
        "registry.gate_confidence": 0.8, "registry.gate_resamples": 500, "registry.model_name": "other",
        "pipeline.cron": "0 30 4 * * *", "pipeline.retries": 3, "pipeline.base_image": "example.org/lws:2",
        "pipeline.caching": False, "pipeline.host": "http://kfp:8888", "pipeline.resources.train.memory_limit": "64Gi",
    }
    for key, value in runtime.items():
        other = cfg.with_overrides({key: value})
        assert all(step_view(other, s) == step_view(cfg, s) for s in STEP_SECTIONS), key
    gate = cfg.with_overrides({"registry.gate": [{"metric": "task_accuracy", "tolerance": 0.0}]})
    assert all(step_view(gate, s) == step_view(cfg, s) for s in STEP_SECTIONS)
    # where a step logs and works is its input (a run logged elsewhere is another run)
    for key, value in {"registry.tracking_uri": "http://mlflow:5000", "pipeline.workspace": "/mnt/lws"}.items():
        other = cfg.with_overrides({key: value})
        assert all(step_view(other, s) != step_view(cfg, s) for s in STEP_SECTIONS), key
    # the hand-off's settings move the train step only
    other = cfg.with_overrides({"pipeline.train_launcher": "trainjob", "pipeline.train_image": "example.org/lws-cuda:2"})
    assert {s for s in STEP_SECTIONS if step_view(other, s) != step_view(cfg, s)} == {"train"}
    assert config_from_dict(step_view(other, "train")).pipeline.train_launcher == "trainjob"
    assert "gate" not in step_view(cfg, "evaluate")["registry"] and set(step_view(cfg, "evaluate")["pipeline"]) == {"workspace"}


def test_each_step_reads_only_its_view(tiny_cfg, tmp_path, monkeypatch):
    """Each step as the pipeline runs it (lws_core.ops.steps: its MLflow step run, system metrics, the
    TrainJob switch, then the science) reads nothing its view leaves out: every other section, and every
    other key of a section it reads in part, raises when read."""
    import lws_core.ops.steps as steps

    cfg = tiny_cfg.with_overrides({
        "pipeline.workspace": str(tmp_path / "ws"), "data.sessions": 24, "train.max_steps": 2, "train.backend": "torch",
        "eval.limit": 2, "eval.fdb_probe": False, "eval.consistency_embedding": False,
        "pretrain.backbone.sessions": 24, "pretrain.backbone.max_steps": 2, "pretrain.backbone.batch_size": 4,
        "pretrain.encoder.max_steps": 2, "pretrain.encoder.batch_size": 8, "pretrain.encoder.sessions": 0,
        "pretrain.encoder.eval_sessions": 2,
    })
    cj = json.dumps(cfg.to_dict())

    def as_step(step: str) -> None:
        monkeypatch.setattr(steps, "_cfg", lambda config_json: _poisoned(config_from_dict(json.loads(config_json)), step))

    data, model = tmp_path / "data", tmp_path / "model"
    as_step("synthesize")
    steps.run_synthesize(cj, str(data))
    as_step("pretrain_backbone")
    steps.run_pretrain_backbone(cj, str(tmp_path / "bb"))
    as_step("pretrain_encoder")
    steps.run_pretrain_encoder(cj, str(data), str(tmp_path / "enc"))
    as_step("train")  # from scratch: given the stand-ins, the step makes a new config (pretrained_config)
    steps.run_train(cj, str(data), str(model))
    as_step("evaluate")
    _, metrics = steps.run_evaluate(cj, str(model), str(data), str(tmp_path / "ev"))
    assert 1 <= metrics["eval_sessions"] <= 2
    assert (tmp_path / "bb" / "config.json").is_file() and (tmp_path / "enc" / "lws_encoder.json").is_file()

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


def _poisoned(cfg: LWSConfig, step: str) -> LWSConfig:
    """``cfg`` with every section the step must not depend on replaced by one that raises when read."""
    keep = {*STEP_SECTIONS[step], *SHARED_SECTIONS}
    update = {}
    for name in cfg.to_dict():
        if name in keep:
            continue
        section = getattr(cfg, _ATTR.get(name, name))

        class Unreadable(type(section)):  # the serializer (digest, to_dict) still sees the values
            def __getattribute__(self, attr, _name=name):  # noqa: ANN001, ANN204
                if attr in type(self).model_fields:
                    raise AssertionError(f"step {step!r} read {_name}.{attr}, which STEP_SECTIONS leaves out")
                return super().__getattribute__(attr)

        update[_ATTR.get(name, name)] = Unreadable.model_construct(**dict(section))
    return cfg.model_copy(update=update)


def test_step_view_keeps_only_the_steps_sections():
    cfg = LWSConfig().with_overrides({"eval.limit": 5, "train.max_steps": 7, "data.sessions": 9})
    train = config_from_dict(step_view(cfg, "train"))
    assert train.train.max_steps == 7 and train.eval.limit == LWSConfig().eval.limit
    assert config_from_dict(step_view(cfg, "evaluate")).eval.limit == 5
    assert step_view(cfg, "synthesize") == step_view(cfg.with_overrides({"eval.limit": 1, "train.max_steps": 2}), "synthesize")
    assert step_view(cfg, "train") != step_view(cfg.with_overrides({"train.learning_rate": 1e-4}), "train")
    with pytest.raises(ConfigError, match="unknown pipeline step"):
        step_view(cfg, "deploy")


def test_poison_catches_a_read():
    p = _poisoned(LWSConfig(), "synthesize")
    with pytest.raises(AssertionError, match="eval.limit"):
        _ = p.eval.limit
    assert p.data.sessions == LWSConfig().data.sessions and p.digest()


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

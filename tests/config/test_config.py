"""Config: defaults, params.yaml round trip, errors that name the key and the allowed values."""

from __future__ import annotations

import pytest
import yaml

from lws_core.config import LWSConfig, TrainConfig, config_from_dict, load_config
from lws_core.errors import ConfigError


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = LWSConfig()
    p = tmp_path / "params.yaml"
    p.write_text(cfg.to_yaml())
    again = load_config(p)
    assert again == cfg and again.digest() == cfg.digest()
    assert list(yaml.safe_load(p.read_text())) == ["schema", "data", "model", "pretrain", "train", "engine", "eval", "registry", "pipeline"]


def test_repo_params_yaml_is_valid():
    """params.yaml is what `dvc repro` and the README run: it must exist and be exactly the defaults."""
    from pathlib import Path

    p = Path(__file__).resolve().parents[2] / "params.yaml"
    assert p.is_file(), f"{p} is missing"
    assert load_config(p) == LWSConfig()
    assert p.read_text() == LWSConfig().to_yaml(), (
        "params.yaml differs from the defaults; regenerate it with "
        "python -c 'from lws_core.config import LWSConfig; print(LWSConfig().to_yaml(), end=\"\")' > params.yaml"
    )


def test_unknown_key_names_key_and_allowed():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"train": {"max_stepz": 3}})
    msg = str(e.value)
    assert "train.max_stepz" in msg and "allowed:" in msg and "max_steps" in msg


def test_bad_literal_lists_allowed_values():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"model": {"preset": "huge"}})
    assert "model.preset" in str(e.value) and "'tiny'" in str(e.value)


def test_range_and_section_errors():
    with pytest.raises(ConfigError, match="schema.unit_s"):
        config_from_dict({"schema": {"unit_s": 5}})
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"bogus": {}})
    with pytest.raises(ConfigError, match="unknown scenario"):
        config_from_dict({"data": {"scenarios": {"karaoke": 1.0}}})


def test_overrides():
    cfg = LWSConfig().with_overrides({"train.max_steps": 7, "schema.unit_s": 0.5})
    assert cfg.train.max_steps == 7 and cfg.schema_.unit_s == 0.5
    with pytest.raises(ConfigError, match="unknown config key"):
        LWSConfig().with_overrides({"train.nope": 1})


def test_unknown_override_names_allowed_keys():
    """A --set typo is answered like a params.yaml typo: the key and what the section allows."""
    with pytest.raises(ConfigError) as e:
        LWSConfig().with_overrides({"train.nope": 1})
    msg = str(e.value)
    assert "'train.nope'" in msg and "allowed in train:" in msg
    assert all(k in msg for k in TrainConfig.model_fields), msg
    assert "\n" not in msg
    with pytest.raises(ConfigError) as e:
        LWSConfig().with_overrides({"nope.x": 1})
    assert "allowed sections: schema, data, model, pretrain, train, engine, eval, registry, pipeline" in str(e.value)
    with pytest.raises(ConfigError, match="train.max_steps is a value"):
        LWSConfig().with_overrides({"train.max_steps.x": 1})


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_step_resources_are_checked_at_load():
    """A typo in a pod request fails at config load with its key, not at submit time on the cluster."""
    cfg = LWSConfig().with_overrides({"pipeline.resources.train.memory_limit": "8Gi"})
    assert cfg.pipeline.resources["train"].memory_limit == "8Gi"
    assert cfg.pipeline.resources["pretrain_encoder"].memory_request == "7Gi"  # the other defaults are kept
    with pytest.raises(ConfigError, match="pipeline.resources.train.memory_limit"):
        LWSConfig().with_overrides({"pipeline.resources.train.memory_limit": "8 GB"})
    with pytest.raises(ConfigError, match="unknown step.*trian"):
        config_from_dict({"pipeline": {"resources": {"trian": {"cpu_request": "2"}}}})


def test_on_off_switches_take_yaml_booleans():
    """`--set pretrain.bf16=off` reaches the config as YAML's False: it means "off", not an error."""
    cfg = config_from_dict({"pretrain": {"bf16": False}, "train": {"cpu_bf16": True}})
    assert (cfg.pretrain.bf16, cfg.train.cpu_bf16) == ("off", "on")
    with pytest.raises(ConfigError, match="cpu_bf16"):
        config_from_dict({"train": {"cpu_bf16": "sometimes"}})

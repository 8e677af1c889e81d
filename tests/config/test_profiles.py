"""The shipped config profiles (profiles/*.yaml): they load, and the quick one changes sizes only.

Why: `make quick` is a newcomer's first run. A profile that silently changed a modelling choice (a loss, a
schema field, the filler data) would make its figures say nothing about the defaults it stands in for.
"""

from __future__ import annotations

from pathlib import Path

from lws_core.config import LWSConfig, load_config

ROOT = Path(__file__).resolve().parents[2]

# What the quick profile may change: sizes of data, steps and evaluation, and its own workspace.
SIZE_FIELDS = {
    "data.sessions",
    "pretrain.backbone.max_steps",
    "pretrain.encoder.max_steps",
    "pretrain.encoder.sessions",
    "pretrain.encoder.eval_sessions",
    "train.max_steps",
    "eval.limit",
    "eval.fdb_probe_per_task",
    "eval.streams",
    "pipeline.workspace",
}


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def test_every_profile_loads() -> None:
    profiles = sorted((ROOT / "profiles").glob("*.yaml"))
    assert profiles, "no profiles shipped"
    for p in profiles:
        load_config(p)  # raises ConfigError on an unknown or invalid field


def test_quick_profile_changes_sizes_only_and_is_smaller() -> None:
    quick, default = load_config(ROOT / "profiles" / "quick.yaml"), LWSConfig()
    q, d = _flat(quick.to_dict()), _flat(default.to_dict())
    changed = {k for k in d if q[k] != d[k]}
    assert changed <= SIZE_FIELDS, f"the quick profile changes more than sizes: {sorted(changed - SIZE_FIELDS)}"
    for k in changed - {"pipeline.workspace"}:
        assert q[k] < d[k], f"{k}: {q[k]} is not smaller than the default {d[k]}"
    assert quick.pipeline.workspace != default.pipeline.workspace  # never gated against the defaults' champion
    assert "quick:" in (ROOT / "Makefile").read_text() and "profiles/quick.yaml" in (ROOT / "Makefile").read_text()

"""One typed config for every stage, read from ``params.yaml`` (DVC's convention).

The same object drives the CLI, ``dvc repro`` and the KFP pipeline's parameters;
no stage invents its own defaults. Each section lives in its own module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lws_core.config.base import Section
from lws_core.config.data import DataConfig
from lws_core.config.engine import EngineSection
from lws_core.config.eval import EvalConfig
from lws_core.config.model import ModelConfig
from lws_core.config.pipeline import PipelineConfig, StepResources
from lws_core.config.pretrain import PretrainConfig
from lws_core.config.registry import RegistryConfig
from lws_core.config.schema import SchemaConfig
from lws_core.config.train import TrainConfig
from lws_core.errors import ConfigError

DEFAULT_PARAMS = "params.yaml"


class LWSConfig(Section):
    """The whole config: sections `schema, data, model, pretrain, train, engine, eval, registry, pipeline`."""

    schema_: SchemaConfig = SchemaConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    train: TrainConfig = TrainConfig()
    engine: EngineSection = EngineSection()
    eval: EvalConfig = EvalConfig()
    registry: RegistryConfig = RegistryConfig()
    pipeline: PipelineConfig = PipelineConfig()

    # `schema` shadows a pydantic attribute name; keep it in files, rename in Python.
    model_config = {**Section.model_config, "populate_by_name": True}

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d["schema"] = d.pop("schema_")
        order = ["schema", "data", "model", "pretrain", "train", "engine", "eval", "registry", "pipeline"]
        return {k: d[k] for k in order}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """Stable short hash of the resolved config (lineage tag, cache key)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_overrides(self, overrides: dict[str, Any]) -> LWSConfig:
        """Return a copy with dotted-key overrides applied, e.g. ``{"train.max_steps": 10}``."""
        d = self.to_dict()
        for key, value in overrides.items():
            node = d
            parts = key.split(".")
            for depth, p in enumerate(parts[:-1]):
                if p not in node and ".".join(parts[:depth]) in OPEN_MAPS:
                    node[p] = OPEN_MAPS[".".join(parts[:depth])]()  # a new entry, at its defaults; its name is validated
                if p not in node or not isinstance(node[p], dict):
                    raise ConfigError(_unknown_key(key, parts[: depth + 1], node))
                node = node[p]
            if parts[-1] not in node:
                raise ConfigError(_unknown_key(key, parts, node))
            node[parts[-1]] = value
        return config_from_dict(d)


# Config maps whose entries a dotted override may add (``pipeline.resources.register.cpu_limit=500m``
# where the defaults have no ``register`` entry), not only change.
OPEN_MAPS: dict[str, Any] = {"pipeline.resources": lambda: StepResources().model_dump(mode="json")}


def _unknown_key(key: str, parts: list[str], node: dict[str, Any]) -> str:
    """A one-line message naming the bad key and what is allowed where it went wrong.

    ``--set`` typos should be as easy to fix as params.yaml typos, which
    :func:`config_from_dict` already answers with the allowed keys.
    """
    where = ".".join(parts[:-1])
    bad = parts[-1]
    if bad in node:  # the key exists but is a value, so it cannot have sub-keys
        return f"unknown config key {key!r}: {where + '.' if where else ''}{bad} is a value, not a section"
    scope = f"in {where}" if where else "sections"
    return f"unknown config key {key!r} (allowed {scope}: {', '.join(node)})"

# The `pipeline` keys the train step's TrainJob hand-off reads (lws_core.ops.trainjob): the pod it
# creates (image, GPUs, placement, volume, secrets) and how it waits for it.
TRAINJOB_KEYS: tuple[str, ...] = tuple(
    f"pipeline.{k}"
    for k in (
        "train_launcher", "train_num_nodes", "trainjob_namespace", "trainjob_runtime", "trainjob_timeout_s",
        "trainjob_poll_s", "kube_api_url", "train_image", "accelerator_type", "accelerator_count",
        "gpu_node_selector", "gpu_tolerations", "pvc_name", "s3_secret", "mlflow_secret",
    )
)
# The config each cached pipeline step reads (besides SHARED_KEYS: where it logs and runs): whole
# sections, or single keys as ``section.key``. A step is handed only these, so KFP's cache, keyed on a
# step's inputs, reruns it only when something it depends on changed: a new eval setting re-evaluates
# without re-training, a new train setting re-trains without pretraining again.
# tests/config/test_step_sections.py runs each step with everything else made unreadable.
STEP_SECTIONS: dict[str, tuple[str, ...]] = {
    "synthesize": ("schema", "data"),
    # the text corpus is synthesized from `data` (its own size and seed from pretrain.backbone);
    # sessions are cut to train.max_length, so the LM sees what the LWS stage will
    "pretrain_backbone": (
        "schema", "data", "model.preset", "model.backbone_path", "train.max_length", "pretrain.backbone", "pretrain.bf16",
        "pretrain.extra_phrasings",
    ),
    # the extra recogniser corpus (pretrain.encoder.sessions) is synthesized from `data` like the text corpus
    "pretrain_encoder": (
        "schema", "data", "model.preset", "model.audio_context_s", "model.encoder_path", "pretrain.encoder", "pretrain.bf16",
        "pretrain.extra_phrasings",
    ),
    # the train step hands off to a Kubeflow Trainer TrainJob when pipeline.train_launcher says so
    "train": ("schema", "model", "train", "pretrain.warmup", *TRAINJOB_KEYS),
    "evaluate": ("schema", "engine", "eval"),
}
# Keys a step's view leaves out of a section it otherwise takes, because the step sets them itself: the
# backbone's text corpus never carries filler words (pretrain_backbone.corpus_config sets data.filler_rate
# to 0), so turning the LWS data's fillers on or off keeps the backbone stand-in cached.
STEP_PINNED: dict[str, tuple[str, ...]] = {
    "pretrain_backbone": ("data.filler_rate", "data.filler_place", "data.filler_max", "data.filler_vocab"),
}
# What every cached step reads besides its own keys: where it logs (MLflow) and its workspace. Single
# keys, not the whole `registry` and `pipeline` sections, so that what only the compiler, the scheduler
# or the register step reads (the promotion gate, the model name, the cron schedule, images, retries,
# pod sizes, caching itself) can change without rerunning a cached step: tightening the gate re-gates
# the cached model, it does not pretrain and train again.
SHARED_KEYS: tuple[str, ...] = (
    "registry.tracking_uri", "registry.experiment", "registry.artifact_location", "registry.s3_endpoint_url",
    "pipeline.workspace",
)


def pick(d: dict[str, Any], keys: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The parts of the config dict ``d`` that ``keys`` name (``section`` or ``section.key``), nested as in ``d``.

    A key absent from ``d`` is left out (it reads as its default)."""
    out: dict[str, Any] = {}
    for key in keys:
        src, dst = d, out
        parts = key.split(".")
        for i, p in enumerate(parts):
            if not isinstance(src, dict) or p not in src:
                break
            if i == len(parts) - 1:
                dst[p] = src[p]
            else:
                src = src[p]
                dst = dst.setdefault(p, {})
    return {k: v for k, v in out.items() if v != {}}


def step_view(cfg: LWSConfig, step: str) -> dict[str, Any]:
    """The part of ``cfg`` that ``step`` depends on (the rest is left out, and reads as defaults)."""
    if step not in STEP_SECTIONS:
        raise ConfigError(f"unknown pipeline step {step!r} (allowed: {', '.join(STEP_SECTIONS)})")
    view = pick(cfg.to_dict(), (*STEP_SECTIONS[step], *SHARED_KEYS))
    for key in STEP_PINNED.get(step, ()):
        section, name = key.split(".", 1)
        view.get(section, {}).pop(name, None)
    return view


_FIELD_ALIASES = {"schema": "schema_"}


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join("schema" if p == "schema_" else str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            parent = _section_for(e["loc"][:-1])
            if parent is not None:
                allowed = ", ".join(k for k in parent.model_fields)
                msg += f" (allowed: {allowed.replace('schema_', 'schema')})"
        elif e["type"] == "literal_error":
            msg = f"{msg}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        lines.append(f"{loc or '<root>'}: {msg}")
    return "; ".join(lines)


def _section_for(loc: tuple[Any, ...]) -> type[Section] | None:
    cls: Any = LWSConfig
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, Section):
            return None if part is not None else cls
        cls = field.annotation
    return cls


def config_from_dict(d: dict[str, Any] | None) -> LWSConfig:
    d = dict(d or {})
    if "schema" in d:
        d["schema_"] = d.pop("schema")
    try:
        return LWSConfig.model_validate(d)
    except ValidationError as e:
        raise ConfigError(f"invalid config: {_format_error(e)}") from None


def load_config(path: str | Path | None = None) -> LWSConfig:
    """Load ``params.yaml`` (or ``path``). A missing default file means all defaults."""
    if path is None:
        path = Path(DEFAULT_PARAMS)
        if not path.exists():
            return LWSConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


__all__ = [
    "LWSConfig",
    "SchemaConfig",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "EngineSection",
    "EvalConfig",
    "RegistryConfig",
    "PipelineConfig",
    "load_config",
    "config_from_dict",
    "step_view",
    "pick",
    "STEP_SECTIONS",
    "STEP_PINNED",
    "SHARED_KEYS",
]

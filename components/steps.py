"""One lightweight KFP component per step. No logic here: each body calls lws_core.ops.steps.

Components are built by a factory so the base image comes from the config
(`pipeline.base_image`, `pipeline.train_image`); they install nothing at run time
(`install_kfp_package=False`, no packages_to_install): the image (or the local
environment) already holds LWS and its pinned dependencies. (No `from __future__ import annotations`:
KFP reads the artifact annotations at definition time.)
"""


from dataclasses import dataclass
from typing import Any, List, NamedTuple  # noqa: UP035 - KFP reads typing.List annotations

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output


def step_configs(
    config_json: str,
) -> NamedTuple(
    "StepConfigs",
    [("synthesize", str), ("pretrain_backbone", str), ("pretrain_encoder", str), ("train", str), ("evaluate", str)],
):
    from collections import namedtuple

    from lws_core.ops.steps import run_step_configs

    names = ["synthesize", "pretrain_backbone", "pretrain_encoder", "train", "evaluate"]
    c = run_step_configs(config_json)
    return namedtuple("StepConfigs", names)(*(c[n] for n in names))


def synthesize(config_json: str, dataset: Output[Dataset]) -> str:
    from lws_core.ops.steps import run_synthesize

    return run_synthesize(config_json, dataset.path)


def synthesize_shard(config_json: str, shard: int, shards: int) -> str:
    from lws_core.ops.steps import run_synthesize_shard

    return run_synthesize_shard(config_json, shard, shards)


def merge_shards(config_json: str, shard_paths: List[str], dataset: Output[Dataset]) -> str:  # noqa: UP006
    from lws_core.ops.steps import run_merge_shards

    return run_merge_shards(config_json, shard_paths, dataset.path)


def version_data(config_json: str, dataset: Input[Dataset]) -> str:
    from lws_core.ops.steps import run_version

    return run_version(config_json, dataset.path, "dataset")


def pretrain_backbone(config_json: str, backbone: Output[Model]) -> str:
    from lws_core.ops.steps import run_pretrain_backbone

    return run_pretrain_backbone(config_json, backbone.path)


def pretrain_encoder(config_json: str, dataset: Input[Dataset], encoder: Output[Model]) -> str:
    from lws_core.ops.steps import run_pretrain_encoder

    return run_pretrain_encoder(config_json, dataset.path, encoder.path)


def train(
    config_json: str, dataset: Input[Dataset], backbone: Input[Model], encoder: Input[Model], model: Output[Model]
) -> str:
    from lws_core.ops.steps import run_train

    return run_train(config_json, dataset.path, model.path, backbone.path, encoder.path)


def evaluate(
    config_json: str,
    model: Input[Model],
    dataset: Input[Dataset],
    eval_dir: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> str:
    import shutil

    from lws_core.ops.steps import run_evaluate

    run_id, values = run_evaluate(config_json, model.path, dataset.path, eval_dir.path, metrics.path)
    for k, v in values.items():
        metrics.log_metric(k, v)
    shutil.copyfile(f"{eval_dir.path}/report.md", report.path)
    return run_id


def register(
    config_json: str,
    run_tag: str,
    job_id: str,
    model: Input[Model],
    eval_dir: Input[Artifact],
    backbone: Input[Model],
    encoder: Input[Model],
    dataset_hash: str,
    synth_run: str,
    backbone_run: str,
    encoder_run: str,
    train_run: str,
    eval_run: str,
) -> str:
    import json

    from lws_core.ops.steps import run_register

    result = run_register(
        config_json, run_tag or job_id, model.path, eval_dir.path, dataset_hash,
        [synth_run, backbone_run, encoder_run, train_run, eval_run],
        backbone_path=backbone.path, encoder_path=encoder.path, backbone_run=backbone_run, encoder_run=encoder_run,
    )
    return json.dumps(result)


def finalize(config_json: str, run_tag: str, job_id: str) -> str:
    from lws_core.ops.steps import run_finalize

    return run_finalize(config_json, run_tag or job_id)




@dataclass(frozen=True)
class Components:
    step_configs: Any
    synthesize: Any
    synthesize_shard: Any
    merge_shards: Any
    version_data: Any
    pretrain_backbone: Any
    pretrain_encoder: Any
    train: Any
    evaluate: Any
    register: Any
    finalize: Any


def build_components(base_image: str, train_image: str) -> Components:
    def make(fn, image: str):  # noqa: ANN001, ANN202
        return dsl.component(fn, base_image=image, install_kfp_package=False)

    return Components(
        step_configs=make(step_configs, base_image),
        synthesize=make(synthesize, base_image),
        synthesize_shard=make(synthesize_shard, base_image),
        merge_shards=make(merge_shards, base_image),
        version_data=make(version_data, base_image),
        # the stand-ins train like the LWS stage does: on the training image (GPUs only where asked)
        pretrain_backbone=make(pretrain_backbone, train_image),
        pretrain_encoder=make(pretrain_encoder, train_image),
        train=make(train, train_image),
        evaluate=make(evaluate, base_image),
        register=make(register, base_image),
        finalize=make(finalize, base_image),
    )

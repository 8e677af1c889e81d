"""The retraining pipeline: synthesize → version data → [pretrain backbone, pretrain encoder] → train → evaluate →
register/promote.

Cluster settings come from the config's `pipeline` section and compile into the
YAML's Kubernetes platform spec; the local runner ignores them (with a warning).
"""


import json

from kfp import dsl, kubernetes
from kfp.dsl import Dataset

from components import build_components
from lws_core.config import LWSConfig

PIPELINE_NAME = "lws-retraining"
CHECKPOINT_MOUNT = "/mnt/lws"
S3_ENV = {"access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY"}
MLFLOW_ENV = {"tracking_username": "MLFLOW_TRACKING_USERNAME", "tracking_password": "MLFLOW_TRACKING_PASSWORD"}


def synth_tasks(cfg: LWSConfig, c, config_json, cluster):  # noqa: ANN001, ANN201
    """The synthesize step: one task, or (``data.shards`` > 1, ``data.shard_fanout=parallel_for``) one task
    per shard under ``dsl.ParallelFor`` (``data.shard_parallelism`` at once) whose fan-in passes only the
    shards' paths on the workspace PVC to a merge task (one dataset, dedup, summed card). Returns the
    task whose ``dataset`` output and MLflow run id the later steps use.

    ``shard_fanout=in_step`` is the fallback for backends where a ParallelFor inside an ExitHandler fails
    (kubeflow/pipelines#12390): the same shards and merge, run one after another inside the synthesize step.
    """
    d, pc = cfg.data, cfg.pipeline
    if d.shards > 1 and d.shard_fanout == "parallel_for":
        with dsl.ParallelFor(items=list(range(d.shards)), parallelism=d.shard_parallelism) as k:
            shard = cluster(c.synthesize_shard(config_json=config_json, shard=k, shards=d.shards))
            shard.set_caching_options(pc.caching)  # a shard is cached by its inputs: config view + index
        synth = cluster(c.merge_shards(config_json=config_json, shard_paths=dsl.Collected(shard.output)))
    else:
        synth = cluster(c.synthesize(config_json=config_json))
    synth.set_caching_options(pc.caching)
    return synth


def build_synth_pipeline(cfg: LWSConfig):  # noqa: ANN201
    """Synthesis alone (the same tasks as the retraining pipeline's first step), for a dataset without a model."""
    c = build_components(cfg.pipeline.base_image, cfg.pipeline.train_image)
    default_config = json.dumps(cfg.to_dict(), sort_keys=True)

    @dsl.pipeline(name=f"{PIPELINE_NAME}-synthesize", description="LWS data synthesis (sharded when data.shards > 1).")
    def lws_synth_pipeline(config_json: str = default_config) -> Dataset:
        return synth_tasks(cfg, c, config_json, lambda t: t).outputs["dataset"]

    return lws_synth_pipeline


def build_pipeline(cfg: LWSConfig):  # noqa: ANN201
    """Return the pipeline function for ``cfg`` (its JSON is the default of the ``config_json`` parameter)."""
    c = build_components(cfg.pipeline.base_image, cfg.pipeline.train_image)
    pc = cfg.pipeline
    default_config = json.dumps(cfg.to_dict(), sort_keys=True)

    def cluster(task, gpu: bool = False):  # noqa: ANN001, ANN202
        """Secrets, volume, requests/limits (``pipeline.resources``) and retries every task needs on a cluster; GPU placement for training."""
        kubernetes.use_secret_as_env(task, secret_name=pc.s3_secret, secret_key_to_env=S3_ENV, optional=True)
        kubernetes.use_secret_as_env(task, secret_name=pc.mlflow_secret, secret_key_to_env=MLFLOW_ENV, optional=True)
        kubernetes.mount_pvc(task, pvc_name=pc.pvc_name, mount_path=CHECKPOINT_MOUNT)
        res = pc.resources.get(task.component_spec.name.replace("-", "_"))
        if res is not None:
            for value, setter in (
                (res.cpu_request, task.set_cpu_request), (res.cpu_limit, task.set_cpu_limit),
                (res.memory_request, task.set_memory_request), (res.memory_limit, task.set_memory_limit),
            ):
                if value is not None:
                    setter(value)
        if pc.retries:
            task.set_retry(num_retries=pc.retries, backoff_duration="30s", backoff_factor=2.0)
        if gpu and pc.accelerator_count > 0:
            task.set_accelerator_type(pc.accelerator_type)
            task.set_accelerator_limit(pc.accelerator_count)
            for key in pc.gpu_tolerations:
                kubernetes.add_toleration(task, key=key, operator="Exists", effect="NoSchedule")
            for k, v in pc.gpu_node_selector.items():
                kubernetes.add_node_selector(task, label_key=k, label_value=v)
        return task

    @dsl.pipeline(name=PIPELINE_NAME, description="LWS retraining: synthesize, version, pretrain, train, evaluate, register/promote.")
    def lws_pipeline(config_json: str = default_config, run_tag: str = "") -> None:
        """``run_tag`` names the MLflow parent run; empty (recurring runs) means the KFP job id."""
        exit_task = c.finalize(config_json=config_json, run_tag=run_tag, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        exit_task.set_caching_options(False)
        with dsl.ExitHandler(exit_task, name="mark-mlflow-run"):
            # each cached step gets only the config sections it depends on, so KFP's cache
            # (keyed on inputs) reruns exactly the steps a config change affects
            views = c.step_configs(config_json=config_json)
            views.set_caching_options(pc.caching)
            synth = synth_tasks(cfg, c, views.outputs["synthesize"], cluster)
            version = cluster(c.version_data(config_json=config_json, dataset=synth.outputs["dataset"]))
            version.set_caching_options(False)
            # the stand-ins for a pretrained LLM and speech encoder (each skipped when model.backbone_path /
            # model.encoder_path names a real checkpoint); the backbone needs no dataset, so it runs beside synthesize
            backbone = cluster(c.pretrain_backbone(config_json=views.outputs["pretrain_backbone"]))
            backbone.set_caching_options(pc.caching)
            encoder = cluster(c.pretrain_encoder(config_json=views.outputs["pretrain_encoder"], dataset=synth.outputs["dataset"]))
            encoder.set_caching_options(pc.caching)
            # With the TrainJob launcher the step pod only submits and waits: the GPUs go to the TrainJob.
            trained = cluster(
                c.train(
                    config_json=views.outputs["train"],
                    dataset=synth.outputs["dataset"],
                    backbone=backbone.outputs["backbone"],
                    encoder=encoder.outputs["encoder"],
                ),
                gpu=pc.train_launcher == "local",
            )
            trained.set_caching_options(pc.caching)
            trained.after(version)
            evaluated = cluster(
                c.evaluate(config_json=views.outputs["evaluate"], model=trained.outputs["model"], dataset=synth.outputs["dataset"])
            )
            evaluated.set_caching_options(pc.caching)
            reg = cluster(
                c.register(
                    config_json=config_json,
                    run_tag=run_tag,
                    job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                    model=trained.outputs["model"],
                    eval_dir=evaluated.outputs["eval_dir"],
                    backbone=backbone.outputs["backbone"],
                    encoder=encoder.outputs["encoder"],
                    dataset_hash=version.output,
                    synth_run=synth.outputs["Output"],
                    backbone_run=backbone.outputs["Output"],
                    encoder_run=encoder.outputs["Output"],
                    train_run=trained.outputs["Output"],
                    eval_run=evaluated.outputs["Output"],
                )
            )
            reg.set_caching_options(False)

    return lws_pipeline


def cluster_config(cfg: LWSConfig) -> LWSConfig:
    """The config a cluster run uses by default: a relative workspace (the laptop's ``.lws``) moves onto
    the PVC every task mounts, so the DVC repo, caches and checkpoints outlive the pods."""
    from pathlib import PurePosixPath

    if PurePosixPath(cfg.pipeline.workspace).is_absolute():
        return cfg
    return cfg.with_overrides({"pipeline.workspace": f"{CHECKPOINT_MOUNT}/{PurePosixPath(cfg.pipeline.workspace).name.lstrip('.') or 'lws'}"})


def compile_pipeline(cfg: LWSConfig, path: str) -> str:
    """Compile for a cluster (the config's workspace mapped onto the PVC; see :func:`cluster_config`)."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(cluster_config(cfg)), package_path=path)
    return path

"""Config section `pipeline`: where the workflow runs and what a cluster needs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lws_core.config.base import Section

# A Kubernetes resource quantity ("2", "500m", "6Gi", "1.5G"): checked here so a typo fails at config load
# with the key's name, not at submit time inside KFP's SDK or, worse, at pod admission on the cluster.
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
# the steps that run in their own pods with the cluster settings (step_configs and the exit handler's
# finalize are tiny bookkeeping tasks and take the cluster's defaults, so they are not accepted here)
STEPS = (
    "synthesize", "synthesize_shard", "merge_shards", "version_data", "pretrain_backbone",
    "pretrain_encoder", "train", "evaluate", "register",
)


class StepResources(Section):
    """Requests and limits of one step's pod. Empty fields are left to the cluster's defaults (LimitRange)."""

    cpu_request: str | None = Field(None, pattern=QUANTITY)
    cpu_limit: str | None = Field(None, pattern=QUANTITY)
    memory_request: str | None = Field(None, pattern=QUANTITY)
    memory_limit: str | None = Field(None, pattern=QUANTITY)


def _default_resources() -> dict[str, StepResources]:
    """Requests from the peak RSS each step reached on the default config, rounded up to whole GiB
    (benchmarks/step_memory.sh; benchmarks/results/pipeline.md, "Peak memory per step"), at the default 4,000
    sessions (stop 36): synthesize 1.6 GB, backbone 1.3 GB, encoder 6.7-6.9 GB, train 1.6 GB, evaluate
    0.9 GB. So the scheduler never puts an encoder stage on a node without room for it. No limits by default: a limit set too tight kills a pod hours into a
    run, and real checkpoints need far more than the tiny preset; set them per cluster."""
    return {
        "synthesize": StepResources(cpu_request="2", memory_request="2Gi"),
        "pretrain_backbone": StepResources(cpu_request="2", memory_request="2Gi"),
        "pretrain_encoder": StepResources(cpu_request="2", memory_request="7Gi"),
        "train": StepResources(cpu_request="2", memory_request="2Gi"),
        "evaluate": StepResources(cpu_request="2", memory_request="1Gi"),
    }


class PipelineConfig(Section):
    runner: Literal["local", "kfp"] = "local"
    workspace: str = Field(".lws", description="Local working directory for the embedded run.")
    host: str | None = Field(None, description="KFP API URL (runner=kfp).")
    base_image: str = "ghcr.io/lws-project/lws-cpu:0.1.0"
    train_image: str = "ghcr.io/lws-project/lws-cuda:0.1.0"
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_count: int = Field(1, ge=0)
    gpu_node_selector: dict[str, str] = Field(default_factory=dict)
    gpu_tolerations: list[str] = Field(default_factory=lambda: ["nvidia.com/gpu"])
    pvc_name: str = "lws-work"
    s3_secret: str = "lws-s3"
    mlflow_secret: str = "lws-mlflow"
    cron: str = "0 0 3 * * *"
    caching: bool = True
    retries: int = Field(1, ge=0)
    # Where the pipeline's train step trains: in its own pod ("local", the default), or by handing off
    # to a Kubeflow Trainer TrainJob (multi-node torchrun + DeepSpeed) that it creates and waits for.
    train_launcher: Literal["local", "trainjob"] = Field(
        "local", description="local: train in the step's process; trainjob: create a Kubeflow Trainer TrainJob and wait for it."
    )
    train_num_nodes: int = Field(1, ge=1, description="TrainJob nodes (train_launcher=trainjob); each gets accelerator_count GPUs.")
    trainjob_namespace: str = Field("lws", min_length=1, description="Namespace the TrainJob is created in (the overlays' namespace).")
    trainjob_runtime: str = Field("torch-distributed", min_length=1, description="ClusterTrainingRuntime the TrainJob refers to.")
    trainjob_timeout_s: float = Field(86400.0, gt=0, description="Give up (and delete the TrainJob) after this long.")
    trainjob_poll_s: float = Field(30.0, gt=0, description="Seconds between TrainJob status reads.")
    kube_api_url: str | None = Field(
        None, description="Kubernetes API URL for the hand-off; empty: the pod's service account, else ~/.kube/config."
    )
    resources: dict[str, StepResources] = Field(
        default_factory=_default_resources,
        description="Per-step pod requests/limits on a cluster, keyed by step name; the local runner ignores them.",
    )

    @field_validator("resources")
    @classmethod
    def _known_steps(cls, v: dict[str, StepResources]) -> dict[str, StepResources]:
        unknown = sorted(set(v) - set(STEPS))
        if unknown:
            raise ValueError(f"unknown step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}")
        return v

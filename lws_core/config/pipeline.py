"""Config section `pipeline`: where the workflow runs and what a cluster needs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lws_core.config.base import Section


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

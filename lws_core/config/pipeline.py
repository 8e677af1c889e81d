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

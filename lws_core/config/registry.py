"""Config section `registry`: MLflow tracking/registry, DVC remote, promotion gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lws_core.config.base import Section


class GateRule(Section):
    """One gated metric: the challenger must be no worse than the champion (within tolerance)."""

    metric: str
    direction: Literal["higher", "lower"] = "higher"
    tolerance: float = Field(0.0, ge=0.0)
    required: bool = Field(
        True,
        description="False: the rule is skipped when neither model reports the metric (e.g. the FDB probe is "
        "off); a challenger that lacks a metric its champion has still fails.",
    )


class RegistryConfig(Section):
    model_name: str = "lws"
    tracking_uri: str | None = Field(None, description="MLflow tracking URI (None = sqlite file in the workspace).")
    experiment: str = "lws-retraining"
    artifact_location: str | None = Field(
        None, description="Artifact root of a new experiment, e.g. s3://bucket/mlflow (None = workspace folder / server default)."
    )
    dvc_remote: str | None = Field(None, description="DVC remote URL: a folder or s3://bucket/path (None = workspace folder).")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint for DVC/MLflow artifacts.")
    gate: list[GateRule] = Field(
        default_factory=lambda: [
            GateRule(metric="schema_valid_rate", direction="higher", tolerance=0.0),
            GateRule(metric="state_accuracy", direction="higher", tolerance=0.01),
            GateRule(metric="task_accuracy", direction="higher", tolerance=0.02),
            GateRule(metric="consistency_rate", direction="higher", tolerance=0.05, required=False),
            GateRule(metric="fdb_turn_taking_tor", direction="higher", tolerance=0.05, required=False),
            GateRule(metric="fdb_turn_taking_latency_s", direction="lower", tolerance=0.25, required=False),
        ]
    )

"""Config section `registry`: MLflow tracking/registry, DVC remote, promotion gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lws_core.config.base import Section


class GateRule(Section):
    """One gated metric, compared on paired per-session scores (see ``lws_core.ops.gate``).

    The challenger passes the rule when the ``gate_confidence`` interval of (challenger - champion),
    oriented so that positive is better, has its lower end at or above ``-tolerance`` (not worse by
    more than the tolerance, with that confidence), and its own value is on the right side of ``floor``.
    """

    metric: str
    direction: Literal["higher", "lower"] = "higher"
    tolerance: float = Field(
        0.0, ge=0.0, description="Largest regression the interval may still allow (a margin of practical equivalence)."
    )
    floor: float | None = Field(
        None, description="Absolute bound on the challenger's own value (a minimum if higher is better, a maximum if "
        "lower), so quality cannot slide one tolerance per promotion; None: no floor."
    )
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
            GateRule(metric="state_accuracy", direction="higher", tolerance=0.02, floor=0.8),
            GateRule(metric="task_accuracy", direction="higher", tolerance=0.15),
            GateRule(metric="consistency_rate", direction="higher", tolerance=0.1, required=False),
            GateRule(metric="stream_task_accuracy", direction="higher", tolerance=0.15, required=False),
            GateRule(metric="fdb_turn_taking_tor", direction="higher", tolerance=0.25, required=False),
            GateRule(metric="fdb_pause_tor", direction="lower", tolerance=0.25, required=False),
            GateRule(metric="fdb_backchannel_tor", direction="lower", tolerance=0.25, required=False),
            GateRule(metric="fdb_turn_taking_latency_s", direction="lower", tolerance=0.5, required=False),
        ]
    )
    gate_confidence: float = Field(
        0.95, gt=0.5, lt=1.0, description="Confidence of the gate's paired-bootstrap intervals (two-sided)."
    )
    gate_resamples: int = Field(2000, ge=200, description="Bootstrap resamples per gated metric.")
    gate_lease_s: float = Field(
        120.0, gt=0.0, description="A registration whose gate has not signalled for this long is taken as dead and no "
        "longer holds up later ones (the cross-pod gate queue)."
    )

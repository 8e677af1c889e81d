"""MLflow model registry: register an LWS model with lineage, gate it, move aliases — never partially."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lws_core.errors import InputError, ServiceError
from lws_core.ops.gate import GateDecision, decide
from lws_core.ops.retry import with_retries
from lws_core.ops.workspace import Workspace, file_lock, tracking_uri

CHAMPION = "champion"
CHALLENGER = "challenger"
METRIC_TAG = "metric."


@dataclass
class Registration:
    name: str
    version: str
    aliases: list[str]
    decision: GateDecision
    model_uri: str


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "numpy", "soundfile", "espeakng-loader", "mlflow")]


def _champion_metrics(client, name: str) -> tuple[str | None, dict[str, Any] | None]:  # noqa: ANN001
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # noqa: BLE001 - no champion yet (MLflow raises RestException)
        return None, None
    metrics = {k[len(METRIC_TAG) :]: v for k, v in mv.tags.items() if k.startswith(METRIC_TAG)}
    return mv.version, metrics


def register_model(
    cfg,  # noqa: ANN001
    model_dir: str | Path,
    metrics: dict[str, Any],
    lineage: dict[str, str],
    run_id: str | None = None,
) -> Registration:
    """Log the model as a pyfunc, register a version, tag lineage + metrics + gate decision, then move aliases."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from lws_core.ops.pyfunc import ARTIFACT_KEY, LWSPyfunc

    model_dir = Path(model_dir)
    if not (model_dir / "lws_model.json").is_file():
        raise InputError(f"not an LWS model directory: {model_dir}")
    uri = tracking_uri(cfg)
    name = cfg.registry.model_name
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)

    def log() -> Any:
        with mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run():
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=LWSPyfunc(),
                artifacts={ARTIFACT_KEY: str(model_dir)},
                pip_requirements=_pip_requirements(),
            )

    info = with_retries(log, "MLflow model logging", uri)
    lock = Workspace.from_config(cfg).root / "registry.lock"
    with file_lock(lock):
        try:
            client.create_registered_model(name)
        except Exception:  # noqa: BLE001 - already exists
            pass
        mv = with_retries(
            lambda: client.create_model_version(name, info.model_uri, run_id=run_id, model_id=getattr(info, "model_id", None)),
            "MLflow registration",
            uri,
        )
        champ_version, champ_metrics = _champion_metrics(client, name)
        decision = decide(metrics, champ_metrics, cfg.registry.gate)
        tags = {**{f"lineage.{k}": str(v) for k, v in lineage.items()}}
        for k, v in metrics.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v)):
                tags[METRIC_TAG + k] = repr(float(v))
        tags["gate.decision"] = "promote" if decision.promote else "reject"
        tags["gate.reasons"] = json.dumps(decision.reasons)[:5000]
        tags["gate.compared_with"] = champ_version or "none"
        # every tag first; aliases last, so a failure leaves no alias moved
        for k, v in tags.items():
            client.set_model_version_tag(name, mv.version, k, v)
        client.set_registered_model_alias(name, CHALLENGER, mv.version)
        aliases = [CHALLENGER]
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION, mv.version)
            aliases.append(CHAMPION)
    return Registration(name, str(mv.version), aliases, decision, f"models:/{name}/{mv.version}")


def resolve_model_uri(uri: str, cfg=None) -> Path:  # noqa: ANN001
    """A model directory, or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` downloaded from the registry."""
    if not uri.startswith("models:/"):
        p = Path(uri)
        if not p.is_dir():
            raise InputError(f"model directory not found: {p}")
        return p
    import os

    import mlflow

    from lws_core.config import load_config

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cfg = cfg or load_config()
    reg = tracking_uri(cfg)
    mlflow.set_tracking_uri(reg)
    mlflow.set_registry_uri(reg)
    safe = uri.replace("models:/", "").replace("/", "_").replace("@", "_")
    dst = Workspace.from_config(cfg).cache / safe
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0][:200]
        if "not found" in msg.lower() or "RESOURCE_DOES_NOT_EXIST" in msg or "alias" in msg.lower():
            raise InputError(f"{uri}: no such registered model/alias in {reg} ({msg})") from None
        raise ServiceError(f"{uri}: cannot download from {reg} ({msg})") from None
    found = sorted(p.parent for p in (local / "artifacts").glob("*/lws_model.json"))
    if not found:
        raise InputError(f"{uri}: registered artifact is not an LWS pyfunc model")
    return found[0]

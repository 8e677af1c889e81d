"""MLflow model registry: register an LWS model with lineage, gate it, move aliases — never partially."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lws_core.errors import InputError, ServiceError
from lws_core.ops.faults import inject_fault
from lws_core.ops.gate import GateDecision, decide
from lws_core.ops.retry import with_retries
from lws_core.ops.workspace import (
    Workspace,
    artifact_endpoint,
    configure_mlflow_env,
    ensure_store,
    file_lock,
    tracking_uri,
)

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
    tags: dict[str, str] | None = None,
) -> Registration:
    """Log the model as a pyfunc, register a version, tag lineage + metrics + gate decision (and ``tags``),
    then move aliases."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from lws_core.ops.pyfunc import ARTIFACT_KEY, LWSPyfunc

    model_dir = Path(model_dir)
    if not (model_dir / "lws_model.json").is_file():
        raise InputError(f"not an LWS model directory: {model_dir}")
    configure_mlflow_env(cfg)
    uri = tracking_uri(cfg)
    ensure_store(uri)
    name = cfg.registry.model_name
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)

    if run_id is None:  # a run of its own in the project's experiment (never MLflow's ./mlruns default)
        from lws_core.ops.tracking import Tracker

        tr = Tracker(cfg)
        run_id = tr.client.create_run(tr.experiment_id(), run_name="register", tags={"lws.step": "register"}).info.run_id

    def log() -> Any:
        with mlflow.start_run(run_id=run_id):
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=LWSPyfunc(),
                artifacts={ARTIFACT_KEY: str(model_dir)},
                pip_requirements=_pip_requirements(),
            )

    info = with_retries(log, "MLflow model logging", artifact_endpoint(cfg))
    lock = Workspace.from_config(cfg).root / "registry.lock"
    with file_lock(lock):
        with_retries(lambda: _ensure_registered_model(client, name), "MLflow registry", uri)
        mv = with_retries(lambda: client.create_model_version(name, info.model_uri, run_id=run_id, model_id=getattr(info, "model_id", None)), "MLflow registration", uri)
        previous_challenger = _alias_version(client, name, CHALLENGER)
        moved = False
        try:
            inject_fault("register")
            champ_version, champ_metrics = _champion_metrics(client, name)
            decision = decide(metrics, champ_metrics, cfg.registry.gate)
            extra = tags or {}
            tags = {f"lineage.{k}": str(v) for k, v in lineage.items()}
            tags.update({k: str(v) for k, v in extra.items()})
            for k, v in metrics.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v)):
                    tags[METRIC_TAG + k] = repr(float(v))
            tags["gate.decision"] = "promote" if decision.promote else "reject"
            tags["gate.reasons"] = json.dumps(decision.reasons)[:5000]
            tags["gate.compared_with"] = champ_version or "none"
            # every tag first; aliases last, so a failure leaves no alias moved
            for k, v in tags.items():
                client.set_model_version_tag(name, mv.version, k, v)
            moved = True
            client.set_registered_model_alias(name, CHALLENGER, mv.version)
            aliases = [CHALLENGER]
            if decision.promote:
                client.set_registered_model_alias(name, CHAMPION, mv.version)
                aliases.append(CHAMPION)
        except BaseException:
            _roll_back(client, name, mv.version, previous_challenger if moved else None)
            raise
    return Registration(name, str(mv.version), aliases, decision, f"models:/{name}/{mv.version}")


def _ensure_registered_model(client, name: str) -> None:  # noqa: ANN001
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name)
        except MlflowException as e2:  # another process created it first
            if e2.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def _alias_version(client, name: str, alias: str) -> str | None:  # noqa: ANN001
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - alias not set
        return None


def _roll_back(client, name: str, version: str, previous_challenger: str | None) -> None:  # noqa: ANN001
    """Undo a registration that failed midway: challenger alias back where it was, the version deleted.
    The champion alias moves last of all, so it never needs undoing."""
    try:
        if previous_challenger:
            client.set_registered_model_alias(name, CHALLENGER, previous_challenger)
        elif _alias_version(client, name, CHALLENGER) == str(version):
            client.delete_registered_model_alias(name, CHALLENGER)
        client.delete_model_version(name, version)
    except Exception:  # noqa: BLE001 - best effort; the original error is what the user must see
        pass


def resolve_model_uri(uri: str | Path, cfg=None) -> Path:  # noqa: ANN001
    """A model directory as is, or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` from the registry.

    An alias is resolved to its version first; each version is downloaded once into
    ``<workspace>/cache/models/NAME/VERSION`` (temp dir + rename, so a crash never leaves
    a half copy that looks complete) and later calls for it load offline from there. An alias
    also remembers the version it last resolved to, so with the registry unreachable (server
    down, no network) ``models:/NAME@champion`` loads the champion this machine last saw, with
    a warning on stderr; without such a copy the registry's ServiceError stands.
    """
    uri = str(uri)
    if not uri.startswith("models:/"):
        p = Path(uri)
        if not p.is_dir():
            raise InputError(f"model directory not found: {p}")
        return p
    import os
    import shutil

    import mlflow
    from mlflow.tracking import MlflowClient

    from lws_core.config import load_config

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cfg = cfg or load_config()
    configure_mlflow_env(cfg)
    reg = tracking_uri(cfg)
    ensure_store(reg)
    ref = uri[len("models:/") :]
    cache = Workspace.from_config(cfg).cache / "models"
    alias = None
    if "@" in ref:
        name, alias = ref.split("@", 1)
        try:
            version = _alias_version_checked(MlflowClient(reg, reg), name, alias, uri, reg)
        except ServiceError as e:
            version = _cached_alias(cache / name, alias)
            if version is None:
                raise
            print(f"warning: {e}; using the cached {name}@{alias} (version {version})", file=sys.stderr)
    elif "/" in ref:
        name, version = ref.split("/", 1)
    else:
        raise InputError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    dst = cache / name / str(version)
    if not (dst / "artifacts").is_dir():
        mlflow.set_tracking_uri(reg)
        mlflow.set_registry_uri(reg)
        tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with_retries(
                lambda: mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(tmp)),
                f"download of {uri}",
                reg,
                attempts=3,
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if dst.exists():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(dst)
    found = sorted(p.parent for p in (dst / "artifacts").glob("*/lws_model.json"))
    if not found:
        raise InputError(f"{uri}: registered artifact is not an LWS pyfunc model")
    if alias is not None:
        _remember_alias(cache / name, alias, str(version))
    return found[0]


def _alias_file(model_cache: Path, alias: str) -> Path:
    return model_cache / "aliases" / alias


def _remember_alias(model_cache: Path, alias: str, version: str) -> None:
    """Record which version ``alias`` pointed to when last resolved, so ``models:/NAME@ALIAS`` still
    loads (that same, complete local copy) when the registry is unreachable. Temp file + rename."""
    import os

    f = _alias_file(model_cache, alias)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f".{f.name}.tmp-{os.getpid()}")
    tmp.write_text(version)
    tmp.replace(f)


def _cached_alias(model_cache: Path, alias: str) -> str | None:
    """The version ``alias`` last resolved to, if its local copy is complete; else None."""
    f = _alias_file(model_cache, alias)
    if not f.is_file():
        return None
    version = f.read_text().strip()
    return version if version and (model_cache / version / "artifacts").is_dir() else None


def _alias_version_checked(client, name: str, alias: str, uri: str, reg: str) -> str:  # noqa: ANN001
    from mlflow.exceptions import MlflowException

    def get() -> str:
        try:
            return str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise InputError(f"{uri}: no model {name!r} with alias {alias!r} in {reg}") from None
            raise

    return with_retries(get, f"lookup of {uri}", reg, attempts=3)

"""MLflow tracking: one parent run per pipeline run, one nested run per step, per-channel loss curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lws_core.ops.retry import with_retries
from lws_core.ops.workspace import artifact_location, configure_mlflow_env, ensure_store, tracking_uri

RUN_TAG = "lws.pipeline_run"
COMPLETED_TAG = "lws.completed"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


class _RetryingClient:
    """An MlflowClient whose every call is retried with backoff (a server restarting, SQLite's
    "database is locked" under two concurrent pipeline runs) before failing with a ServiceError."""

    def __init__(self, client, uri: str) -> None:  # noqa: ANN001
        self._client = client
        self._uri = uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return with_retries(lambda: attr(*args, **kwargs), f"MLflow {name}", self._uri)

        return call


class Tracker:
    """Thin wrapper over MlflowClient with the project's conventions (and retries on the server)."""

    def __init__(self, cfg) -> None:  # noqa: ANN001
        from mlflow.tracking import MlflowClient

        configure_mlflow_env(cfg)
        self.cfg = cfg
        self.uri = tracking_uri(cfg)
        ensure_store(self.uri)
        self.client = _RetryingClient(MlflowClient(tracking_uri=self.uri, registry_uri=self.uri), self.uri)

    def experiment_id(self) -> str:
        """Create the experiment once, up front (parallel first use of SQLite can lock)."""
        name = self.cfg.registry.experiment
        raw = self.client._client  # one retry loop around the whole get-or-create, not one per call

        def get_or_create() -> str:
            exp = raw.get_experiment_by_name(name)
            if exp is not None:
                return exp.experiment_id
            location = artifact_location(self.cfg)
            try:
                return raw.create_experiment(name, artifact_location=location)
            except Exception:  # noqa: BLE001 - another process created it first
                exp = raw.get_experiment_by_name(name)
                if exp is None:
                    raise
                return exp.experiment_id

        return with_retries(get_or_create, "MLflow experiment setup", self.uri)

    def start_parent(self, run_tag: str, run_name: str | None = None) -> str:
        """The pipeline's parent run (found again later by its ``lws.pipeline_run`` tag)."""
        existing = self.find_parent(run_tag)
        if existing:
            return existing
        run = self.client.create_run(
            self.experiment_id(),
            run_name=run_name or f"pipeline-{run_tag}",
            tags={RUN_TAG: run_tag, "lws.role": "pipeline"},
        )
        params = _flatten(self.cfg.to_dict())
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run.info.run_id, params=items[i : i + 100])
        self.client.set_tag(run.info.run_id, "lws.config_digest", self.cfg.digest())
        return run.info.run_id

    def find_parent(self, run_tag: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id()],
            filter_string=f"tags.`{RUN_TAG}` = '{run_tag}' and tags.`lws.role` = 'pipeline'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def start_step(self, parent_id: str, step: str) -> str:
        parent = self.client.get_run(parent_id)
        tag = parent.data.tags.get(RUN_TAG, "")
        run = self.client.create_run(
            parent.info.experiment_id,
            run_name=step,
            tags={"mlflow.parentRunId": parent_id, RUN_TAG: tag, "lws.step": step},
        )
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, Any], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [
            Metric(k, float(v), ts, step or 0)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def log_dir(self, run_id: str, directory: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(directory), artifact_path)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)


class MLflowTrainCallback:
    """Adapter from lws_core.train's callback interface to MLflow (per-channel loss curves)."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.tracker.log_metrics(self.run_id, metrics, step=step)

    def on_end(self, summary) -> None:  # noqa: ANN001
        d = summary.to_dict()
        self.tracker.log_metrics(self.run_id, {f"val_loss_{k}": v for k, v in d["val_losses"].items()})
        self.tracker.log_metrics(
            self.run_id,
            {
                k: d[k]
                for k in ("train_seconds", "tokens_per_s", "train_loss", "parameters")
                if d.get(k) is not None
            },
        )
        if d.get("val_state_accuracy") is not None:
            self.tracker.log_metrics(self.run_id, {"val_state_accuracy": d["val_state_accuracy"]})

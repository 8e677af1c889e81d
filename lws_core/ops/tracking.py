"""MLflow tracking: one parent run per pipeline run, one nested run per step, per-channel loss curves."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from lws_core.ops.retry import with_retries
from lws_core.ops.workspace import (
    artifact_endpoint,
    artifact_location,
    configure_mlflow_env,
    ensure_store,
    tracking_uri,
)

RUN_TAG = "lws.pipeline_run"
COMPLETED_TAG = "lws.completed"
# set by the local runner for its task subprocesses: the pipeline run a step runs for. Not a component
# input: that would enter the cached steps' cache keys and no rerun would ever be served from cache.
PIPELINE_RUN_ENV = "LWS_PIPELINE_RUN"
# MLflow's system-metrics monitor samples every N seconds (MLflow's env var overrides); short, because
# a step shorter than one interval logs nothing, and a tiny pipeline's steps take seconds
SYSTEM_METRICS_INTERVAL_S = 2.0


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


# MLflow's UI picks the experiment's landing view from this tag; untagged, 3.x may open on the GenAI
# traces view, which is empty for a training pipeline. The value its UI writes for "machine learning".
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


# MLflow 3.17's UI chooses between its GenAI and model-training views by a per-browser setting that
# defaults to GenAI and ignores the experiment's kind tag; this query parameter overrides it per link
ML_VIEW_QUERY = "workflowType=machine_learning"


def ui_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """A link into the MLflow UI that opens on the training runs (or on ``run_id``'s page), not on the
    GenAI traces overview: every link the project prints goes through here."""
    path = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base.rstrip('/')}/{path}?{ML_VIEW_QUERY}"


def get_or_create_experiment(client, cfg) -> str:  # noqa: ANN001
    """The project's experiment id, created on first use (with the configured artifact location) and
    tagged so the MLflow UI opens it on its training runs. An experiment made by an older version (or
    by hand) gets the tag the first time it is used."""
    name = cfg.registry.experiment
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(
                name, artifact_location=artifact_location(cfg), tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except Exception:  # noqa: BLE001 - another process created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    kind = exp.tags.get(EXPERIMENT_KIND_TAG)
    if kind is None or kind.endswith("_inferred") or kind == "no_inferred_type":  # a person's explicit choice stays
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


class _RetryingClient:
    """An MlflowClient whose every call is retried with backoff (a server restarting, SQLite's
    "database is locked" under two concurrent pipeline runs) before failing with a ServiceError."""

    def __init__(self, client, uri: str, artifacts: str | None = None) -> None:  # noqa: ANN001
        self._client = client
        self._uri = uri
        self._artifacts = artifacts or uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        # artifact transfers go to the artifact store (S3), which is what a failure message must name
        endpoint = self._artifacts if "artifact" in name else self._uri

        def call(*args: Any, **kwargs: Any) -> Any:
            return with_retries(lambda: attr(*args, **kwargs), f"MLflow {name}", endpoint)

        return call


class Tracker:
    """Thin wrapper over MlflowClient with the project's conventions (and retries on the server)."""

    def __init__(self, cfg) -> None:  # noqa: ANN001
        from mlflow.tracking import MlflowClient

        configure_mlflow_env(cfg)
        self.cfg = cfg
        self.uri = tracking_uri(cfg)
        ensure_store(self.uri)
        self.client = _RetryingClient(
            MlflowClient(tracking_uri=self.uri, registry_uri=self.uri), self.uri, artifact_endpoint(cfg)
        )
        self._monitors: dict[str, Any] = {}

    def experiment_id(self) -> str:
        """Create the experiment once, up front (parallel first use of SQLite can lock)."""
        raw = self.client._client  # one retry loop around the whole get-or-create, not one per call
        return with_retries(lambda: get_or_create_experiment(raw, self.cfg), "MLflow experiment setup", self.uri)

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
        self.log_params(run.info.run_id, self.cfg.to_dict())
        self.client.set_tag(run.info.run_id, "lws.config_digest", self.cfg.digest())
        return run.info.run_id

    def find_parent(self, run_tag: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id()],
            filter_string=f"tags.`{RUN_TAG}` = '{run_tag}' and tags.`lws.role` = 'pipeline'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def start_step(self, parent_id: str, step: str, sections: tuple[str, ...] = ()) -> str:
        """A step run nested under ``parent_id``, with its config ``sections`` as params and system metrics."""
        parent = self.client.get_run(parent_id)
        tag = parent.data.tags.get(RUN_TAG, "")
        run = self.client.create_run(
            parent.info.experiment_id,
            run_name=step,
            tags={"mlflow.parentRunId": parent_id, RUN_TAG: tag, "lws.step": step},
        )
        self.log_sections(run.info.run_id, sections)
        self.start_system_metrics(run.info.run_id)
        return run.info.run_id

    def log_params(self, run_id: str, values: dict[str, Any]) -> None:
        """Flattened params (``section.key``), in batches MLflow accepts."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in _flatten(values).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_sections(self, run_id: str, sections: tuple[str, ...]) -> None:
        """A step run's own config sections (or ``section.key`` entries) as its params, so a step run alone
        says what it ran with (the parent holds the whole config; a cached step's run is shared by several parents)."""
        from lws_core.config import pick

        self.log_params(run_id, pick(self.cfg.to_dict(), sections))

    def start_system_metrics(self, run_id: str) -> None:
        """MLflow's own system-metrics monitor (CPU, memory, disk, network, GPU when present; psutil)
        on a run created through the client: it samples on a thread until :meth:`finish`. A monitor
        that cannot start (no psutil) only costs the metrics, never the step."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            mon = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, tracking_uri=self.uri)
            mon.start()
        except Exception:  # noqa: BLE001 - optional telemetry
            return
        self._monitors[run_id] = mon

    def nest_orphans(self, parent_id: str, run_tag: str) -> list[str]:
        """File step runs that ran for ``run_tag`` but were never nested (the pipeline failed before the
        register step could) under the parent; returns their ids."""
        runs = self.client.search_runs(
            [self.experiment_id()], filter_string=f"tags.`{RUN_TAG}` = '{run_tag}'", max_results=100
        )
        moved = []
        for r in runs:
            t = r.data.tags
            if t.get("lws.role") == "pipeline" or "lws.step" not in t or t.get("mlflow.parentRunId"):
                continue
            self.client.set_tag(r.info.run_id, "mlflow.parentRunId", parent_id)
            if r.info.status == "RUNNING":  # its task died without ending it (killed pod, OOM)
                self.client.set_terminated(r.info.run_id, "FAILED")
            moved.append(r.info.run_id)
        return moved

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
        mon = self._monitors.pop(run_id, None)
        if mon is not None:
            mon.finish()  # flushes its last samples before the run ends
        self.client.set_terminated(run_id, status)


def link_model_metrics(client, run_id: str, model_id: str, metrics: dict[str, Any]) -> int:  # noqa: ANN001
    """Log the evaluation's finite numbers on ``run_id`` linked to the MLflow 3 logged model ``model_id``
    (``mlflow.pyfunc.log_model(...).model_id``): the model's own page then lists them, and the
    experiment's Models tab can compare models by them. Returns how many were linked.

    For the registration step to call right after it logs the model (a metric is linked when it is
    logged; an already-logged metric cannot be linked afterwards)."""
    import time

    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    items = [
        Metric(k, float(v), ts, 0, model_id=model_id, run_id=run_id)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    ]
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i : i + 500])
    return len(items)


def pipeline_run_from_env() -> str | None:
    """The pipeline run a step runs for, when its runner said (see ``PIPELINE_RUN_ENV``)."""
    return os.environ.get(PIPELINE_RUN_ENV) or None


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

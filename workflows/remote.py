"""Submit the compiled pipeline to a Kubeflow Pipelines API, or schedule it as a recurring run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lws_core.config import LWSConfig
from lws_core.errors import InputError, ServiceError
from lws_core.ops.retry import with_retries
from workflows.local import new_run_tag
from workflows.pipeline import PIPELINE_NAME, compile_pipeline


def _client(host: str):  # noqa: ANN202
    import warnings

    import kfp

    with warnings.catch_warnings():  # "only works with KFP v2.0.0-beta.2 and later": true of every KFP we target
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host)


def cron_ok(cron: str) -> None:
    """Refuse a cron string KFP would reject (it wants 6 fields, seconds first), in one line."""
    if len(cron.split()) != 6:
        raise InputError(f"cron must have 6 fields (seconds first, KFP's format), got {cron!r}; e.g. '0 0 3 * * *'")


def submit(cfg: LWSConfig, host: str, experiment: str | None = None) -> dict[str, str]:
    """Compile and start one run; returns the run id and its tag."""
    tag = new_run_tag().replace("local-", "kfp-")
    with tempfile.TemporaryDirectory() as d:
        path = compile_pipeline(cfg, str(Path(d) / "lws_pipeline.yaml"))

        def go() -> str:
            client = _client(host)
            run = client.create_run_from_pipeline_package(
                path,
                arguments={"run_tag": tag},
                run_name=f"{PIPELINE_NAME}-{tag}",
                experiment_name=experiment or cfg.registry.experiment,
                enable_caching=cfg.pipeline.caching,
            )
            return run.run_id

        run_id = with_retries(go, "KFP run submission", host, attempts=3)
    return {"run_id": run_id, "run_tag": tag}


def schedule(cfg: LWSConfig, host: str, cron: str | None = None, experiment: str | None = None) -> dict[str, str]:
    """A recurring run that retrains on a schedule. Caching is off so each run synthesizes and trains anew;
    each run's MLflow parent is keyed by its KFP job id (run_tag left empty)."""
    cron = cron or cfg.pipeline.cron
    cron_ok(cron)
    with tempfile.TemporaryDirectory() as d:
        path = compile_pipeline(cfg, str(Path(d) / "lws_pipeline.yaml"))

        def go() -> str:
            client = _client(host)
            exp = client.create_experiment(name=experiment or cfg.registry.experiment)
            job = client.create_recurring_run(
                experiment_id=exp.experiment_id,
                job_name=f"{PIPELINE_NAME}-scheduled",
                cron_expression=cron,
                pipeline_package_path=path,
                params={"run_tag": ""},
                enable_caching=False,
                max_concurrency=1,
            )
            return job.recurring_run_id

        try:
            rid = with_retries(go, "KFP recurring run creation", host, attempts=3)
        except ServiceError:
            raise
    return {"recurring_run_id": rid, "cron": cron}

"""Two gates at once: worker processes that register and gate a version in the same instant, trial after
trial, against one real `mlflow server` (registry calls only: no model is trained or logged; the
per-session scores are planted, see ``tests/ops/planted.py``)."""

from __future__ import annotations

from typing import Any


def race_worker(url: str, cfg_dict: dict[str, Any], experiment_id: str, trials: int, worker: int, barrier: Any, results: Any) -> None:
    """For each trial: wait for the other worker, then record scores on a run of its own, create a version
    (with its gate heartbeat) and gate it; report (trial, worker, version, promoted, compared_with)."""
    import os

    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "2"
    from mlflow.tracking import MlflowClient

    from lws_core.config import config_from_dict
    from lws_core.ops import registry
    from tests.ops.planted import planted

    registry.QUEUE_POLL_S = 0.05
    if os.environ.get("LWS_RACE_NO_QUEUE"):  # to show the test can fail: the optimistic check alone, no queue
        registry.wait_for_turn = lambda *a, **k: None
    cfg = config_from_dict(cfg_dict)
    client = MlflowClient(url, url)
    for trial in range(trials):
        name = f"race-{trial}"
        scores = planted(1000 * worker + trial, state=0.92 + 0.01 * worker, task=0.40)
        barrier.wait(timeout=120)
        try:
            run = client.create_run(experiment_id, run_name=f"{name}-w{worker}")
            registry.record_scores(client, run.info.run_id, scores, url)
            mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                             tags={registry.HEARTBEAT: repr(__import__("time").time())})
            decision, aliases = registry.gate_version(cfg, client, name, str(mv.version), scores, endpoint=url)
            results.put((trial, worker, str(mv.version), decision.promote, decision.compared_with, None))
        except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the trial
            results.put((trial, worker, None, False, None, repr(e)))

"""Two pipeline runs finishing at once, as two real processes against one real `mlflow server`: in every
trial exactly one champion remains, no version is lost, and no two promotions were decided against the
same champion (the later gate compared itself with the earlier winner). Registry calls only; the
scores are planted (``tests/ops/planted.py``), no model is trained.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

# 10 trials in `make test` (about 25 s); LWS_RACE_TRIALS=100 for a deeper hunt after touching the gate
TRIALS = int(os.environ.get("LWS_RACE_TRIALS", "10"))


def test_two_concurrent_gates_leave_one_champion_and_lose_no_version(tiny_cfg, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from lws_core.ops import registry
    from tests.ops.planted import planted
    from tests.ops.race import race_worker

    client = MlflowClient(mlflow_server, mlflow_server)
    exp = client.create_experiment(f"race-{tmp_path.name}")
    first: dict[int, str] = {}
    for trial in range(TRIALS):  # each trial: its own model with a champion scored on the same planted set
        name = f"race-{trial}"
        client.create_registered_model(name)
        run = client.create_run(exp)
        registry.record_scores(client, run.info.run_id, planted(0), mlflow_server)
        mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        client.set_registered_model_alias(name, registry.CHAMPION, mv.version)
        first[trial] = str(mv.version)

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    cfg = tiny_cfg.to_dict()
    workers = [ctx.Process(target=race_worker, args=(mlflow_server, cfg, exp, TRIALS, w, barrier, results)) for w in (0, 1)]
    t0 = time.time()
    for p in workers:
        p.start()
    rows = [results.get(timeout=600) for _ in range(2 * TRIALS)]
    for p in workers:
        p.join(timeout=60)
    wall = time.time() - t0

    good = 0
    failures = []
    for trial in range(TRIALS):
        name = f"race-{trial}"
        mine = [r for r in rows if r[0] == trial]
        errors = [r[5] for r in mine if r[5]]
        versions = {v.version: v for v in client.search_model_versions(f"name='{name}'")}
        champion = client.get_model_version_by_alias(name, registry.CHAMPION).version
        promoted = [r for r in mine if r[3]]
        compared = [r[4] for r in promoted]
        ok = (
            not errors
            and len(versions) == 3  # the first champion and both challengers: none lost
            and all(registry.HEARTBEAT not in v.tags for v in versions.values())
            and len(set(compared)) == len(compared)  # no two promotions against the same champion
            and (champion == first[trial] if not promoted else champion in {r[2] for r in promoted})
            and (not promoted or champion not in compared)  # the champion is the last winner
        )
        good += ok
        if not ok:
            failures.append((trial, mine, champion, sorted(versions)))
    print(f"\n{good}/{TRIALS} trials: exactly one champion, no version lost, each promotion against the champion "
          f"of its time ({wall:.0f} s for {TRIALS} trials)")
    assert good == TRIALS, failures

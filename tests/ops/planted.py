"""Planted per-session scores for gate tests: no model is trained, the scores are drawn.

Why drawn scores: the gate's statistics are what these tests check, ten times over across seeds,
in seconds. Each session has a difficulty shared by every model evaluated on it (that is what
makes the comparison paired); each model adds its own per-session noise and a shift (its skill).
The sizes follow the default evaluation: 100 test sessions of about 40 units, half of them with
a graded answer, and a 4-sample Full-Duplex-Bench pause probe.
"""

from __future__ import annotations

import numpy as np

from lws_core.eval.sessions import SessionScores

EVAL_SET = "sha256:planted"


def planted(
    seed: int,
    state: float = 0.88,
    task: float = 0.30,
    pause_tor: float | None = None,
    sessions: int = 100,
    units: int = 40,
    eval_set: str = EVAL_SET,
) -> SessionScores:
    """One model's scores: ``state`` / ``task`` are its mean state and task accuracy; the session
    difficulties come from a fixed seed (the same sessions for every model), the model's own noise
    from ``seed``."""
    hard = np.random.default_rng(12345).normal(0.0, 0.08, sessions)  # the eval set: same for every model
    rng = np.random.default_rng(seed)
    s = SessionScores(eval_set)
    for i in range(sessions):
        sid = f"test-{i:04d}"
        p = float(np.clip(state - hard[i] + rng.normal(0.0, 0.03), 0.0, 1.0))
        s.add("state_accuracy", sid, rng.binomial(units, p), units)
        if i % 2 == 0:
            q = float(np.clip(task - 2 * hard[i], 0.0, 1.0))
            s.add("task_accuracy", sid, float(rng.random() < q))
    if pause_tor is not None:
        for i in range(4):
            s.add("fdb_pause_tor", f"fdb/pause/{i}", float(rng.random() < pause_tor))
    return s

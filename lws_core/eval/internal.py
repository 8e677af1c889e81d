"""LWS's own evaluation: run the streaming engine over the held-out test split and score it.

Free-running numbers (the engine decides every state, note and word), not
teacher-forced ones: schema validity, state accuracy, task accuracy of the
written answers, writing–speaking consistency, turn-taking behaviour per
scenario, turn-taking latency and real-time factor, plus the per-channel loss.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lws_core.eval.metrics import score_session


@dataclass
class EvalSummary:
    metrics: dict[str, Any]
    report_path: Path
    per_family: dict[str, float] = field(default_factory=dict)


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def evaluate(cfg, model_dir: str | Path, data_dir: str | Path, out_dir: str | Path, limit: int | None = None, progress: bool = True) -> EvalSummary:  # noqa: ANN001, C901
    """Evaluate a model directory on the dataset's test split; writes report.md, metrics.json, PNGs into out_dir."""
    from tqdm.auto import tqdm

    from lws_core.data.dataset import load_dataset_dir, require_rows, row_audio, row_session
    from lws_core.data.tasks import grade_written
    from lws_core.engine import Engine
    from lws_core.eval.report import write_report
    from lws_core.train.metrics import evaluate_channel_losses

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = Engine.from_dir(model_dir)
    dd = load_dataset_dir(data_dir)
    rows = require_rows(dd, "test")
    limit = cfg.eval.limit if limit is None else limit
    n = len(rows) if limit is None else min(limit, len(rows))

    units = forced = state_ok = 0
    graded: dict[str, list[bool]] = defaultdict(list)
    rtfs: list[float] = []
    latencies: list[float] = []
    premature: list[bool] = []
    yields: list[bool] = []
    kept: list[float] = []
    cons: list[bool] = []
    pairs: list[tuple[str, str]] = []
    samples: list[dict[str, Any]] = []
    for i in tqdm(range(n), desc="evaluate", unit="session", disable=not progress):
        row = rows[i]
        labels = row_session(row)
        res = engine.simulate(row_audio(row))
        pred = res.session
        sc = score_session(pred, labels, res.spoken_words, row["scenario"])
        units += sc.units
        forced += sum(u.forced for u in res.units)
        state_ok += sc.state_correct
        rtfs += [u.timings["total_ms"] / 1000.0 / res.unit_s for u in res.units]
        if row["answer"]:
            graded[row["task_family"]].append(grade_written(row["answer"], res.written))
        if sc.latency_s is not None:
            latencies.append(sc.latency_s)
        if sc.premature_speech is not None:
            premature.append(sc.premature_speech)
        if sc.barge_in_yield is not None:
            yields.append(sc.barge_in_yield)
        if sc.backchannel_kept is not None:
            kept.append(sc.backchannel_kept)
        if sc.consistent is not None:
            cons.append(sc.consistent)
        if pred.spoken_text() and res.written.strip():
            pairs.append((pred.spoken_text(), res.written))
        if len(samples) < 4 and row["scenario"] in ("single_turn", "pause", "barge_in", "multi_turn"):
            samples.append({"id": row["id"], "scenario": row["scenario"], "pred": pred, "labels": labels})

    all_graded = [g for gs in graded.values() for g in gs]
    metrics: dict[str, Any] = {
        "eval_sessions": n,
        "eval_units": units,
        "schema_valid_rate": 1.0 - forced / max(units, 1),
        "state_accuracy": state_ok / max(units, 1),
        "task_accuracy": _mean([float(g) for g in all_graded]),
        "consistency_rate": _mean([float(c) for c in cons]) if cons else float("nan"),
        "consistency_checked": len(cons),
        "pause_hold_rate": _mean([float(not p) for p in premature]),
        "barge_in_yield_rate": _mean([float(y) for y in yields]),
        "backchannel_keep_rate": _mean(kept),
        "turn_taking_latency_s": _mean(latencies),
        "rtf_p50": float(np.percentile(rtfs, 50)) if rtfs else float("nan"),
        "rtf_p95": float(np.percentile(rtfs, 95)) if rtfs else float("nan"),
    }
    if cfg.eval.consistency_embedding and pairs:
        from lws_core.eval.embedding import similarity

        metrics["consistency_embedding_mean"] = _mean(similarity([p[0] for p in pairs], [p[1] for p in pairs]))
    losses = evaluate_channel_losses(engine.model, rows, limit=min(n, 64))
    for k, v in losses.items():
        metrics[f"test_loss_{k}" if k != "state_accuracy" else "test_state_accuracy_teacher_forced"] = v
    per_family = {fam: _mean([float(g) for g in gs]) for fam, gs in sorted(graded.items())}
    metrics["judge"] = "not judged (no eval.judge.endpoint configured)" if not cfg.eval.judge.endpoint else "configured"
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    (out_dir / "metrics.json").write_text(json.dumps(clean, indent=2))
    report = write_report(out_dir, clean, per_family, latencies, samples)
    return EvalSummary(clean, report, per_family)

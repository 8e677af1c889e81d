"""LWS's own evaluation: run the streaming engine over the held-out test split(s) and score them.

Free-running numbers (the engine decides every state, note and word), not
teacher-forced ones: schema validity, state accuracy, task accuracy of the
written answers, spoken-answer accuracy, writing–speaking consistency (deterministic,
embedding, judge), turn-taking behaviour per scenario, turn-taking latency and
real-time factor, plus the per-channel loss and Full-Duplex-Bench metrics on a
small probe built with our TTS — so the pipeline's evaluate step runs the whole
benchmark flow offline.

Two held-out splits: ``test`` (held-out phrasings and held-out voices) gets every
metric; ``test_seen`` (held-out voices, training phrasings), when the dataset has
one with rows, gets the task and spoken accuracy as ``*_seen_phrasing``. The gap
between the two says how much of the test error is the new phrasing rather than
the new voice. Both get per-family metrics named ``<metric>.<family>``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lws_core.eval.metrics import (
    CONSISTENCY_JUDGE_PROMPT,
    CONSISTENCY_JUDGE_SYSTEM,
    STATE_ERROR_CLASSES,
    TaskTally,
    graded_turn,
    judge_consistent,
    score_session,
)
from lws_core.eval.sessions import SessionScores, add_fdb_samples, eval_set_digest

# The LWS paper's writing–speaking consistency (no public definition); every report names it for comparison.
PAPER_CONSISTENCY = 0.926
PAPER_CONSISTENCY_NOTE = "LWS paper: 92.6 % writing-speaking consistency (no public definition; ours: deterministic, embedding and judge views)"

# Names the promotion gate and dashboards read; always present in metrics.json (None = not measurable).
REQUIRED = (
    "schema_valid_rate",
    "state_accuracy",
    "task_accuracy",
    "consistency_rate",
    "fdb_turn_taking_tor",
    "fdb_pause_tor",
    "fdb_turn_taking_latency_s",
    "rtf_p95",
)


# The second held-out split (held-out voices, training phrasings) and the suffix of its metrics.
SEEN_SPLIT = "test_seen"
SEEN_SUFFIX = "_seen_phrasing"


@dataclass
class EvalSummary:
    metrics: dict[str, Any]
    report_path: Path
    per_family: dict[str, float] = field(default_factory=dict)
    per_family_spoken: dict[str, float] = field(default_factory=dict)
    # the test_seen split's (empty when the dataset has none)
    per_family_seen: dict[str, float] = field(default_factory=dict)
    per_family_spoken_seen: dict[str, float] = field(default_factory=dict)


def tally_session(tally: TaskTally, row: dict[str, Any], labels: Any, written: str, spoken: str) -> tuple[bool | None, bool | None]:
    """Grade one simulated session into ``tally``, under the family of the turn whose answer is graded;
    returns its (written, spoken) grades (None: not graded)."""
    family, answer = graded_turn(labels.meta or {}, row["task_family"], row["answer"])
    return tally.add(family, answer, written, spoken)


def _family_key(family: str) -> str:
    """A family as a metric-name part: MLflow accepts word characters, ``-``, ``.``, ``/`` and spaces."""
    return re.sub(r"[^\w\-]", "_", family) or "_"


def family_metrics(tally: TaskTally, suffix: str = "") -> dict[str, float]:
    """``task_accuracy<suffix>.<family>`` and ``spoken_accuracy<suffix>.<family>`` (flat, MLflow-loggable)."""
    out = {f"task_accuracy{suffix}.{_family_key(f)}": v for f, v in tally.per_family().items()}
    out.update({f"spoken_accuracy{suffix}.{_family_key(f)}": v for f, v in tally.per_family_spoken().items()})
    return out


def _simulate(engine, rows, n: int, progress: bool, desc: str) -> Iterator[tuple[dict[str, Any], Any, Any]]:  # noqa: ANN001
    """(row, labels, engine result) for the first ``n`` rows, streamed through the engine."""
    from lws_core.data.dataset import row_audio, row_session
    from lws_core.progress import progress as bar

    for i in bar(range(n), desc=desc, unit="session", disable=not progress):
        row = rows[i]
        yield row, row_session(row), engine.simulate(row_audio(row))


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def _nan_if_none(x: float | None) -> float:
    return float("nan") if x is None else x


def consistency_views(pairs: list[tuple[str, str]], judge: Any = None, embedding: bool = True) -> dict[str, Any]:
    """The embedding and judge views of writing–speaking consistency over (spoken, written) pairs.

    Why separate from ``evaluate``: the two views are the ones a model-free test can
    check with real parts (the shipped MiniLM weights, a judge over HTTP), and the
    pipeline's report needs both next to the deterministic rate and the paper's figure.
    ``consistency_embedding_mean`` is a cosine similarity (not a rate; the paper's
    92.6 % is a rate), ``consistency_judge_rate`` the share of parsed Yes verdicts.
    """
    from lws_core.eval.judge import NOT_JUDGED

    out: dict[str, Any] = {"consistency_pairs": len(pairs)}
    if embedding and pairs:
        from lws_core.eval.embedding import similarity

        sims = similarity([p[0] for p in pairs], [p[1] for p in pairs])
        out["consistency_embedding_mean"] = _mean(sims)
        out["consistency_embedding_per_pair"] = [round(x, 6) for x in sims]
    if judge is None:
        out["consistency_judge_rate"] = NOT_JUDGED
    else:
        verdicts = [judge_consistent(judge(CONSISTENCY_JUDGE_SYSTEM, CONSISTENCY_JUDGE_PROMPT.format(spoken=s, written=w))) for s, w in pairs]
        parsed = [float(v) for v in verdicts if v is not None]
        out["consistency_judge_rate"] = _mean(parsed) if parsed else float("nan")
        out["consistency_judge_judged"] = len(parsed)
        out["consistency_judge_unparsed"] = len(verdicts) - len(parsed)
    return out


def perplexities(losses: dict[str, float]) -> dict[str, float]:
    """``test_ppl_<channel>`` = exp(mean token loss) per channel (what the issue asks next to the losses)."""
    return {f"test_ppl_{k}": float(math.exp(min(v, 700.0))) for k, v in losses.items() if k != "state_accuracy"}


SEEN_PROBE_TASKS = ("pause_handling", "smooth_turn_taking")


def _run_probe(
    cfg, engine, work: Path, name: str, progress: bool, judge: Any = None, phrasings: str = "test",  # noqa: ANN001
    tasks: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Build a probe (only ``tasks`` kept, when given), run the engine over it into ``work/name``, return its v1 metrics."""
    from lws_core.eval.fdb_metrics import evaluate_tree
    from lws_core.eval.fdb_probe import build_probe
    from lws_core.eval.fdb_run import run_fdb

    probe = build_probe(work / f"{name}_probe", per_task=cfg.eval.fdb_probe_per_task, progress=False, phrasings=phrasings)
    if tasks is not None:
        for task in {p.name for p in probe.iterdir() if p.is_dir()} - set(tasks):
            shutil.rmtree(probe / task)
    run_fdb(engine, probe, work / name, progress=progress)
    shutil.rmtree(probe)  # the run tree holds copies of every input
    return evaluate_tree(work / name, judge=judge)


def _fdb_probe(cfg, engine, work: Path, progress: bool, judge: Any = None) -> dict[str, Any]:  # noqa: ANN001
    """Build the probe, run the engine over it and compute the v1 metrics (all offline; relevance by the judge if any).

    With ``eval.fdb_probe_seen_phrasing`` the pause and turn-taking tasks run again on questions in the
    *training* phrasings (held-out voices), as ``test_seen`` does for answers: a model that holds the floor
    in pauses of phrasings it knows but not of new ones heard the audio and misread the question
    (``fdb_pause_tor_seen_phrasing`` against ``fdb_pause_tor``).
    """
    m = _run_probe(cfg, engine, work, "fdb", progress, judge=judge)
    out = {k: v for k, v in m.items() if not k.startswith("fdb_judge_")}  # the run's judge_stats already count these calls
    if cfg.eval.fdb_probe_seen_phrasing:
        seen = _run_probe(cfg, engine, work, "fdb_seen_phrasing", progress, phrasings="train", tasks=SEEN_PROBE_TASKS)
        out.update({f"{k}{SEEN_SUFFIX}": v for k, v in seen.items() if k.startswith(("fdb_pause_", "fdb_turn_taking_"))})
    return out


def evaluate(cfg, model_dir: str | Path, data_dir: str | Path, out_dir: str | Path, limit: int | None = None, progress: bool = True) -> EvalSummary:  # noqa: ANN001, C901
    """Evaluate a model directory on the dataset's test split (and test_seen when it has rows); writes
    report.md, metrics.json, PNGs into out_dir. ``limit`` (default ``eval.limit``) applies per split.

    Everything is written into a temporary directory beside ``out_dir`` and moved in
    at the end (metrics.json last), so an interrupted run never looks complete.
    """
    from lws_core.data.dataset import load_dataset_dir, require_rows
    from lws_core.engine import Engine
    from lws_core.eval.judge import NOT_JUDGED, JudgeClient
    from lws_core.eval.report import write_report
    from lws_core.train.metrics import evaluate_channel_losses

    out_dir = Path(out_dir)
    dd = load_dataset_dir(data_dir)
    rows = require_rows(dd, "test")
    engine = Engine.from_dir(model_dir, cfg)  # decoding and context policy from cfg.engine
    limit = cfg.eval.limit if limit is None else limit
    n = len(rows) if limit is None else min(limit, len(rows))
    seen_rows = dd[SEEN_SPLIT] if SEEN_SPLIT in dd and len(dd[SEEN_SPLIT]) else None  # older datasets have none
    n_seen = 0 if seen_rows is None else len(seen_rows) if limit is None else min(limit, len(seen_rows))
    work = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    judge = JudgeClient.from_config(cfg.eval.judge, cache_dir=out_dir / "judge_cache")
    try:
        units = forced = state_ok = 0
        state_err: Counter = Counter()
        tally = TaskTally()
        rtfs: list[float] = []
        latencies: list[float] = []
        premature: list[bool] = []
        yields: list[bool] = []
        kept: list[float] = []
        cons: list[bool] = []
        pairs: list[tuple[str, str]] = []
        samples: list[dict[str, Any]] = []
        per_session = SessionScores(eval_set_digest(
            (*(rows[i] for i in range(n)), *((seen_rows[i] for i in range(n_seen)) if seen_rows is not None else ())),
            {"eval": cfg.eval.model_dump(mode="json"), "engine": cfg.engine.model_dump(mode="json")},
        ))
        for row, labels, res in _simulate(engine, rows, n, progress, "evaluate test"):
            pred = res.session
            sid = str(row["id"])
            sc = score_session(pred, labels, res.spoken_words, row["scenario"])
            n_forced = sum(u.forced for u in res.units)
            units += sc.units
            forced += n_forced
            state_ok += sc.state_correct
            state_err += sc.state_errors
            rtfs += [u.timings["total_ms"] / 1000.0 / res.unit_s for u in res.units]
            graded, spoken_ok = tally_session(tally, row, labels, res.written, pred.spoken_text())
            per_session.add("state_accuracy", sid, sc.state_correct, sc.units)
            per_session.add("schema_valid_rate", sid, sc.units - n_forced, sc.units)
            if graded is not None:
                per_session.add("task_accuracy", sid, float(graded))
            if spoken_ok is not None:
                per_session.add("spoken_accuracy", sid, float(spoken_ok))
            if sc.latency_s is not None:
                latencies.append(sc.latency_s)
                per_session.add("turn_taking_latency_s", sid, sc.latency_s)
            if sc.premature_speech is not None:
                premature.append(sc.premature_speech)
                per_session.add("pause_hold_rate", sid, float(not sc.premature_speech))
            if sc.barge_in_yield is not None:
                yields.append(sc.barge_in_yield)
                per_session.add("barge_in_yield_rate", sid, float(sc.barge_in_yield))
            if sc.backchannel_kept is not None:
                kept.append(sc.backchannel_kept)
                per_session.add("backchannel_keep_rate", sid, sc.backchannel_kept)
            if sc.consistent is not None:
                cons.append(sc.consistent)
                per_session.add("consistency_rate", sid, float(sc.consistent))
            if pred.spoken_text() and res.written.strip():
                pairs.append((pred.spoken_text(), res.written))
            if len(samples) < 4 and row["scenario"] in ("single_turn", "pause", "barge_in", "multi_turn"):
                samples.append({"id": row["id"], "scenario": row["scenario"], "pred": pred, "labels": labels})
        tally_seen = TaskTally()
        # the same engine measurements on held-out voices saying training phrasings, so that what the model
        # cannot do on new phrasings (consistency, turn-taking) is told apart from what it cannot hear
        seen_units = seen_ok = seen_slack = 0
        cons_seen: list[bool] = []
        if seen_rows is not None:
            for row, labels, res in _simulate(engine, seen_rows, n_seen, progress, f"evaluate {SEEN_SPLIT}"):
                tally_session(tally_seen, row, labels, res.written, res.session.spoken_text())
                sc = score_session(res.session, labels, res.spoken_words, row["scenario"])
                seen_units += sc.units
                seen_ok += sc.state_correct
                seen_slack += sc.state_errors["offset_short"] + sc.state_errors["offset_long"]
                if sc.consistent is not None:
                    cons_seen.append(sc.consistent)

        streamed: dict[str, Any] = {}
        if cfg.eval.streams:  # the same held-out questions, asked one after another in one engine session
            from lws_core.eval.stream import stream_metrics, stream_split

            for split_rows, count, suffix in ((rows, n, ""), (seen_rows, n_seen, SEEN_SUFFIX)):
                if split_rows is None:
                    continue
                q = cfg.eval.stream_questions
                graded = list(stream_split(engine, split_rows.select(range(count)), q, cfg.eval.streams, progress,
                                           desc=f"evaluate streams of {q}{suffix and ' ' + SEEN_SPLIT}"))
                streamed.update(stream_metrics(graded, suffix))
                if not suffix:  # paired by the gate, question by question
                    for g in graded:
                        per_session.add("stream_state_accuracy", f"stream/{g.id}", g.state_correct, g.units)
                        if g.written is not None:
                            per_session.add("stream_task_accuracy", f"stream/{g.id}", float(g.written))

        metrics: dict[str, Any] = {
            "eval_sessions": n,
            "eval_units": units,
            "schema_valid_rate": 1.0 - forced / max(units, 1),
            "state_accuracy": state_ok / max(units, 1),
            # the same, forgiving answer-length mismatches within OFFSET_SLACK_UNITS of a speak run's labelled end
            # (see eval.metrics.state_errors); a run that ends further off still counts as an error
            "state_accuracy_turn_taking": (state_ok + state_err["offset_short"] + state_err["offset_long"]) / max(units, 1),
            **{f"state_errors_{k}": state_err[k] for k in STATE_ERROR_CLASSES},
            "task_accuracy": _nan_if_none(tally.overall()),
            "spoken_accuracy": _nan_if_none(tally.overall_spoken()),
            **(
                {
                    "eval_sessions_seen_phrasing": n_seen,
                    f"task_accuracy{SEEN_SUFFIX}": _nan_if_none(tally_seen.overall()),
                    f"spoken_accuracy{SEEN_SUFFIX}": _nan_if_none(tally_seen.overall_spoken()),
                    f"state_accuracy{SEEN_SUFFIX}": seen_ok / max(seen_units, 1),
                    f"state_accuracy_turn_taking{SEEN_SUFFIX}": (seen_ok + seen_slack) / max(seen_units, 1),
                    f"consistency_rate{SEEN_SUFFIX}": _mean([float(c) for c in cons_seen]) if cons_seen else float("nan"),
                    f"consistency_checked{SEEN_SUFFIX}": len(cons_seen),
                }
                if seen_rows is not None
                else {}
            ),
            **streamed,
            "consistency_rate": _mean([float(c) for c in cons]) if cons else float("nan"),
            "consistency_checked": len(cons),
            "consistency_paper_reference": PAPER_CONSISTENCY,
            "pause_hold_rate": _mean([float(not p) for p in premature]),
            "barge_in_yield_rate": _mean([float(y) for y in yields]),
            "backchannel_keep_rate": _mean(kept),
            "turn_taking_latency_s": _mean(latencies),
            "rtf_p50": float(np.percentile(rtfs, 50)) if rtfs else float("nan"),
            "rtf_p95": float(np.percentile(rtfs, 95)) if rtfs else float("nan"),
        }
        views = consistency_views(pairs, judge, embedding=cfg.eval.consistency_embedding)
        views.pop("consistency_embedding_per_pair", None)  # per-pair values stay out of the flat metrics
        metrics.update(views)
        losses = evaluate_channel_losses(engine.model, rows, limit=min(n, 64))
        for k, v in losses.items():
            metrics[f"test_loss_{k}" if k != "state_accuracy" else "test_state_accuracy_teacher_forced"] = v
        metrics.update(perplexities(losses))
        if cfg.eval.fdb_probe:
            metrics.update(_fdb_probe(cfg, engine, work, progress, judge=judge))
            add_fdb_samples(per_session, json.loads((work / "fdb" / "metrics.json").read_text()))
        for k in REQUIRED:
            metrics.setdefault(k, None)
        per_family = tally.per_family()
        per_family_spoken = tally.per_family_spoken()
        per_family_seen = tally_seen.per_family()
        per_family_spoken_seen = tally_seen.per_family_spoken()
        metrics.update(family_metrics(tally))
        metrics.update(family_metrics(tally_seen, SEEN_SUFFIX))
        liberation_md = ""
        if cfg.eval.liberation:  # the backbone LWS started from, hearing text or the encoder's transcript
            from lws_core.eval.liberation import ceiling_and_cascade, liberation_metrics, liberation_table

            splits = {"test": rows, **({SEEN_SPLIT: seen_rows} if seen_rows is not None else {})}
            lib = ceiling_and_cascade(cfg, engine.model.spec, splits, limit)
            if lib:
                metrics.update(liberation_metrics(lib, {"test": "", SEEN_SPLIT: SEEN_SUFFIX}))
                for mode, res in lib["test"].items():  # paired with task_accuracy: benchmarks/paired_modes.py
                    for sid, ok in res.per_row.items():
                        per_session.add(f"{mode}_accuracy", sid, float(ok))
                lws_written = {"test": {**per_family, "overall": tally.overall()},
                               SEEN_SPLIT: {**per_family_seen, "overall": tally_seen.overall()}}
                liberation_md = liberation_table(lib, lws_written)
        metrics["engine_settings"] = json.dumps(engine.config.model_dump(), sort_keys=True)  # what decoded these numbers
        metrics["judge"] = NOT_JUDGED if judge is None else f"{cfg.eval.judge.model} @ {cfg.eval.judge.endpoint}"
        if judge is not None:
            metrics["judge_stats"] = json.dumps(judge.stats.as_dict())
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
        write_report(
            work, clean, per_family, latencies, samples, per_family_spoken,
            per_family_seen=per_family_seen if seen_rows is not None else None,
            per_family_spoken_seen=per_family_spoken_seen,
        )
        if liberation_md:
            with (work / "report.md").open("a") as f:
                f.write("\n" + liberation_md)
        per_session.write(work)  # what the promotion gate pairs with another model's scores on the same eval_set
        clean["eval_set"] = per_session.eval_set
        (work / "metrics.json").write_text(json.dumps(clean, indent=2))
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(work.iterdir(), key=lambda p: p.name == "metrics.json"):  # metrics.json last
            dst = out_dir / f.name
            if dst.is_dir():
                shutil.rmtree(dst)
            os.replace(f, dst)
        work.rmdir()
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        if judge is not None:
            judge.close()
    return EvalSummary(clean, out_dir / "report.md", per_family, per_family_spoken, per_family_seen, per_family_spoken_seen)

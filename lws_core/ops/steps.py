"""What each pipeline step does. KFP components are one-line calls into these functions, so every step is
callable and testable without KFP, and the same code runs locally and on a cluster.

The cached steps (synthesize, pretrain_backbone, pretrain_encoder, train,
evaluate) take only the config and their input artifacts, so KFP's cache can skip them on a rerun; each logs live into an
MLflow run of its own. The uncached register step creates the pipeline's parent
run (found by its ``lws.pipeline_run`` tag), files the step runs under it,
versions the model and registers it. The exit handler marks the parent run
FAILED when registration never completed.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

from lws_core.config import LWSConfig, config_from_dict
from lws_core.data.card import RUN_FILE
from lws_core.errors import InputError
from lws_core.eval.sessions import FILENAME as SCORES_FILE
from lws_core.eval.sessions import SessionScores
from lws_core.ops.faults import inject_fault
from lws_core.ops.tracking import COMPLETED_TAG, RUN_TAG, MLflowTrainCallback, Tracker, pipeline_run_from_env

# Steps write their progress as plain lines into their log (``lws_core.progress``: no terminal there), every 15 s
# and 5 % at most: ``kubectl logs`` shows how far a long step is, and the local runner's bar shows its latest line.
STEP_PROGRESS = True


def _cfg(config_json: str) -> LWSConfig:
    return config_from_dict(json.loads(config_json))


def code_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
        if rev.returncode == 0:
            return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from lws_core import __version__

    return f"lws-{__version__}"


def _step_run(tr: Tracker, step: str) -> str:
    """A cached step logs into its own run, with its own config sections as params and MLflow's system
    metrics; the register step later files it under the pipeline's parent run (or, when a later step
    fails, the exit handler does, finding it by the pipeline run its runner named in the environment)."""
    from lws_core.config import STEP_SECTIONS

    tags = {"lws.step": step, "lws.config_digest": tr.cfg.digest()}
    if run_tag := pipeline_run_from_env():
        tags[RUN_TAG] = run_tag
    run = tr.client.create_run(tr.experiment_id(), run_name=step, tags=tags)
    tr.log_sections(run.info.run_id, STEP_SECTIONS.get(step, ()))
    tr.start_system_metrics(run.info.run_id)
    return run.info.run_id


class _SystemMetrics:
    """Cheap system metrics of one step (wall, CPU seconds, peak RSS of this process and its children).

    MLflow's own system-metrics monitor needs a fluent active run and a sampling thread; these
    three numbers are what a retraining step's cost review needs, read once from getrusage.
    """

    def __init__(self) -> None:
        import resource
        import time

        self._t0 = time.time()
        self._r0 = resource.getrusage(resource.RUSAGE_SELF)
        self._c0 = resource.getrusage(resource.RUSAGE_CHILDREN)

    def values(self) -> dict[str, float]:
        import os
        import resource
        import time

        r1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime + r1.ru_stime - self._r0.ru_utime - self._r0.ru_stime) + (
            c1.ru_utime + c1.ru_stime - self._c0.ru_utime - self._c0.ru_stime
        )
        return {
            "system/wall_s": time.time() - self._t0,
            "system/cpu_s": cpu,
            "system/peak_rss_mb": max(r1.ru_maxrss, c1.ru_maxrss) / 1024.0,  # Linux reports KiB
            "system/cpu_count": float(os.cpu_count() or 1),
        }


def run_step_configs(config_json: str) -> dict[str, str]:
    """Each cached step's config JSON: only the sections it depends on (lws_core.config.STEP_SECTIONS)."""
    from lws_core.config import STEP_SECTIONS, step_view

    cfg = _cfg(config_json)
    return {step: json.dumps(step_view(cfg, step), sort_keys=True) for step in STEP_SECTIONS}


def run_synthesize(config_json: str, out_path: str) -> str:
    from lws_core.data import synthesize

    cfg = _cfg(config_json)
    tr = Tracker(cfg)
    rid = _step_run(tr, "synthesize")
    sm = _SystemMetrics()
    try:
        if cfg.data.shards > 1:  # the in-step fan-out (data.shard_fanout=in_step): the same shards and merge
            from lws_core.data.shards import merge_shards

            paths = [run_synthesize_shard(config_json, k, cfg.data.shards) for k in range(cfg.data.shards)]
            s = merge_shards(cfg, paths, Path(out_path))
        else:
            s = synthesize(cfg, Path(out_path), progress=STEP_PROGRESS)
        flat = {"audio_hours": s.audio_hours, "units": s.units, "wall_s": s.wall_s, "audio_s_per_s": s.audio_s_per_s}
        flat.update({f"rows_{k}": v for k, v in s.rows.items()})
        flat.update({f"rejects_{k}": v for k, v in s.rejects.items()})
        tr.log_metrics(rid, flat)
        for name in ("card.json", RUN_FILE):  # what the data is; how this run made it
            if (Path(out_path) / name).is_file():
                tr.client.log_artifact(rid, str(Path(out_path) / name))
        tr.log_metrics(rid, sm.values())
        tr.finish(rid)
        return rid
    except BaseException:
        tr.finish(rid, "FAILED")
        raise


def shard_dir(cfg: LWSConfig, shard: int, shards: int) -> Path:
    """Where shard ``k`` of ``N`` lives: in the workspace (the PVC every pod mounts), by config digest, so
    the fan-in passes only this path and a rerun with the same config finds the finished shard."""
    return Path(cfg.pipeline.workspace) / "synth_shards" / cfg.digest() / f"shard-{shard:04d}-of-{shards:04d}"


def run_synthesize_shard(config_json: str, shard: int, shards: int) -> str:
    """One shard of a fan-out synthesis (no MLflow run of its own: the merge step logs the whole);
    returns the shard's directory. A finished shard is not made again; a killed one resumes from the
    teacher's response cache."""
    from lws_core.data import synthesize

    cfg = _cfg(config_json)
    out = shard_dir(cfg, shard, shards)
    if not (out / "card.json").is_file():
        synthesize(cfg, out, shard=(shard, shards), progress=STEP_PROGRESS)
    return str(out)


def run_merge_shards(config_json: str, shard_paths: list[str], out_path: str) -> str:
    """The fan-in: merge the shards into one dataset at ``out_path``; logs the synthesize step's MLflow run."""
    from lws_core.data.shards import merge_shards

    cfg = _cfg(config_json)
    tr = Tracker(cfg)
    rid = _step_run(tr, "synthesize")
    sm = _SystemMetrics()
    try:
        s = merge_shards(cfg, shard_paths, Path(out_path))
        flat = {"audio_hours": s.audio_hours, "units": s.units, "merge_s": s.wall_s, "shards": len(shard_paths)}
        flat.update({f"rows_{k}": v for k, v in s.rows.items()})
        flat.update({f"rejects_{k}": v for k, v in s.rejects.items()})
        for k, sh in enumerate(s.extra["shards"]):
            flat.update({f"shard_{k}_{t}": v for t, v in sh["timings"].items() if isinstance(v, (int, float))})
        if u := s.extra.get("teacher_usage"):
            flat.update({f"teacher_{k}": v for k, v in u.items() if isinstance(v, (int, float))})
        tr.log_metrics(rid, flat)
        for name in ("card.json", RUN_FILE):
            tr.client.log_artifact(rid, str(Path(out_path) / name))
        tr.log_metrics(rid, sm.values())
        tr.finish(rid)
        return rid
    except BaseException:
        tr.finish(rid, "FAILED")
        raise


def run_version(config_json: str, path: str, kind: str = "dataset") -> str:
    from lws_core.ops.versioning import version_path

    return version_path(_cfg(config_json), path, kind)


# what a skipped pretrain step leaves in its output: the real checkpoint the config named instead
SKIP_MARKER = "skipped.json"
PRETRAINED = ("backbone", "encoder")


def configured_checkpoint(cfg: LWSConfig, kind: str) -> str | None:
    """The real checkpoint ``model.<kind>_path`` names (checked to be a directory), or None when the
    pretrain stage must make a stand-in."""
    path = getattr(cfg.model, f"{kind}_path")
    if path is None:
        return None
    if not Path(path).is_dir():
        raise InputError(f"model.{kind}_path not found: {path} (a local checkpoint directory; unset it to pretrain one)")
    return str(path)


def skipped_marker(path: str | Path | None) -> dict[str, Any] | None:
    """What a skipped pretrain step wrote into its output (``{"kind", "path", ...}``), or None."""
    if not path:
        return None
    marker = Path(path) / SKIP_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def write_skip_marker(out_path: str | Path, kind: str, real: str) -> Path:
    """What a skipped pretrain stage leaves in its output folder: the real checkpoint it stands aside for
    (``skipped.json``; any earlier content is replaced), so the stage's output exists for KFP and DVC."""
    import shutil

    out = Path(out_path)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True)
    marker = {"skipped": True, "kind": kind, "path": real, "reason": f"model.{kind}_path names a real checkpoint"}
    (out / SKIP_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return out


def pretrained_config(cfg: LWSConfig, backbone_path: str | None = None, encoder_path: str | None = None) -> LWSConfig:
    """The config the LWS stage trains with: the checkpoints the config names win; otherwise the pretrain
    steps' outputs (or, for a step that was skipped, the path its marker names)."""
    overrides = {}
    for kind, given in zip(PRETRAINED, (backbone_path, encoder_path), strict=True):
        if getattr(cfg.model, f"{kind}_path") is not None or not given:
            continue
        marker = skipped_marker(given)
        overrides[f"model.{kind}_path"] = marker["path"] if marker else str(given)
    return cfg.with_overrides(overrides) if overrides else cfg


def _run_pretrain(config_json: str, kind: str, out_path: str, dataset_path: str | None = None) -> str:
    """One pretrain step: make the stand-in checkpoint (loss curve live, report, system metrics), or, when
    the config names a real checkpoint, leave a marker naming it and finish (tag ``lws.skipped``)."""
    cfg = _cfg(config_json)
    tr = Tracker(cfg)
    rid = _step_run(tr, f"pretrain_{kind}")
    sm = _SystemMetrics()
    out = Path(out_path)
    try:
        real = configured_checkpoint(cfg, kind)
        if real is not None:
            write_skip_marker(out, kind, real)
            tr.client.set_tag(rid, "lws.skipped", real)
        else:

            def on_log(step: int, metrics: dict[str, float]) -> None:
                tr.log_metrics(rid, metrics, step=step)

            if kind == "backbone":
                from lws_core.train.pretrain_backbone import build_backbone

                b = build_backbone(cfg, out, progress=STEP_PROGRESS, on_log=on_log)
                numbers = {"wall_s": b.wall_s, "parameters": b.parameters, "final_loss": b.final_loss, "steps": b.steps,
                           "train_sessions": b.train_sessions, "tokens_per_s": b.tokens_per_s}
            else:
                from lws_core.train.pretrain_encoder import pretrain_encoder

                e = pretrain_encoder(cfg, Path(dataset_path or ""), out, progress=STEP_PROGRESS, on_log=on_log)
                numbers = {"wall_s": e.wall_s, "final_loss": e.final_loss, "steps": e.steps, "train_units": e.train_units,
                           "wer_sessions": e.wer_sessions}
                if e.wer is not None:
                    numbers["wer"] = e.wer
                if e.wer_interval is not None:
                    numbers["wer_ci_low"], numbers["wer_ci_high"] = e.wer_interval
                numbers.update(e.wer_breakdown)  # wer_accent.<language>, missed_numbers, missed_words
            tr.log_metrics(rid, numbers)
            if (out / "pretrain_report.json").is_file():
                tr.client.log_artifact(rid, str(out / "pretrain_report.json"))
        tr.log_metrics(rid, sm.values())
        tr.finish(rid)
        return rid
    except BaseException:
        tr.finish(rid, "FAILED")
        raise


def run_pretrain_backbone(config_json: str, out_path: str) -> str:
    """Pretrain the text-only LM stand-in into ``out_path`` (skipped when ``model.backbone_path`` is set)."""
    return _run_pretrain(config_json, "backbone", out_path)


def run_pretrain_encoder(config_json: str, dataset_path: str, out_path: str) -> str:
    """Pretrain the audio encoder as a CTC recogniser on the dataset (skipped when ``model.encoder_path`` is set)."""
    return _run_pretrain(config_json, "encoder", out_path, dataset_path)


def run_train(
    config_json: str,
    dataset_path: str,
    model_path: str,
    backbone_path: str | None = None,
    encoder_path: str | None = None,
) -> str:
    """Train in this process, or (``pipeline.train_launcher: trainjob``) hand off to a Kubeflow Trainer
    TrainJob for multi-node training and wait for it; either way the model ends up in ``model_path``.

    ``backbone_path`` / ``encoder_path`` are the pretrain steps' outputs; checkpoints the config names win
    (see :func:`pretrained_config`)."""
    from lws_core.train import train

    cfg = pretrained_config(_cfg(config_json), backbone_path, encoder_path)
    tr = Tracker(cfg)
    rid = _step_run(tr, "train")
    sm = _SystemMetrics()
    try:
        for kind in PRETRAINED:
            if (where := getattr(cfg.model, f"{kind}_path")) is not None:
                tr.client.set_tag(rid, f"lws.{kind}_path", where)
        if cfg.pipeline.train_launcher == "trainjob":
            from lws_core.ops.trainjob import train_on_cluster

            job = train_on_cluster(cfg, Path(dataset_path), Path(model_path))
            tr.client.set_tag(rid, "lws.trainjob", f"{job.namespace}/{job.name}")
            tr.log_metrics(rid, {"trainjob_wall_s": job.wall_s, "trainjob_nodes": float(cfg.pipeline.train_num_nodes)})
        else:
            train(cfg, Path(dataset_path), Path(model_path), callbacks=[MLflowTrainCallback(tr, rid)], progress=STEP_PROGRESS)
        tr.client.log_artifact(rid, str(Path(model_path) / "train_summary.json"))
        tr.log_metrics(rid, sm.values())
        tr.finish(rid)
        return rid
    except BaseException:
        tr.finish(rid, "FAILED")
        raise


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among the eval metrics (the rest are notes such as "not judged")."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def run_evaluate(
    config_json: str, model_path: str, dataset_path: str, out_path: str, metrics_file: str | None = None
) -> tuple[str, dict[str, float]]:
    """Evaluate into ``out_path`` (report.md, metrics.json, plots); returns the step run id and the
    numeric metrics (what KFP's Metrics artifact shows).

    ``metrics_file`` (the KFP Metrics artifact's path) gets the numeric metrics as JSON: KFP's
    ``log_metric`` only fills metadata, and a cache entry whose artifact file is missing is a
    cache miss, so without the file a rerun would evaluate again."""
    from lws_core.eval import evaluate

    cfg = _cfg(config_json)
    tr = Tracker(cfg)
    rid = _step_run(tr, "evaluate")
    sm = _SystemMetrics()
    try:
        inject_fault("evaluate")
        s = evaluate(cfg, Path(model_path), Path(dataset_path), Path(out_path), progress=STEP_PROGRESS)
        tr.log_metrics(rid, s.metrics)
        tr.log_dir(rid, Path(out_path), "eval_report")
        tr.log_metrics(rid, sm.values())
        tr.finish(rid)
        numeric = numeric_metrics(s.metrics)
        if metrics_file:
            Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
            Path(metrics_file).write_text(json.dumps(numeric, indent=2))
        return rid, numeric
    except BaseException:
        tr.finish(rid, "FAILED")
        raise


def _file_step_runs(tr: Tracker, parent: str, run_tag: str, step_runs: list[str]) -> None:
    """Nest this pipeline's step runs under its parent. A step KFP served from its cache ran for an
    earlier pipeline run and already sits under that run's parent: it stays there, and the new
    parent records which run it reused (``lws.cached.<step>``) instead of stealing it."""
    for rid in step_runs:
        if not rid:
            continue
        run = tr.client.get_run(rid)
        step = run.data.tags.get("lws.step", "step")
        owner = run.data.tags.get("mlflow.parentRunId")
        if owner and owner != parent:
            tr.client.set_tag(parent, f"lws.cached.{step}", rid)
            continue
        tr.client.set_tag(rid, "mlflow.parentRunId", parent)
        tr.client.set_tag(rid, RUN_TAG, run_tag)


# what the register step reads (the gate, the registry, the DVC remote) — its step run's params
REGISTER_SECTIONS = ("registry",)


def run_register(
    config_json: str,
    run_tag: str,
    model_path: str,
    eval_path: str,
    dataset_hash: str,
    step_runs: list[str] | None = None,
    backbone_path: str | None = None,
    encoder_path: str | None = None,
    backbone_run: str | None = None,
    encoder_run: str | None = None,
) -> dict[str, Any]:
    """Create the pipeline's parent run, file the step runs under it, version the model, register and gate it.

    Everything that can fail (reading metrics, DVC push, model logging) happens before the
    registry is touched; ``register_model`` itself rolls back its version if it fails midway.
    ``backbone_path`` / ``encoder_path`` (the pretrain steps' outputs, with their step runs) are versioned
    too, and the version is tagged with where it started from (:func:`pretrained_lineage`).
    """
    from lws_core.ops.registry import register_model
    from lws_core.ops.versioning import remote_url, version_path

    cfg = _cfg(config_json)
    tr = Tracker(cfg)
    parent = tr.start_parent(run_tag)
    _file_step_runs(tr, parent, run_tag, step_runs or [])
    rid = tr.start_step(parent, "register", REGISTER_SECTIONS)
    sm = _SystemMetrics()
    try:
        metrics_file = Path(eval_path) / "metrics.json"
        if not metrics_file.is_file():
            raise InputError(f"evaluation wrote no metrics: {metrics_file}")
        metrics = json.loads(metrics_file.read_text())
        if not (Path(eval_path) / SCORES_FILE).is_file():
            raise InputError(f"evaluation wrote no per-session scores ({Path(eval_path) / SCORES_FILE}): the gate pairs "
                             "them with the champion's; re-run `lws eval run` with this version of lws")
        scores = SessionScores.read(eval_path)
        tr.log_metrics(parent, metrics)
        model_hash = version_path(cfg, model_path, "model")
        lineage = {
            "dataset_dvc_hash": dataset_hash,
            "model_dvc_hash": model_hash,
            "dvc_remote": remote_url(cfg),
            "params_digest": cfg.digest(),
            "code_revision": code_revision(),
            "teacher": cfg.data.teacher.kind + (f":{cfg.data.teacher.model}" if cfg.data.teacher.model else ""),
            "pipeline_run": run_tag,
            "mlflow_run": parent,
            "eval_set": scores.eval_set,
        }
        started = {}
        for kind, path, run in ((("backbone", backbone_path, backbone_run)), ("encoder", encoder_path, encoder_run)):
            tag, extra = pretrained_lineage(cfg, kind, path, run)
            started.update(tag)
            lineage.update(extra)
        reg = register_model(cfg, model_path, scores, lineage, run_id=rid, tags=started,
                             evaluate_champion=champion_evaluator(cfg, dataset_hash, run_tag))
        result = {
            "name": reg.name,
            "version": reg.version,
            "aliases": reg.aliases,
            "promoted": reg.decision.promote,
            "reasons": reg.decision.reasons,
            "model_uri": reg.model_uri,
            "model_dvc_hash": model_hash,
            "dataset_dvc_hash": dataset_hash,
            "started_from": started,
            "parent_run_id": parent,
            "experiment_id": tr.experiment_id(),
        }
        tags = {f"lineage.{k}": v for k, v in lineage.items()}
        tags.update(started)
        tags.update(
            {
                "registry.name": reg.name,
                "registry.version": reg.version,
                "registry.aliases": ",".join(reg.aliases),
                "registry.model_uri": reg.model_uri,
                "gate.decision": "promote" if reg.decision.promote else "reject",
                "gate.reasons": json.dumps(reg.decision.reasons)[:5000],
                "artifacts.model_dir": str(Path(model_path).resolve()),
                "artifacts.eval_report": str((Path(eval_path) / "report.md").resolve()),
            }
        )
        for k, v in tags.items():
            tr.client.set_tag(parent, k, v)
        tr.log_metrics(rid, sm.values())
        tr.client.set_tag(parent, COMPLETED_TAG, "true")
        tr.finish(rid)
        tr.finish(parent, "FINISHED")
        return result
    except BaseException:
        tr.finish(rid, "FAILED")
        raise


def champion_evaluator(cfg: LWSConfig, dataset_hash: str, run_tag: str):  # noqa: ANN201
    """How the gate re-evaluates a champion that has no scores on the challenger's evaluation set: the
    dataset pulled back from DVC by its hash (the set the challenger was evaluated on), the champion
    loaded from the registry, the same evaluation (config, limit, engine settings)."""

    def evaluate_champion(model_uri: str) -> SessionScores:
        import shutil

        from lws_core.eval import evaluate
        from lws_core.ops.registry import resolve_model_uri
        from lws_core.ops.versioning import pull_version
        from lws_core.ops.workspace import Workspace

        work = Workspace.from_config(cfg).root / "gate" / run_tag
        shutil.rmtree(work, ignore_errors=True)
        data = pull_version(cfg, dataset_hash, work / "dataset")
        evaluate(cfg, resolve_model_uri(model_uri, cfg), data, work / "champion_eval", progress=STEP_PROGRESS)
        scores = SessionScores.read(work / "champion_eval")
        shutil.rmtree(work, ignore_errors=True)
        return scores

    return evaluate_champion


def pretrained_lineage(cfg: LWSConfig, kind: str, path: str | None, run_id: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """Where the model's ``kind`` (backbone | encoder) started from: the tag ``lws.<kind>`` and lineage entries.

    A real checkpoint (``model.<kind>_path``, or a pretrain step's skip marker) is recorded by its path
    (``path:<dir>``); a stand-in the pipeline pretrained by its step run and the DVC hash it is versioned
    under (``run:<id> dvc:<hash>``; ``lws data pull --version <hash>`` brings it back). Nothing known: no tag.
    """
    marker = skipped_marker(path)
    real = getattr(cfg.model, f"{kind}_path") or (marker or {}).get("path")
    if real:
        return {f"lws.{kind}": f"path:{real}"}, {f"{kind}_path": str(real)}
    if not path:
        return {}, {}
    from lws_core.ops.versioning import version_path

    h = version_path(cfg, path, kind)
    value = " ".join(x for x in (f"run:{run_id}" if run_id else "", f"dvc:{h}") if x)
    lineage = {f"{kind}_dvc_hash": h}
    if run_id:
        lineage[f"{kind}_run"] = run_id
    return {f"lws.{kind}": value}, lineage


def run_finalize(config_json: str, run_tag: str) -> str:
    """Exit handler: a parent run that the register step did not complete is marked FAILED, with the
    step runs this pipeline run started (the failed one included) nested under it."""
    cfg = _cfg(config_json)
    tr = Tracker(cfg)
    pid = tr.find_parent(run_tag) or tr.start_parent(run_tag)
    run = tr.client.get_run(pid)
    if run.data.tags.get(COMPLETED_TAG) == "true":
        return "FINISHED"
    tr.nest_orphans(pid, run_tag)
    tr.client.set_tag(pid, "lws.failure", "a pipeline step failed before registration; no model was registered")
    tr.finish(pid, "FAILED")
    return "FAILED"

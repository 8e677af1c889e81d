"""Run the retraining pipeline on this machine with KFP's local runner (embedded defaults).

The same pipeline definition that compiles for Kubeflow runs here task by task in
subprocesses of the current Python environment (no per-task venv, no Docker).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lws_core.config import LWSConfig
from lws_core.errors import LWSError
from lws_core.ops.tracking import PIPELINE_RUN_ENV, Tracker
from lws_core.ops.workspace import Workspace, tracking_uri


@dataclass
class PipelineResult:
    run_tag: str
    status: str
    wall_s: float
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)
    cached_steps: list[str] = field(default_factory=list)
    step_notes: dict[str, str] = field(default_factory=dict)  # a pretrain step's loss / WER, or what it skipped for
    log_path: str | None = None
    error: str | None = None


def new_run_tag() -> str:
    return time.strftime("local-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


TASKS = (
    "step-configs", "synthesize", "version-data", "pretrain-backbone", "pretrain-encoder", "train", "evaluate", "register",
    "finalize",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '?([\w-]+)'?")
_END = re.compile(r"Task '?([\w-]+)'? (?:finished with status (\w+)|cache hit)")
# a step's progress line in its streamed log (lws_core.progress's line mode: "desc:  45%|###  | 90/200 [00:10<00:12, ...]")
_PROGRESS = re.compile(r"^\s*(?P<desc>[^:|\[\]]{1,60}):\s+(?P<pct>\d{1,3})%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+) \[[^<\]]*<(?P<left>[^,\]]*)")


def step_progress(line: str) -> str | None:
    """A step's progress line as a short note for the pipeline's bar ("pretrain encoder 45%, 06:00 left"), else None."""
    m = _PROGRESS.match(line)
    if m is None:
        return None
    left = m.group("left").strip()
    note = f"{m.group('desc').strip()} {m.group('pct')}%"
    return note if left in ("", "?") else f"{note}, {left} left"


@contextlib.contextmanager
def _quiet_tasks(log_path: Path, progress: bool) -> Iterator[None]:
    """Send kfp.local's task logs (executor inputs, every task's output) to a log file and show one
    progress bar on stderr instead; on failure the CLI prints the log's tail."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    log_path.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn(), console=Console(stderr=True), disable=not progress, transient=False)
    tid = bar.add_task("pipeline: starting", total=len(TASKS))

    def watch() -> None:
        done: set[str] = set()
        running = ""
        with open(log_path, errors="replace") as f:
            while True:
                line = f.readline()
                if not line:
                    if stop.is_set():
                        return
                    time.sleep(0.2)
                    continue
                line = _ANSI.sub("", line)
                if m := _END.search(line):
                    done.add(m.group(1))
                    what = "cached" if m.group(2) is None else m.group(2).lower()
                    bar.update(tid, completed=len(done), description=f"pipeline: {m.group(1)} {what}")
                elif m := _START.search(line):
                    running = m.group(1)
                    bar.update(tid, description=f"pipeline: {running} running")
                elif running and (note := step_progress(line)):
                    bar.update(tid, description=f"pipeline: {running} running ({note})")

    with open(log_path, "a", buffering=1) as log, bar:
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            with contextlib.redirect_stdout(log):
                yield
        finally:
            stop.set()
            t.join(timeout=5)


def run_local(cfg: LWSConfig, run_tag: str | None = None, progress: bool = True) -> PipelineResult:
    """Run the pipeline in this process through kfp.local; task logs go to ``<workspace>/logs/<run tag>.log``."""
    from kfp import local

    from workflows.pipeline import build_pipeline

    ws = Workspace.from_config(cfg)
    tracker = Tracker(cfg)
    tracker.experiment_id()  # create the experiment once, before parallel tasks touch the DB
    run_tag = run_tag or new_run_tag()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(ws.kfp_root),
        raise_on_error=True,
        enable_caching=cfg.pipeline.caching,  # a rerun with unchanged inputs skips synthesize/train/evaluate
    )
    pipeline = build_pipeline(cfg)
    log_path = ws.root / "logs" / f"{run_tag}.log"
    t0 = time.time()
    error = None
    previous = os.environ.get(PIPELINE_RUN_ENV)
    os.environ[PIPELINE_RUN_ENV] = run_tag  # the task subprocesses inherit it; their cache keys don't
    try:
        with _quiet_tasks(log_path, progress), warnings.catch_warnings():
            # GPU/Kubernetes settings are for the cluster; the local runner says so once per task
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            # the project image's environment is this venv: running its tasks here is the point
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            pipeline(config_json=json.dumps(cfg.to_dict(), sort_keys=True), run_tag=run_tag)
    except LWSError:
        raise
    except Exception as e:  # noqa: BLE001 - kfp.local reports a failed task as RuntimeError
        error = _ANSI.sub("", str(e)).splitlines()[0][:300]
    finally:
        if previous is None:
            os.environ.pop(PIPELINE_RUN_ENV, None)
        else:
            os.environ[PIPELINE_RUN_ENV] = previous
    wall = time.time() - t0
    res = collect_result(tracker, run_tag, wall, error)
    res.log_path = str(log_path)
    return res


def log_tail(res: PipelineResult, lines: int = 40) -> str:
    """The last lines of the task log (where a failed step's error is)."""
    if not res.log_path or not Path(res.log_path).is_file():
        return ""
    text = _ANSI.sub("", Path(res.log_path).read_text(errors="replace"))
    return "\n".join(text.splitlines()[-lines:])


def collect_result(tracker: Tracker, run_tag: str, wall: float, error: str | None) -> PipelineResult:
    """Read what the run recorded (status, metrics, lineage, per-step times) back from its MLflow parent."""
    pid = tracker.find_parent(run_tag)
    res = PipelineResult(run_tag=run_tag, status="FAILED" if error else "FINISHED", wall_s=wall, error=error, parent_run_id=pid)
    if pid:
        run = tracker.client.get_run(pid)
        res.status = "FAILED" if error else run.info.status
        res.tags = dict(run.data.tags)
        res.metrics = dict(run.data.metrics)
        children = tracker.client.search_runs(
            [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{pid}'", max_results=50
        )
        for ch in children:
            step = ch.data.tags.get("lws.step")
            if step and ch.info.end_time and ch.info.start_time:
                res.step_seconds[step] = (ch.info.end_time - ch.info.start_time) / 1000
            if step:
                _note(res, step, ch)
        for k, v in res.tags.items():
            if k.startswith("lws.cached."):
                step = k[len("lws.cached.") :]
                res.cached_steps.append(step)
                if step.startswith("pretrain_"):  # what the cached checkpoint scored when it was made
                    with contextlib.suppress(Exception):
                        _note(res, step, tracker.client.get_run(v))
    return res


def _note(res: PipelineResult, step: str, run: Any) -> None:  # noqa: ANN401 - an mlflow Run
    """A pretrain step's headline for the summary: skipped (and for which checkpoint), or its loss and WER."""
    if not step.startswith("pretrain_"):
        return
    if skipped := run.data.tags.get("lws.skipped"):
        res.step_notes[step] = f"skipped: model.{step[len('pretrain_'):]}_path = {skipped}"
        return
    m = run.data.metrics
    parts = [f"loss {m['final_loss']:.3f}"] if "final_loss" in m else []
    if "wer" in m:
        parts.append(f"WER {m['wer']:.3f} on {m.get('wer_sessions', 0):.0f} held-out-voice sessions")
    if parts:
        res.step_notes[step] = ", ".join(parts)


def ui_command(cfg: LWSConfig) -> str:
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri} --port 5000"
    return f"open {uri}"


# metrics the summary shows first (the gated ones are always added); everything else stays in MLflow
SUMMARY_METRICS = (
    "schema_valid_rate", "state_accuracy", "task_accuracy", "consistency_rate", "fdb_turn_taking_tor",
    "fdb_turn_taking_latency_s", "fdb_pause_tor", "fdb_interruption_tor", "fdb_backchannel_tor",
    "pause_hold_rate", "barge_in_yield_rate", "turn_taking_latency_s", "rtf_p95", "test_loss_total",
)


def summary_rows(res: PipelineResult, cfg: LWSConfig | None = None) -> list[tuple[str, Any]]:
    """The end-of-run table: status, times, metrics, gate, registry, lineage and where everything is."""
    t = res.tags
    rows: list[tuple[str, Any]] = [
        ("status", res.status),
        ("run tag", res.run_tag),
        ("wall time", f"{res.wall_s:.0f} s"),
    ]
    order = ["synthesize", "pretrain_backbone", "pretrain_encoder", "train", "evaluate", "register"]
    for step in sorted(set(res.step_seconds) | set(res.cached_steps), key=lambda s: order.index(s) if s in order else 9):
        when = "cached (skipped)" if step in res.cached_steps else f"{res.step_seconds[step]:.0f} s"
        note = res.step_notes.get(step)
        rows.append((f"  step {step}", f"{when}; {note}" if note else when))
    gated = [r.metric for r in cfg.registry.gate] if cfg else []
    for k in dict.fromkeys([*gated, *SUMMARY_METRICS]):
        if k in res.metrics:
            rows.append((k + (" (gated)" if k in gated else ""), f"{res.metrics[k]:.4f}"))
        elif k in gated:
            rows.append((k + " (gated)", "not reported"))
    reasons = t.get("gate.reasons")
    rows += [
        ("gate decision", t.get("gate.decision", "-")),
    ]
    if reasons:
        try:
            rows += [("  reason", r) for r in json.loads(reasons)]
        except json.JSONDecodeError:
            rows.append(("  reasons", reasons))
    rows += [
        ("registered", f"{t['registry.name']} v{t['registry.version']}" if "registry.version" in t else "-"),
        ("aliases", t.get("registry.aliases", "-")),
        ("dataset DVC hash", t.get("lineage.dataset_dvc_hash", "-")),
        ("model DVC hash", t.get("lineage.model_dvc_hash", "-")),
        ("backbone from", t.get("lws.backbone", "-")),
        ("encoder from", t.get("lws.encoder", "-")),
        ("DVC remote", t.get("lineage.dvc_remote", "-")),
        ("code revision", t.get("lineage.code_revision", "-")),
        ("params digest", t.get("lineage.params_digest", "-")),
        ("model dir", t.get("artifacts.model_dir", "-")),
        ("eval report", t.get("artifacts.eval_report", "-")),
        ("MLflow parent run", res.parent_run_id or "-"),
        ("task log", res.log_path or "-"),
    ]
    if t.get("lws.failure"):
        rows.append(("failure", t["lws.failure"]))
    if res.error:
        rows.append(("error", res.error))
    return rows

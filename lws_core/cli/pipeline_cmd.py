"""`lws pipeline`: run the retraining workflow locally, compile it, submit it, schedule it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lws_core.cli.common import ConfigOpt, SetOpt, console, out, resolve_config

app = typer.Typer(help="The retraining workflow: synthesize → version → train → evaluate → register/promote.", no_args_is_help=True)


@app.command("run")
def run(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    run_tag: Annotated[str | None, typer.Option("--run-tag", help="Name of this run in MLflow (default: a fresh tag).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar (task logs always go to <workspace>/logs/).")] = False,
) -> None:
    """Run the whole pipeline on this machine (KFP local runner, MLflow on SQLite, DVC local remote, CPU)."""
    import os
    import sys

    from rich.table import Table

    from workflows.local import log_tail, run_local, summary_rows, ui_command

    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cfg = resolve_config(config, set_)
    from lws_core.model.preflight import check_model_paths

    check_model_paths(cfg)  # a bad checkpoint fails here, in one line, before any step runs
    console.print(
        f"[bold]lws pipeline run[/]: {cfg.data.sessions} sessions, preset {cfg.model.preset}, "
        f"{cfg.train.max_steps} steps ({cfg.train.backend}), workspace {Path(cfg.pipeline.workspace).resolve()}"
    )
    res = run_local(cfg, run_tag, progress=not quiet)
    if res.status != "FINISHED":
        console.print(f"[red]a pipeline step failed[/]; last lines of {res.log_path}:")
        console.print(log_tail(res), markup=False, highlight=False)
    ws = Path(cfg.pipeline.workspace).resolve()
    t = Table(title=f"LWS retraining pipeline: {res.status}")
    t.add_column("what", style="bold")
    t.add_column("value", overflow="fold")
    for k, v in summary_rows(res, cfg):
        t.add_row(k, str(v))
    t.add_row("workspace", str(ws))
    t.add_row("MLflow artifacts", str(ws / "mlartifacts") if not cfg.registry.tracking_uri else "(tracking server)")
    t.add_row("KFP task outputs", str(ws / "kfp"))
    t.add_row("champion model", f"lws simulate --model models:/{cfg.registry.model_name}@champion IN.wav --out OUT")
    t.add_row("MLflow UI", ui_command(cfg))
    out.print(t)
    out.print(f"open the MLflow UI on this run: {ui_command(cfg)}", soft_wrap=True)
    if res.parent_run_id:  # the link opens the model-training view (MLflow 3's UI defaults to GenAI)
        from lws_core.ops.tracking import Tracker, ui_url

        base = cfg.registry.tracking_uri if (cfg.registry.tracking_uri or "").startswith("http") else "http://127.0.0.1:5000"
        out.print(f"  then: {ui_url(base, Tracker(cfg).experiment_id(), res.parent_run_id)}", soft_wrap=True)
    if res.status != "FINISHED":
        sys.exit(1)


@app.command("register")
def register_cmd(
    model: Annotated[Path, typer.Option("--model", help="Trained LWS model directory.")],
    eval_dir: Annotated[Path, typer.Option("--eval", help="Evaluation output directory (its session_scores.json is gated).")],
    dataset_hash: Annotated[
        str | None, typer.Option("--dataset-hash", help="DVC hash of the training data (lineage); or use --dataset-hash-file.")
    ] = None,
    dataset_hash_file: Annotated[
        Path | None, typer.Option("--dataset-hash-file", help="File holding that hash (written by `lws data push --hash-file`).")
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the registration (version, aliases, gate decision) here as JSON.")
    ] = None,
    run_tag: Annotated[str | None, typer.Option("--run-tag", help="Name of the MLflow parent run (default: a fresh tag).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Register a trained model in MLflow and gate it (challenger; champion only if better beyond noise, worse on none).

    The pipeline's last step on its own, for `dvc repro` and for models trained outside the pipeline:
    it versions the model with DVC, records lineage, and moves aliases only if everything else succeeded."""
    import json

    from lws_core.cli.ops_cmd import write_text_atomic
    from lws_core.errors import InputError
    from lws_core.ops.steps import run_finalize, run_register
    from workflows.local import new_run_tag

    cfg = resolve_config(config, set_)
    if (dataset_hash is None) == (dataset_hash_file is None):
        raise InputError("lws pipeline register: give exactly one of --dataset-hash and --dataset-hash-file")
    if dataset_hash_file is not None:
        if not dataset_hash_file.is_file():
            raise InputError(f"--dataset-hash-file {dataset_hash_file}: file not found")
        dataset_hash = dataset_hash_file.read_text().strip()
    if not dataset_hash:
        raise InputError("lws pipeline register: the dataset hash is empty")
    config_json, tag = json.dumps(cfg.to_dict()), run_tag or new_run_tag()
    try:
        res = run_register(config_json, tag, str(model), str(eval_dir), dataset_hash)
    except BaseException:
        run_finalize(config_json, tag)  # what the pipeline's exit handler does: the parent run is FAILED
        raise
    if out_file is not None:
        write_text_atomic(out_file, json.dumps(res, indent=2, sort_keys=True) + "\n")
    decision = "promoted to champion" if res["promoted"] else "kept as challenger; the champion stays"
    out.print(f"registered {res['name']} v{res['version']} ({', '.join(res['aliases'])}): {decision}")
    for reason in res["reasons"]:
        console.print(f"  {reason}", markup=False, highlight=False)


ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded on the version as a tag, visible in the MLflow UI).")]


@app.command("promote")
def promote_cmd(
    version: Annotated[str, typer.Option("--version", help="Registered version to make champion.")],
    reason: ReasonOpt,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Make a version champion by hand, whatever the gate said; tags `promotion.reason/by/at` on it."""
    from lws_core.ops.registry import promote

    cfg = resolve_config(config, set_)
    prev, new = promote(cfg, version, reason)
    out.print(f"{cfg.registry.model_name}@champion: v{prev or '-'} -> v{new} ({reason})")


@app.command("rollback")
def rollback_cmd(
    reason: ReasonOpt,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Put the champion alias back on the version the current champion replaced; tags `rollback.*` on it."""
    from lws_core.ops.registry import rollback

    cfg = resolve_config(config, set_)
    old, new = rollback(cfg, reason)
    out.print(f"{cfg.registry.model_name}@champion: v{old} -> v{new} (rolled back: {reason})")


@app.command("compile")
def compile_cmd(
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the pipeline YAML.")] = Path("workflows/compiled/lws_pipeline.yaml"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Compile the pipeline to KFP YAML (cluster settings from the config's `pipeline` section)."""
    from workflows.pipeline import compile_pipeline

    cfg = resolve_config(config, set_)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    compile_pipeline(cfg, str(out_file))
    out.print(f"compiled {out_file}")


SkipCheckOpt = Annotated[
    bool, typer.Option("--skip-check", help="Do not run `lws pipeline check` first (e.g. endpoints reachable only inside the cluster).")
]


def _precheck(cfg, host: str | None, escape: str) -> None:  # noqa: ANN001
    """`lws pipeline check`'s probes, one line each on stderr; raises (exit 2) when a part fails."""
    from lws_core.ops.remote_check import require_remotes

    console.print("lws pipeline check (before anything runs):", markup=False, highlight=False)
    require_remotes(cfg, host, lambda c: console.print("  " + c.line(), markup=False, highlight=False, soft_wrap=True), escape)


@app.command("check")
def check_cmd(
    host: Annotated[str | None, typer.Option("--host", help="KFP API URL to probe (default: pipeline.host; none: skipped).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Verify, with this environment's credentials, that every remote a run needs is reachable and writable:
    the S3 bucket(s), the DVC remote, the MLflow tracking server and its artifact store, the KFP API.
    One line per part; exit 2 if any fails. `submit` and `schedule` run it first."""
    from lws_core.ops.remote_check import require_remotes

    cfg = resolve_config(config, set_)
    require_remotes(cfg, host, lambda c: out.print(c.line(), markup=False, highlight=False, soft_wrap=True))
    out.print("all parts reachable and writable")


@app.command("submit")
def submit_cmd(
    host: Annotated[str, typer.Option("--host", help="KFP API URL, e.g. http://ml-pipeline.kubeflow:8888.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    skip_check: SkipCheckOpt = False,
) -> None:
    """Compile and submit one run to a Kubeflow Pipelines API (after `lws pipeline check`)."""
    from workflows.remote import submit

    cfg = resolve_config(config, set_)
    if not skip_check:
        _precheck(cfg, host, "--skip-check submits anyway")
    r = submit(cfg, host)
    out.print(f"submitted run {r['run_id']} (MLflow parent tag {r['run_tag']}) to {host}")


@app.command("schedule")
def schedule_cmd(
    host: Annotated[str, typer.Option("--host", help="KFP API URL.")],
    cron: Annotated[str | None, typer.Option("--cron", help="6-field cron, seconds first (default: pipeline.cron).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    skip_check: SkipCheckOpt = False,
) -> None:
    """Create a recurring run that retrains on a schedule (after `lws pipeline check`)."""
    from workflows.remote import cron_ok, schedule

    cfg = resolve_config(config, set_)
    cron_ok(cron or cfg.pipeline.cron)  # a typo is the user's to fix before any endpoint is probed
    if not skip_check:
        _precheck(cfg, host, "--skip-check schedules anyway")
    r = schedule(cfg, host, cron)
    out.print(f"recurring run {r['recurring_run_id']} with cron '{r['cron']}' on {host}")

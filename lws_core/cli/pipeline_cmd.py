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
    if res.status != "FINISHED":
        sys.exit(1)


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


@app.command("submit")
def submit_cmd(
    host: Annotated[str, typer.Option("--host", help="KFP API URL, e.g. http://ml-pipeline.kubeflow:8888.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Compile and submit one run to a Kubeflow Pipelines API."""
    from workflows.remote import submit

    r = submit(resolve_config(config, set_), host)
    out.print(f"submitted run {r['run_id']} (MLflow parent tag {r['run_tag']}) to {host}")


@app.command("schedule")
def schedule_cmd(
    host: Annotated[str, typer.Option("--host", help="KFP API URL.")],
    cron: Annotated[str | None, typer.Option("--cron", help="6-field cron, seconds first (default: pipeline.cron).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Create a recurring run that retrains on a schedule."""
    from workflows.remote import schedule

    r = schedule(resolve_config(config, set_), host, cron)
    out.print(f"recurring run {r['recurring_run_id']} with cron '{r['cron']}' on {host}")

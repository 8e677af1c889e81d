"""`lws eval`: evaluate models (internal test split, Full-Duplex-Bench, VoiceBench)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lws_core.cli.common import ConfigOpt, SetOpt, out, resolve_config

app = typer.Typer(help="Evaluate a model: internal metrics, Full-Duplex-Bench, VoiceBench.", no_args_is_help=True)


@app.command("run")
def run(
    model: Annotated[str, typer.Option("--model", help="Model directory or models:/NAME@ALIAS.")],
    data: Annotated[Path, typer.Option("--data", help="Dataset directory (its test split is used).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for report.md, metrics.json and plots.")],
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate at most N test sessions (default: eval.limit).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Stream the test split through the engine and score it (schema, states, answers, consistency, latency, RTF)."""
    from rich.table import Table

    from lws_core.cli.simulate_cmd import _resolve_model
    from lws_core.errors import InputError
    from lws_core.eval import evaluate

    cfg = resolve_config(config, set_)
    if not data.is_dir():
        raise InputError(f"dataset directory not found: {data}")
    s = evaluate(cfg, _resolve_model(model), data, out_dir, limit=limit, progress=not quiet)
    t = Table(title=f"evaluation -> {s.report_path}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in s.metrics.items():
        t.add_row(k, "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)))
    out.print(t)

"""`lws config`: show and check the resolved config."""

from __future__ import annotations

import typer

from lws_core.cli.common import ConfigOpt, SetOpt, out, resolve_config

app = typer.Typer(help="Show and check the typed config read from params.yaml.", no_args_is_help=True)


@app.command("show")
def show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved config (defaults + params.yaml + --set) as YAML."""
    cfg = resolve_config(config, set_)
    out.print(cfg.to_yaml(), end="", markup=False, highlight=False)


@app.command("check")
def check(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Validate the config; exit 2 with the offending key if it is wrong."""
    cfg = resolve_config(config, set_)
    out.print(f"config ok (digest {cfg.digest()})")

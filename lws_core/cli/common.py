"""Shared CLI helpers: config loading, console, progress bars."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lws_core.config import LWSConfig, load_config

console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="params.yaml to read (default: ./params.yaml if present, else built-in defaults)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value, e.g. --set train.max_steps=50 (repeatable)."),
]


def resolve_config(path: Path | None, sets: list[str] | None = None) -> LWSConfig:
    """Load the config and apply ``--set key=value`` overrides (values parsed as YAML)."""
    import yaml

    from lws_core.errors import ConfigError

    cfg = load_config(path)
    if sets:
        overrides = {}
        for item in sets:
            if "=" not in item:
                raise ConfigError(f"--set expects key=value, got {item!r}")
            k, v = item.split("=", 1)
            overrides[k.strip()] = yaml.safe_load(v)
        cfg = cfg.with_overrides(overrides)
    return cfg

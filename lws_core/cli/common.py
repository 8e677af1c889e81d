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


_TEARDOWN_SKIPPABLE = False


def skip_teardown() -> None:
    """Tell the console entry point that the finished command left nothing to tear down (its outputs
    are written and closed, no child process or server is running), so the process may end without
    the interpreter's module teardown (:func:`lws_core.cli.main.main`). Call it last, on success."""
    global _TEARDOWN_SKIPPABLE
    _TEARDOWN_SKIPPABLE = True


def teardown_skippable() -> bool:
    """Whether the command asked for a fast exit and no other non-daemon thread is still running
    (a normal exit would wait for such a thread; a fast exit would cut it off)."""
    import threading

    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    return _TEARDOWN_SKIPPABLE and not others


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

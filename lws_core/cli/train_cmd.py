"""`lws train`: train an LWS model on a synthesized dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lws_core.cli.common import ConfigOpt, SetOpt, console, out, resolve_config


def train(
    data: Annotated[Path, typer.Option("--data", help="Dataset directory written by `lws data synth`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to write (replaced atomically at the end).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Resume from the last checkpoint of an interrupted run.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    backbone: Annotated[
        Path | None, typer.Option("--backbone", help="Start from this LM checkpoint (`lws pretrain backbone`); same as --set model.backbone_path=DIR.")
    ] = None,
    encoder: Annotated[
        Path | None, typer.Option("--encoder", help="Start from this audio encoder (`lws pretrain encoder`); same as --set model.encoder_path=DIR.")
    ] = None,
) -> None:
    """Train the configured model (DeepSpeed by default; `--set train.backend=torch` for plain PyTorch)."""
    from rich.table import Table

    from lws_core.errors import InputError
    from lws_core.ops.steps import skipped_marker

    cfg = resolve_config(config, set_)  # user mistakes fail before torch is imported (seconds)
    given = {}
    for kind, path in (("backbone", backbone), ("encoder", encoder)):
        if path is None:
            continue
        if not path.is_dir():
            raise InputError(f"--{kind} {path}: checkpoint directory not found")
        # the folder of a skipped `lws pretrain` names the real checkpoint the config already set
        marker = skipped_marker(path)
        given[f"model.{kind}_path"] = marker["path"] if marker else str(path)
    if given:
        cfg = cfg.with_overrides(given)
    if not data.is_dir():
        raise InputError(f"dataset directory not found: {data}")
    from lws_core.model.preflight import check_model_paths

    check_model_paths(cfg)
    from lws_core.train import train as run_training

    console.print(
        f"training preset [bold]{cfg.model.preset}[/] with {cfg.train.backend}"
        + (f" ZeRO-{cfg.train.zero_stage}" if cfg.train.backend == "deepspeed" else "")
        + f" for {cfg.train.max_steps} steps"
    )
    s = run_training(cfg, data, out_dir, progress=not quiet, resume=resume)
    if os.environ.get("RANK", "0") != "0":  # under torchrun / a TrainJob: rank 0 saved and reports
        return
    t = Table(title=f"trained model -> {out_dir}")
    t.add_column("what")
    t.add_column("value", justify="right")
    rows = [
        ("steps", str(s.steps)),
        ("train time", f"{s.train_seconds:.1f} s"),
        ("tokens / s", f"{s.tokens_per_s:.0f}"),
        ("tokens", f"{s.tokens:,}"),
        ("parameters", f"{s.parameters / 1e6:.2f} M ({s.model_bytes / 2**20:.1f} MiB {s.saved_dtype})"),
        ("backend", s.backend + (f" ZeRO-{s.zero_stage}" if s.zero_stage is not None else "") + f", {s.precision}"),
        ("train loss", f"{s.train_loss:.3f}"),
        *[(f"train loss {k} (last log)", f"{v:.3f}") for k, v in s.train_channel_losses.items()],
        *[(f"val loss {k}", f"{v:.3f}") for k, v in s.val_losses.items()],
        ("val state accuracy", "-" if s.val_state_accuracy is None else f"{s.val_state_accuracy:.3f}"),
        ("resumed from", s.resumed_from or "-"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)

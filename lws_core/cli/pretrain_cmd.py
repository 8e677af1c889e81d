"""`lws pretrain`: the stand-ins for a pretrained LLM and a pretrained speech encoder.

Each command is skipped (exit 0) when the config names a real checkpoint
(`model.backbone_path` / `model.encoder_path`): `--out` then holds only `skipped.json`
naming it (so DVC's out exists), and `lws train --backbone/--encoder` on that folder
starts from the real checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lws_core.cli.common import ConfigOpt, SetOpt, console, out, resolve_config

app = typer.Typer(
    help="Pretrain the stand-in backbone (text-only LM) and audio encoder (CTC recogniser) that `lws train` starts from.",
    no_args_is_help=True,
)

OutOpt = Annotated[Path, typer.Option("--out", help="Checkpoint directory to write (replaced atomically at the end).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def _skipped(cfg, kind: str, out_dir: Path) -> bool:  # noqa: ANN001 - LWSConfig
    """True (after saying so and leaving the marker in ``out_dir``) when the config names a real checkpoint for
    ``kind``; a configured path that is not there is a user error."""
    from lws_core.ops.steps import configured_checkpoint, write_skip_marker

    real = configured_checkpoint(cfg, kind)
    if real is None:
        return False
    write_skip_marker(out_dir, kind, real)
    out.print(f"pretrain {kind}: skipped, model.{kind}_path names a real checkpoint ({real}); training starts from it")
    return True


def _summary(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.table import Table

    t = Table(title=title)
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in rows:
        t.add_row(k, v)
    out.print(t)


def _wer_rows(breakdown: dict[str, float]) -> list[tuple[str, str]]:
    """The WER per accent and the numbers / other words missed (``wer_breakdown``), as summary rows."""
    accents = [(f"  WER, accent {k.split('.', 1)[1]}", f"{v:.3f}") for k, v in breakdown.items() if k.startswith("wer_accent.")]
    missed = [(f"  {k.split('_', 1)[1]} missed", f"{v:.3f}") for k, v in breakdown.items() if k.startswith("missed_")]
    return accents + missed


@app.command("backbone")
def backbone(
    out_dir: OutOpt,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Synthesize a text-only corpus and pretrain the preset's causal LM on it (`pretrain.backbone.*`)."""
    cfg = resolve_config(config, set_)  # user mistakes fail here, before torch is imported (seconds)
    if _skipped(cfg, "backbone", out_dir):
        return
    from lws_core.train.pretrain_backbone import build_backbone

    bc = cfg.pretrain.backbone
    console.print(
        f"pretraining the [bold]{cfg.model.preset}[/] backbone on {bc.sessions} text-only sessions for {bc.max_steps} steps"
    )
    r = build_backbone(cfg, out_dir, progress=not quiet)
    _summary(
        f"pretrained backbone -> {out_dir}",
        [
            ("steps", str(r.steps)),
            ("train sessions", f"{r.train_sessions:,}"),
            ("parameters", f"{r.parameters / 1e6:.2f} M"),
            ("final loss", f"{r.final_loss:.3f}"),
            ("tokens / s", f"{r.tokens_per_s:.0f}"),
            ("wall time", f"{r.wall_s:.1f} s"),
        ],
    )


@app.command("encoder")
def encoder(
    data: Annotated[Path, typer.Option("--data", help="Dataset directory written by `lws data synth`.")],
    out_dir: OutOpt,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain the audio encoder as a CTC speech recogniser on the dataset's speech (`pretrain.encoder.*`)."""
    from lws_core.errors import InputError

    cfg = resolve_config(config, set_)  # user mistakes fail here, before torch is imported (seconds)
    if _skipped(cfg, "encoder", out_dir):
        return
    if not data.is_dir():
        raise InputError(f"dataset directory not found: {data}")
    from lws_core.train.pretrain_encoder import pretrain_encoder

    ec = cfg.pretrain.encoder
    console.print(f"pretraining the [bold]{cfg.model.preset}[/] audio encoder (CTC on {ec.targets}) for {ec.max_steps} steps")
    r = pretrain_encoder(cfg, data, out_dir, progress=not quiet)
    ci = "" if r.wer_interval is None else f", 95 % interval {r.wer_interval[0]:.3f}-{r.wer_interval[1]:.3f}"
    wer = "-" if r.wer is None or r.wer != r.wer else f"{r.wer:.3f} ({r.wer_sessions} held-out-voice sessions{ci})"
    _summary(
        f"pretrained encoder -> {out_dir}",
        [
            ("steps", str(r.steps)),
            ("train units", f"{r.train_units:,}"),
            ("final CTC loss", f"{r.final_loss:.3f}"),
            ("WER", wer),
            *_wer_rows(r.wer_breakdown),
            ("wall time", f"{r.wall_s:.1f} s"),
        ],
    )

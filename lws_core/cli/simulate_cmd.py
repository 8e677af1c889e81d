"""`lws simulate`: stream a recording through the engine as if live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lws_core.cli.common import out


def simulate(
    audio: Annotated[Path, typer.Argument(help="Input recording (WAV any rate/bit depth, FLAC, OGG; stereo is downmixed).")],
    model: Annotated[str, typer.Option("--model", help="Model directory, or models:/NAME@ALIAS from the MLflow registry.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory: output.wav, output.json, written.md, units.jsonl, timeline.png.")],
    system: Annotated[str | None, typer.Option("--system", help="Optional session prompt (persona, task).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run the full-duplex engine over a recording; the output audio is time-synchronous with the input."""
    from lws_core.engine import Engine
    from lws_core.errors import InputError

    if not audio.is_file():
        raise InputError(f"audio file not found: {audio}")
    model_dir = _resolve_model(model)
    engine = Engine.from_dir(model_dir)
    result = engine.simulate_file(audio, out_dir, system=system, progress=not quiet)
    speak_units = sum(u.state == "speak" for u in result.units)
    out.print(
        f"{len(result.units)} units ({speak_units} speaking), {len(result.spoken_words)} words spoken, "
        f"{len(result.written)} chars written, RTF p50 {result.rtf_p50:.3f} p95 {result.rtf_p95:.3f} -> {out_dir}"
    )


def _resolve_model(model: str) -> Path:
    """A directory, or a models:/ URI resolved through the MLflow registry (ops layer, imported lazily)."""
    if model.startswith("models:/"):
        from lws_core.ops.registry import resolve_model_uri

        return resolve_model_uri(model)
    return Path(model)

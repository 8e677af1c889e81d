"""`lws simulate`: stream a recording through the engine as if live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lws_core.cli.common import ConfigOpt, out, resolve_config, skip_teardown


def simulate(
    audio: Annotated[
        Path,
        typer.Argument(
            help="Input recording (WAV of any rate and bit depth, FLAC, OGG; stereo is downmixed)."
        ),
    ],
    model: Annotated[
        str, typer.Option("--model", help="Model directory, or models:/NAME@ALIAS from the MLflow registry.")
    ],
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", help="Output directory: output.wav, output.json, written.md, units.jsonl, timeline.png."
        ),
    ],
    config: ConfigOpt = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a value, e.g. --set engine.temperature=0.7 or --set engine.max_context_tokens=1024 (repeatable).",
        ),
    ] = None,
    system: Annotated[
        str | None, typer.Option("--system", help="Optional session prompt (persona, task).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="Torch device: cpu, cuda, cuda:1.")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run the full-duplex engine over a recording; the output audio is time-synchronous with the input."""
    from lws_core.engine import Engine, EngineConfig
    from lws_core.engine.engine import engine_overrides
    from lws_core.errors import InputError

    engine_sets, rest = engine_overrides(sets)
    cfg = resolve_config(config, rest)
    base = getattr(cfg, "engine", None)  # the project config's engine section, once it has one
    engine_cfg = (
        EngineConfig.model_validate(base.model_dump()) if base is not None else EngineConfig()
    ).with_overrides(engine_sets)
    if not audio.is_file():
        raise InputError(f"audio file not found: {audio}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a directory")
    model_dir = _resolve_model(model, cfg)
    engine = Engine.from_dir(model_dir, cfg, device=device, config=engine_cfg, lean=True)
    engine.use_threads()
    result = engine.simulate_file(audio, out_dir, system=system, progress=not quiet)
    speak_units = sum(u.state == "speak" for u in result.units)
    out.print(
        f"{len(result.units)} units ({speak_units} speaking), {len(result.spoken_words)} words spoken, "
        f"{len(result.written)} chars written, RTF p50 {result.rtf_p50:.3f} p95 {result.rtf_p95:.3f} -> {out_dir}"
    )
    skip_teardown()  # outputs published: `lws simulate` need not wait 1-2 s for torch's module teardown


def _resolve_model(model: str, cfg=None) -> Path:  # noqa: ANN001
    """A directory, or a models:/ URI resolved through the MLflow registry (ops layer, imported lazily).

    ``cfg`` is the command's resolved config, so ``--config``/``--set registry.*`` choose the
    registry (and the workspace whose model cache serves an offline champion)."""
    if model.startswith("models:/"):
        from lws_core.ops.registry import resolve_model_uri

        return resolve_model_uri(model, cfg)
    return Path(model)

"""`lws serve`: the realtime WebSocket server and web page for one model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lws_core.cli.common import ConfigOpt, SetOpt, console


def serve(
    model: Annotated[str, typer.Option("--model", help="Model directory, or models:/NAME@ALIAS from the MLflow registry.")],
    host: Annotated[str, typer.Option("--host", help="Interface to bind. Beyond loopback a --token is required.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0 = any free port).")] = 8000,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="LWS_SERVE_TOKEN", help="Shared secret clients must send (hello.token, ?token= or Bearer header)."),
    ] = None,
    max_sessions: Annotated[int, typer.Option("--max-sessions", help="Concurrent engine sessions (a safety cap; the measured capacity refuses first); more are refused with close 1013.")] = 256,
    max_connections: Annotated[int, typer.Option("--max-connections", help="Open WebSockets, including ones before hello.")] = 320,
    max_session_s: Annotated[float, typer.Option("--max-session-s", help="Wall-clock limit of one session (s); then close 1008.")] = 1800.0,
    max_frame_bytes: Annotated[int, typer.Option("--max-frame-bytes", help="Largest accepted frame; bigger ones get a too_large error.")] = 256 * 1024,
    allowed_origin: Annotated[
        list[str] | None,
        typer.Option("--allowed-origin", help="Extra browser Origin allowed to connect (repeatable; the server's own is always allowed; * = any)."),
    ] = None,
    measured_admission: Annotated[
        bool,
        typer.Option(
            "--measured-admission/--sessions-only",
            help="Refuse sessions the measured engine speed cannot keep real time for (default), or only enforce --max-sessions.",
        ),
    ] = True,
    target_utilization: Annotated[
        float,
        typer.Option(
            "--target-utilization",
            help="Measured admission refuses a session when the cost model predicts the engine thread busier than "
            "this share (the latency bound, half a unit, refuses too; docs/serving.md, Admission).",
        ),
    ] = 0.95,
    workers: Annotated[int, typer.Option("--workers", help="Threads for session set-up and tear-down (units run on the batching engine thread).")] = 1,
    batch: Annotated[
        bool,
        typer.Option("--batch/--no-batch", help="Advance every ready session in one batched engine step (default), or one session at a time."),
    ] = True,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most sessions advanced in one batched step.")] = 256,
    continuous: Annotated[
        bool,
        typer.Option(
            "--continuous/--rounds",
            help="Batching: a ready unit joins the running batch at its next model call (--continuous), or waits "
            "for the running round to end (--rounds, default).",
        ),
    ] = False,
    compression: Annotated[
        bool,
        typer.Option(
            "--compression/--no-compression",
            help="Offer permessage-deflate on the WebSocket (default off: speech PCM barely compresses, and deflate costs CPU on both ends).",
        ),
    ] = False,
    warmup_speak_share: Annotated[
        float,
        typer.Option(
            "--warmup-speak-share",
            help="Share of the start-up round's sessions that decode the busiest unit (speak, both text budgets full); "
            "1.0 (default): the first capacity estimate holds for any model, and live rounds raise it to the real mix.",
        ),
    ] = 1.0,
    warmup_spoken: Annotated[
        bool,
        typer.Option(
            "--warmup-spoken/--no-warmup-spoken",
            help="Size the start-up round's speaking units to what this model writes and says in its busiest unit "
            "on a spoken question, not to both budgets full (default on; off: a first estimate well under capacity, "
            "which refuses sessions below it; see docs/serving.md, Admission).",
        ),
    ] = True,
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            help="Server processes on the one port, each with its own engine (one core each; the kernel spreads "
            "connections over them). Session and connection limits are totals, shared out.",
        ),
    ] = 1,
    device: Annotated[str, typer.Option("--device", help="Torch device for the model: cpu, cuda, cuda:1 ...")] = "cpu",
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Serve a model over WebSocket (protocol lws.v1, docs/serving.md) with the web page at http://HOST:PORT/."""
    # light: a mistake fails before torch and the web stack are imported
    from lws_core.serve.settings import ServeSettings

    settings = ServeSettings.from_options(
        host=host,
        port=port,
        token=token or None,
        max_sessions=max_sessions,
        max_connections=max_connections,
        max_session_s=max_session_s,
        max_frame_bytes=max_frame_bytes,
        allowed_origins=allowed_origin or [],
        workers=workers,
        batch=batch,
        max_batch=max_batch,
        continuous_batching=continuous,
        measured_admission=measured_admission,
        target_utilization=target_utilization,
        compression=compression,
        warmup_speak_share=warmup_speak_share,
        warmup_spoken=warmup_spoken,
    )  # refuse an open port without a token, and bad limits, before loading anything
    from lws_core.cli.common import resolve_config

    if processes < 1:
        from lws_core.errors import ConfigError

        raise ConfigError(f"--processes must be >= 1 (got {processes})")
    cfg = resolve_config(config, sets)
    model_dir = _resolve_model(model, config, sets)
    if processes > 1:
        from lws_core.serve.processes import serve_processes, spec_for

        serve_processes(spec_for(str(model_dir), model, cfg, device, settings), settings, processes, announce=console.print)
        return
    from lws_core.engine import Engine
    from lws_core.serve import run_server

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    engine = Engine.from_dir(model_dir, cfg, device=device, lean=True)  # decoding and context policy from cfg.engine
    engine.use_threads()
    console.print(f"lws serve: {model} on http://{host}:{port}/ (WebSocket /ws, auth {'on' if settings.token else 'off'})")
    run_server(engine, settings, model_name=model)


def _resolve_model(model: str, config: Path | None, sets: list[str] | None) -> Path:
    """A directory, or a models:/ URI through the MLflow registry (ops layer, imported only here)."""
    from lws_core.errors import InputError

    if model.startswith("models:/"):
        from lws_core.cli.common import resolve_config
        from lws_core.ops.registry import resolve_model_uri

        return resolve_model_uri(model, resolve_config(config, sets))
    p = Path(model)
    if not p.is_dir():
        raise InputError(f"model directory not found: {p}")
    return p

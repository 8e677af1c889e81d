"""`lws data`: synthesize Listen-Write-Speak sessions and look at one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lws_core.cli.common import ConfigOpt, SetOpt, console, out, resolve_config

app = typer.Typer(help="Data synthesis: teacher scripts aligned to units with synthesized user speech.", no_args_is_help=True)


@app.command("synth")
def synth_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Output dataset directory (replaced atomically at the end).")],
    config: ConfigOpt = None,
    sessions: Annotated[int | None, typer.Option("--sessions", help="Sessions to synthesize (default: data.sessions).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes (default: data.workers).")] = None,
    sets: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Synthesize a train/validation/test dataset with card.json and README.md."""
    from rich.table import Table

    from lws_core.data import synthesize
    from lws_core.errors import InputError

    if sessions is not None and sessions < 1:
        raise InputError(f"--sessions must be >= 1, got {sessions}")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    cfg = resolve_config(config, sets)
    s = synthesize(cfg, out_dir, sessions=sessions, workers=workers, progress=not quiet)
    t = Table(title=f"dataset {out_dir}")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in s.rows.items():
        t.add_row(f"rows {k}", str(v))
    for k, v in s.per_scenario.items():
        t.add_row(f"scenario {k}", str(v))
    for k, v in s.rejects.items():
        t.add_row(f"rejected: {k}", str(v))
    t.add_row("audio hours", f"{s.audio_hours:.3f}")
    t.add_row("units", str(s.units))
    t.add_row("wall s", f"{s.wall_s:.1f}")
    t.add_row("audio s / wall s", f"{s.audio_s_per_s:.0f}")
    out.print(t)


@app.command("plan")
def plan_cmd(
    sessions: Annotated[int, typer.Option("--sessions", help="Sessions to synthesize (all shards).")] = 500_000,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    latency_s: Annotated[float, typer.Option("--latency-s", help="Teacher latency per call, seconds.")] = 2.5,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="Requests in flight per pod (default: data.teacher.concurrency).")] = None,
    shards: Annotated[int | None, typer.Option("--shards", help="Shards (default: data.shards, at least one per --sessions-per-shard).")] = None,
    sessions_per_shard: Annotated[int, typer.Option("--sessions-per-shard", help="Largest shard when --shards is not given.")] = 25_000,
    parallelism: Annotated[int | None, typer.Option("--parallelism", help="Shards at once (default: data.shard_parallelism).")] = None,
    price_per_1k_tokens: Annotated[float | None, typer.Option("--price-per-1k-tokens", help="USD per 1k tokens, prompt and completion alike (default: data.teacher.usd_per_1k_*).")] = None,
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", help="Prompt tokens per teacher call.")] = 300,
    completion_tokens: Annotated[int, typer.Option("--completion-tokens", help="Completion tokens per teacher call.")] = 250,
    build_rate: Annotated[float, typer.Option("--build-sessions-per-s", help="TTS stage rate per pod (benchmarks/results/data.md).")] = 90.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Shard count, expected wall time and teacher cost of a synthesis, before paying for it."""
    import json
    import math

    from rich.table import Table

    from lws_core.data.plan import plan
    from lws_core.errors import InputError

    for name, v in (("--sessions", sessions), ("--concurrency", concurrency), ("--shards", shards),
                    ("--parallelism", parallelism), ("--sessions-per-shard", sessions_per_shard)):
        if v is not None and v < 1:
            raise InputError(f"{name} must be >= 1, got {v}")
    if latency_s <= 0 or build_rate <= 0:
        raise InputError("--latency-s and --build-sessions-per-s must be > 0")
    if price_per_1k_tokens is not None and price_per_1k_tokens < 0:
        raise InputError(f"--price-per-1k-tokens must be >= 0, got {price_per_1k_tokens}")
    cfg = resolve_config(config, sets)
    d, t = cfg.data, cfg.data.teacher
    n_shards = shards or max(d.shards, math.ceil(sessions / sessions_per_shard))
    p = plan(
        sessions, dict(d.scenarios), latency_s=latency_s, concurrency=concurrency or t.concurrency, shards=n_shards,
        parallelism=parallelism or d.shard_parallelism, requests_per_minute=t.requests_per_minute,
        tokens_per_minute=t.tokens_per_minute, prompt_tokens_per_call=prompt_tokens,
        completion_tokens_per_call=completion_tokens,
        usd_per_1k_input=t.usd_per_1k_input if price_per_1k_tokens is None else price_per_1k_tokens,
        usd_per_1k_output=t.usd_per_1k_output if price_per_1k_tokens is None else price_per_1k_tokens,
        build_sessions_per_s=build_rate,
    )
    if as_json:
        out.print_json(json.dumps(p.as_dict()))
        return
    tb = Table(title=f"synthesis plan: {sessions} sessions")
    tb.add_column("what")
    tb.add_column("value", justify="right")
    hours = p.wall_s / 3600
    for k, v in [
        ("shards", f"{p.shards} ({p.sessions_per_shard} sessions each, {p.parallelism} at once)"),
        ("teacher calls", f"{p.teacher_calls} ({p.calls_per_session:g} per session)"),
        ("calls/s per pod", f"{p.calls_per_s_per_pod:g} (limited by {p.limited_by})"),
        ("per shard", f"scripts {p.scripts_s_per_shard:g} s + sessions {p.build_s_per_shard:g} s"),
        ("expected wall time", f"{p.wall_s:g} s ({hours:.2f} h)"),
        ("provider sees", f"{p.provider_requests_per_minute:g} requests/min"),
        ("teacher tokens", f"{p.prompt_tokens} prompt + {p.completion_tokens} completion"),
        ("expected teacher cost", f"${p.cost_usd:,.2f}"),
    ]:
        tb.add_row(k, v)
    out.print(tb)


@app.command("show")
def show_cmd(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory written by `lws data synth`.")],
    split: Annotated[str, typer.Option("--split", help="Split: train, validation or test.")] = "train",
    index: Annotated[int, typer.Option("--index", help="Row index in the split.")] = 0,
    png: Annotated[Path | None, typer.Option("--png", help="Write the timeline picture here.")] = None,
    wav: Annotated[Path | None, typer.Option("--wav", help="Write the user audio here (16 kHz PCM16).")] = None,
) -> None:
    """Print one session's timeline; optionally write its picture and audio."""
    from lws_core.audio import write_wav
    from lws_core.data import load_dataset_dir, require_rows, row_audio, row_session
    from lws_core.errors import InputError

    ds = require_rows(load_dataset_dir(dataset), split)
    if not 0 <= index < len(ds):
        raise InputError(f"--index {index} out of range: split {split!r} has {len(ds)} rows")
    row = ds[index]
    s = row_session(row)
    out.print(f"{row['id']}  scenario={row['scenario']} family={row['task_family']} voice={row['voice']}", markup=False)
    out.print(f"question: {row['question']}\nanswer:   {row['answer']}", markup=False)
    heard = 0
    for i, u in enumerate(s.units):
        t0 = i * s.unit_s
        words = []
        while heard < len(s.user_words) and s.user_words[heard].end <= t0 + s.unit_s + 1e-9:
            words.append(s.user_words[heard].text)
            heard += 1
        flag = " <eot>" if u.eot else ""
        out.print(
            f"{t0:6.2f}s {u.state:6} heard={' '.join(words)!r:28} write={u.write!r} say={u.say!r}{flag}",
            markup=False,
            highlight=False,
        )
    if png:
        from lws_core.schema.render import render_timeline

        render_timeline(s, png)
        console.print(f"wrote {png}")
    if wav:
        write_wav(wav, row_audio(row))
        console.print(f"wrote {wav}")


@app.command("align")
def align_cmd(
    audio: Annotated[Path, typer.Argument(help="Recording to align (WAV/FLAC/OGG, any rate; mixed to mono).")],
    text: Annotated[str, typer.Option("--text", help="What is said in the recording (English).")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the word timings here as JSON.")] = None,
    aligner: Annotated[str, typer.Option("--aligner", help="Forced aligner (see lws_core.audio.align.ALIGNERS).")] = "pocketsphinx",
) -> None:
    """Word timestamps for a recording of a known transcript (offline forced alignment)."""
    import json

    from rich.table import Table

    from lws_core.audio.align import align_file

    words, duration = align_file(audio, text, aligner)
    t = Table(title=f"{audio} ({duration:.2f} s, {aligner})")
    t.add_column("#", justify="right")
    t.add_column("word")
    t.add_column("start s", justify="right")
    t.add_column("end s", justify="right")
    for i, w in enumerate(words):
        t.add_row(str(i), w.text, f"{w.start:.2f}", f"{w.end:.2f}")
    out.print(t)
    if json_out:
        doc = {"audio": str(audio), "aligner": aligner, "duration_s": round(duration, 4), "text": text,
               "words": [w.model_dump() for w in words]}
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"wrote {json_out}")

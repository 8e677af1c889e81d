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
    s = evaluate(cfg, _resolve_model(model, cfg), data, out_dir, limit=limit, progress=not quiet)
    t = Table(title=f"evaluation -> {s.report_path}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in s.metrics.items():
        t.add_row(k, "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)))
    out.print(t)


def _print_metrics(title: str, metrics: dict) -> None:
    from rich.table import Table

    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        t.add_row(k, "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)))
    out.print(t)


@app.command("fdb-probe")
def fdb_probe(
    out_dir: Annotated[Path, typer.Option("--out", help="New directory for the probe tree (must not exist or be empty).")],
    per_task: Annotated[int | None, typer.Option("--per-task", help="Samples per task (default: eval.fdb_probe_per_task).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (questions, voices, pause lengths).")] = 0,
    phrasings: Annotated[
        str,
        typer.Option(
            "--phrasings",
            help="Question phrasings: test (held-out, the pipeline's probe) or train (seen in training; "
            "separates hearing from understanding a new phrasing).",
        ),
    ] = "test",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Synthesize a Full-Duplex-Bench v1-format probe tree (pause, turn-taking, interruption, backchannel) with our TTS."""
    from lws_core.eval.fdb_probe import build_probe

    cfg = resolve_config(config, set_)
    n = per_task if per_task is not None else cfg.eval.fdb_probe_per_task
    path = build_probe(out_dir, per_task=n, seed=seed, progress=not quiet, phrasings=phrasings)
    out.print(f"probe tree with {n} samples per task ({phrasings} phrasings) -> {path}")


@app.command("fdb")
def fdb(
    model: Annotated[str, typer.Option("--model", help="Model directory or models:/NAME@ALIAS.")],
    data: Annotated[Path, typer.Option("--data", help="Full-Duplex-Bench tree (task folders of sample folders with input.wav).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output tree: inputs copied, output.wav/output.json written per sample.")],
    limit: Annotated[int | None, typer.Option("--limit", help="At most N samples per task folder.")] = None,
    system: Annotated[str | None, typer.Option("--system", help="System prompt for every session.")] = None,
    metrics: Annotated[bool, typer.Option("--metrics/--no-metrics", help="Also compute the v1 metrics on the output tree.")] = True,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Stream every input.wav of a Full-Duplex-Bench tree through the engine; write time-synchronous outputs."""
    from lws_core.cli.simulate_cmd import _resolve_model
    from lws_core.errors import InputError

    cfg = resolve_config(config, set_)
    if not data.is_dir():  # before torch is imported: a mistake costs a second, not five
        raise InputError(f"Full-Duplex-Bench tree not found: {data}")
    from lws_core.engine import Engine
    from lws_core.eval.fdb_run import run_fdb

    engine = Engine.from_dir(_resolve_model(model, cfg), cfg)
    s = run_fdb(engine, data, out_dir, limit=limit, system=system, progress=not quiet)
    out.print(f"{s['samples']} samples -> {out_dir}")
    if metrics:
        _fdb_metrics(out_dir, cfg, None, quiet)


def _fdb_metrics(root: Path, cfg, reference: Path | None, quiet: bool) -> dict:  # noqa: ANN001
    from lws_core.eval.fdb_metrics import evaluate_tree
    from lws_core.eval.judge import JudgeClient

    judge = JudgeClient.from_config(cfg.eval.judge, cache_dir=root / "judge_cache")
    m = evaluate_tree(root, judge=judge, reference_path=reference, progress=not quiet)
    _print_metrics(f"Full-Duplex-Bench v1 -> {root / 'metrics.json'}", m)
    return m


@app.command("fdb-metrics")
def fdb_metrics(
    root: Annotated[Path, typer.Argument(help="Full-Duplex-Bench tree with output.json/output.wav per sample.")],
    reference: Annotated[
        Path | None,
        typer.Option("--reference", help="Official human backchannel distribution (icc_gt_distribution.json); else derived from input pauses."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Compute Full-Duplex-Bench v1 metrics (TOR, latency, backchannel frequency/JSD, relevance) into ROOT/metrics.json."""
    cfg = resolve_config(config, set_)
    _fdb_metrics(root, cfg, reference, quiet)


@app.command("voicebench")
def voicebench(
    model: Annotated[str, typer.Option("--model", help="Model directory or models:/NAME@ALIAS.")],
    data: Annotated[Path, typer.Option("--data", help="jsonl with 'prompt' + a WAV path per row, or an HF dataset saved to disk (audio, prompt).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the responses jsonl and metrics.json.")],
    subset: Annotated[str, typer.Option("--subset", help="VoiceBench subset name (alpacaeval, commoneval, wildvoice, sd-qa, ...).")] = "alpacaeval",
    response: Annotated[str, typer.Option("--response", help="What the response field holds: spoken, written or both.")] = "spoken",
    answer_s: Annotated[float, typer.Option("--answer-s", help="Seconds of silence after each prompt for the model to answer.")] = 10.0,
    limit: Annotated[int | None, typer.Option("--limit", help="Answer at most N prompts.")] = None,
    system: Annotated[str | None, typer.Option("--system", help="System prompt for every session.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Answer VoiceBench-style audio prompts; judge open-ended subsets on the 1-5 scale when a judge is configured."""
    from lws_core.cli.simulate_cmd import _resolve_model
    from lws_core.engine import Engine
    from lws_core.eval.judge import JudgeClient
    from lws_core.eval.voicebench import compose_response, run_voicebench

    cfg = resolve_config(config, set_)
    compose_response("", "", response)  # fail on a bad mode before loading anything
    judge = JudgeClient.from_config(cfg.eval.judge, cache_dir=out_dir / "judge_cache")
    engine = Engine.from_dir(_resolve_model(model, cfg), cfg)
    m = run_voicebench(
        engine, data, out_dir, subset=subset, response=response, judge=judge, samples=cfg.eval.voicebench_samples,
        answer_s=answer_s, limit=limit, system=system, progress=not quiet,
    )  # fmt: skip
    _print_metrics(f"VoiceBench {subset} -> {out_dir / 'metrics.json'}", {k: v for k, v in m.items() if k != "judge"})


@app.command("ablate")
def ablate(
    data: Annotated[Path, typer.Option("--data", help="Synthesized dataset directory (all variants are derived from it).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for variant datasets, models, evaluations and ablation.md/png.")],
    variants: Annotated[str, typer.Option("--variants", help="Comma-separated: full, no_write_listen, speech_only.")] = "full,no_write_listen,speech_only",
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate at most N test sessions per variant.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train and evaluate full LWS vs no-writing-while-listening vs speech-only on the same data and compute."""
    from lws_core.errors import InputError
    from lws_core.eval.ablation import COMPARE, VARIANTS, run_ablations

    cfg = resolve_config(config, set_)
    chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
    bad = [v for v in chosen if v not in VARIANTS]
    if bad or not chosen:
        raise InputError(f"--variants: unknown {', '.join(bad) or '(none given)'} (known: {', '.join(VARIANTS)})")
    if not data.is_dir():
        raise InputError(f"dataset directory not found: {data}")
    res = run_ablations(cfg, data, out_dir, variants=chosen, limit=limit, progress=not quiet)
    from rich.table import Table

    t = Table(title=f"ablations -> {out_dir / 'ablation.md'}")
    t.add_column("metric")
    for v in res:
        t.add_column(v, justify="right")
    for k in COMPARE:
        t.add_row(k, *["n/a" if res[v].get(k) is None else f"{res[v][k]:.3f}" if isinstance(res[v][k], float) else str(res[v][k]) for v in res])
    out.print(t)

"""Real-time factor of the streaming engine vs a naive baseline, side by side in one run.

RTF = compute time of a unit / unit length, per unit; p50 and p95 over a session.
The engine extends one kept KV cache; the naive baseline recomputes the whole
history at the start of every unit (what calling ``generate`` over the transcript
each unit does) and then decodes the unit on that fresh cache. Both sessions see
the same audio and are stepped alternately, unit by unit, so machine load hits
both alike. Wall time is the real-time figure; CPU time (process time) is also
reported because this machine is shared.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engine_rtf.py --model MODEL_DIR [--durations 10 30 60 120]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engine_rtf.py --random   # random weights: every unit hits both budgets
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

QUESTIONS = [
    "what is twelve plus thirty",
    "please write a function that adds seven to a number",
    "can you make a table of the first three squares",
    "how much is nine times six",
    "subtract fourteen from fifty and write it down",
    "what is the sum of eight and nineteen",
]


def dialogue_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """User questions (espeak-ng speech) separated by 3-5 s of silence, cut to ``seconds``."""
    from lws_core.audio import get_tts

    rng = np.random.default_rng(seed)
    tts = get_tts()
    parts, n, i = [], 0, 0
    target = int(seconds * 16000)
    while n < target:
        s = tts.synthesize(QUESTIONS[i % len(QUESTIONS)]).audio
        gap = np.zeros(int(rng.uniform(3.0, 5.0) * 16000), dtype=np.float32)
        parts += [s, gap]
        n += len(s) + len(gap)
        i += 1
    return np.concatenate(parts)[:target].astype(np.float32)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def run(engine, seconds: float) -> dict:  # noqa: ANN001
    audio = dialogue_audio(seconds)
    unit_s = engine.model.spec.unit_s
    fast, naive = engine.session(), engine.session(naive=True)
    rows = []
    for block in engine.iter_units(audio):
        a, b = fast.step(block), naive.step(block)
        rows.append((a, b))
    f_wall = [a.timings["total_ms"] / 1000 / unit_s for a, _ in rows]
    f_cpu = [a.timings["cpu_ms"] / 1000 / unit_s for a, _ in rows]
    n_wall = [b.timings["total_ms"] / 1000 / unit_s for _, b in rows]
    n_cpu = [b.timings["cpu_ms"] / 1000 / unit_s for _, b in rows]
    last = slice(-10, None)
    listen = [a.timings["cpu_ms"] for a, _ in rows if a.state == "listen"]  # same work per unit: flatness
    same = sum((a.state, a.write, a.say) == (b.state, b.write, b.say) for a, b in rows)
    return {
        "seconds": seconds,
        "units": len(rows),
        "speak_units": sum(a.state == "speak" for a, _ in rows),
        "engine_wall_p50": pct(f_wall, 50),
        "engine_wall_p95": pct(f_wall, 95),
        "engine_cpu_p50": pct(f_cpu, 50),
        "engine_cpu_p95": pct(f_cpu, 95),
        "naive_wall_p50": pct(n_wall, 50),
        "naive_wall_p95": pct(n_wall, 95),
        "naive_cpu_p50": pct(n_cpu, 50),
        "naive_cpu_p95": pct(n_cpu, 95),
        "engine_first10_cpu_p50": pct(f_cpu[:10], 50),
        "engine_last10_cpu_p50": pct(f_cpu[last], 50),
        "listen_unit_cpu_ms_first10_p50": pct(listen[:10], 50),
        "listen_unit_cpu_ms_last10_p50": pct(listen[-10:], 50),
        "speedup_total_wall": sum(n_wall) / sum(f_wall),
        "speedup_total_cpu": sum(n_cpu) / sum(f_cpu),
        "speedup_last10_cpu": sum(n_cpu[last]) / sum(f_cpu[last]),
        "tokens_fed_last_unit": {
            "engine": rows[-1][0].timings["tokens_fed"],
            "naive": rows[-1][1].timings["tokens_fed"],
        },
        "context_tokens_end": rows[-1][0].timings["context_tokens"],
        "identical_units": same / len(rows),
        "speak_unit_breakdown_ms": _breakdown([a for a, _ in rows if a.state == "speak"]),
    }


def _breakdown(units: list) -> dict:  # noqa: ANN001
    """Where a speaking unit's time goes (p50 and max per phase), and the decoded-token cost."""
    out: dict = {}
    for key in ("prefill_ms", "decode_ms", "tts_ms", "total_ms", "write_tokens", "say_tokens"):
        vals = [u.timings[key] for u in units]
        out[key] = {"p50": round(pct(vals, 50), 2), "max": round(max(vals), 2)} if vals else None
    per = [u.timings["decode_ms"] / u.timings["decode_forwards"] for u in units if u.timings.get("decode_forwards")]
    out["decode_ms_per_forward"] = {"p50": round(pct(per, 50), 3), "max": round(max(per), 3)} if per else None
    # per decoded token (time per output token): a forced token costs no call of its own but a row in the next one
    tok = [u.timings["decode_ms"] / u.timings["decode_tokens"] for u in units if u.timings.get("decode_tokens")]
    out["decode_ms_per_token"] = {"p50": round(pct(tok, 50), 3), "max": round(max(tok), 3)} if tok else None
    if units and units[0].timings.get("decode_tokens") is not None:
        dec, n = sum(u.timings["decode_ms"] for u in units), sum(u.timings["decode_tokens"] for u in units)
        calls = sum(u.timings["decode_forwards"] for u in units)
        out["decode_ms_per_token_all"] = round(dec / n, 3) if n else None  # the units' whole decode over their tokens
        out["decode_ms_per_forward_all"] = round(dec / calls, 3) if calls else None
    return out


def flac_case(engine, seconds: float, workdir: Path) -> dict:  # noqa: ANN001
    """The offline path on a FLAC file (another dialogue seed): simulate_file streams it from disk."""
    import soundfile as sf

    path = workdir / f"dialogue-{seconds:.0f}s.flac"
    sf.write(path, dialogue_audio(seconds, seed=7), 16000, subtype="PCM_16")
    res = engine.simulate_file(path, workdir / f"out-{seconds:.0f}s", progress=False)
    cpu = [u.timings["cpu_ms"] / 1000 / res.unit_s for u in res.units]
    return {"seconds": seconds, "units": len(res.units), "speak_units": sum(u.state == "speak" for u in res.units),
            "rtf_p50": res.rtf_p50, "rtf_p95": res.rtf_p95, "cpu_rtf_p50": pct(cpu, 50), "cpu_rtf_p95": pct(cpu, 95),
            "speak_unit_breakdown_ms": _breakdown([u for u in res.units if u.state == "speak"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="Trained model directory (default: a random-init tiny model).")
    ap.add_argument(
        "--random", action="store_true", help="Random-init tiny model (worst case: budgets hit every unit)."
    )
    ap.add_argument("--durations", type=float, nargs="+", default=[10, 30, 60, 120])
    ap.add_argument(
        "--max-context",
        type=int,
        default=1_000_000,
        help="engine.max_context_tokens; default: no sliding window, so the baseline recomputes the whole history "
        "and the engine's cost is measured on the full, growing context.",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, help="Write the figures here as JSON.")
    ap.add_argument("--flac", type=float, nargs="*", default=[], help="Also run FLAC files of these lengths (s) through simulate_file.")
    ap.add_argument("--kv-dtype", default="model", choices=["model", "bfloat16", "float16"], help="engine.kv_dtype")
    ap.add_argument("--weight-dtype", default="auto", choices=["auto", "model", "float16", "bfloat16", "int8"],
                    help="engine.weight_dtype (default: the engine's own default, auto)")
    ap.add_argument("--compile-decode", action="store_true", help="engine.compile_decode (its compile time is printed, not counted in the RTF)")
    ap.add_argument("--window", action="store_true", help="Keep the engine's default sliding window (EngineConfig().max_context_tokens).")
    args = ap.parse_args()

    from lws_core.engine import Engine

    if args.model is None:
        from lws_core.config import LWSConfig
        from lws_core.model import LWSModel

        torch.manual_seed(0)
        tmp = Path(tempfile.mkdtemp()) / "m"
        LWSModel.build(LWSConfig()).save(tmp)
        args.model, label = tmp, "random-init tiny"
    else:
        label = str(args.model)
    from lws_core.engine import EngineConfig

    if args.window:
        args.max_context = EngineConfig().max_context_tokens
    engine = Engine.from_dir(
        args.model, device=args.device, config=EngineConfig(max_context_tokens=args.max_context, kv_dtype=args.kv_dtype, weight_dtype=args.weight_dtype,
                            compile_decode=args.compile_decode),
    )
    engine.simulate(dialogue_audio(3))  # warm-up (allocator, TTS)
    print(
        f"# engine RTF: {label}, unit {engine.model.spec.unit_s} s, device {args.device}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"# {platform.platform()}, {os.cpu_count()} cores, load {os.getloadavg()}, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(f"# max_context_tokens={args.max_context}, kv_dtype={args.kv_dtype}, weight_dtype={args.weight_dtype}, "
          f"compile_decode={args.compile_decode} (compile {engine.compile_s:.1f} s)")
    print(
        "| input | units (speak) | engine RTF p50 / p95 wall | engine RTF p50 / p95 CPU | naive RTF p50 / p95 wall | naive p50 / p95 CPU | naive / engine total (wall, CPU) | last 10 units naive / engine (CPU) "
        "| engine listen-unit CPU p50, first 10 -> last 10 | context at end (tokens) | same outputs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for d in args.durations:
        r = run(engine, d)
        results.append(r)
        print(
            f"| {d:.0f} s | {r['units']} ({r['speak_units']}) | {r['engine_wall_p50']:.3f} / {r['engine_wall_p95']:.3f} | "
            f"{r['engine_cpu_p50']:.3f} / {r['engine_cpu_p95']:.3f} | {r['naive_wall_p50']:.3f} / {r['naive_wall_p95']:.3f} | "
            f"{r['naive_cpu_p50']:.3f} / {r['naive_cpu_p95']:.3f} | {r['speedup_total_wall']:.1f}x, {r['speedup_total_cpu']:.1f}x | "
            f"{r['speedup_last10_cpu']:.1f}x | {r['listen_unit_cpu_ms_first10_p50']:.1f} -> {r['listen_unit_cpu_ms_last10_p50']:.1f} ms | "
            f"{r['context_tokens_end']:.0f} | {r['identical_units']:.0%} |",
            flush=True,
        )
    for r in results:
        b = r["speak_unit_breakdown_ms"]
        if b["total_ms"]:
            print(f"# {r['seconds']:.0f} s speaking units, p50 (max) ms: " + ", ".join(
                f"{k} {v['p50']:.1f} ({v['max']:.1f})" for k, v in b.items() if isinstance(v, dict)), flush=True)
    flac = []
    for d in args.flac:
        r = flac_case(engine, d, Path(tempfile.mkdtemp(prefix="engine-flac-")))
        flac.append(r)
        print(f"# FLAC {d:.0f} s through simulate_file: {r['units']} units ({r['speak_units']} speak), RTF p50 / p95 "
              f"{r['rtf_p50']:.3f} / {r['rtf_p95']:.3f} wall, {r['cpu_rtf_p50']:.3f} / {r['cpu_rtf_p95']:.3f} CPU", flush=True)
    for r in results + flac:
        b = r["speak_unit_breakdown_ms"].get("decode_ms_per_forward")
        if b:
            t = r["speak_unit_breakdown_ms"].get("decode_ms_per_token") or {}
            print(f"# {r['seconds']:.0f} s: decode per forward p50 {b['p50']:.3f} ms, max {b['max']:.3f} ms; "
                  f"per token p50 {t.get('p50', float('nan')):.3f} ms, max {t.get('max', float('nan')):.3f} ms; all speaking "
                  f"units' decode: {r['speak_unit_breakdown_ms'].get('decode_ms_per_forward_all')} ms a forward, "
                  f"{r['speak_unit_breakdown_ms'].get('decode_ms_per_token_all')} ms a token")
    print(f"load after: {os.getloadavg()}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"model": label, "results": results, "flac": flac}, indent=1))


if __name__ == "__main__":
    main()

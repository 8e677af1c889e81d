"""The streaming engine on a GPU: RTF and per-token decode latency of one session, and batched capacity.

    python benchmarks/gpu_engine.py rtf      [--backbone qwen-0.5b] [--seconds 30] [--device cuda] [--json F]
    python benchmarks/gpu_engine.py capacity [--backbone qwen-0.5b] [--units 10] [--max-sessions 128] [--json F]
    python benchmarks/gpu_engine.py rtf --smoke --device cpu     # code check at toy sizes (the CPU test runs this)

Random-init weights (no checkpoint is read): the grammar still constrains every
unit, but an untrained model never stops early, so each unit decodes its full
write and say budgets (24 + 12 tokens by default). That is the worst case per
unit; a trained model that mostly listens decodes 1-3 tokens per unit.

``rtf``: one session, unit by unit (1.0 s units), timed with CUDA synchronisation
(``UnitOutput.timings``). Per-token decode latency = decode time of a unit / the
backbone forwards in its decode phase (counted with a forward hook on the LM).

``capacity``: for N = 1, 2, 4, ... open N sessions and advance all of them one unit
per round for ``--units`` rounds (after one warm-up round); a round must finish
within the unit length for N live users to be held at real time. Reports the largest
N whose p95 round time is under ``unit_s``. Uses ``Engine.step_many`` (several sessions
in shared batched forwards) when the engine has it, else steps the sessions one by
one in a loop (same measurement, no batching); the JSON says which path ran.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import BACKBONES, build_model, device_facts, lm_shape, pct, resolve_device, write_json  # noqa: E402


def test_audio(seconds: float, tts: str, seed: int = 0) -> np.ndarray:
    """User speech (espeak-ng questions and pauses) when the TTS is there; else tone bursts and silence.

    Random weights do not listen, so the content only matters for a trained model.
    """
    if tts == "espeak":
        from engine_rtf import dialogue_audio

        return dialogue_audio(seconds, seed)
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000.0
    on = (np.floor(t / 2.0) % 2 == 0).astype(np.float32)  # 2 s on, 2 s off
    return (0.2 * np.sin(2 * np.pi * 220 * t) * on + 0.005 * rng.standard_normal(n)).astype(np.float32)


def pick_tts(requested: str) -> str:
    """``auto``: espeak when espeak-ng loads (the real path renders speech), else none."""
    if requested != "auto":
        return requested
    try:
        from lws_core.audio import get_tts

        get_tts().synthesize("ok")
        return "espeak"
    except Exception as e:  # a device image without espeakng-loader: measure without speech rendering
        print(f"note: no TTS ({type(e).__name__}: {e}); running with engine.tts=none", file=sys.stderr)
        return "none"


def make_engine(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """A random-init model of the backbone's shape on the device, in the engine's serving dtype."""
    import torch

    from lws_core.engine import Engine, EngineConfig

    device = resolve_device(args.device)
    if args.smoke and args.backbone is None:
        args.backbone = "tiny-qwen3"
    backbone = args.backbone or "qwen-0.5b"
    dtype_name = args.dtype if args.dtype != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    # smoke: small budgets, so a toy unit decodes ~8 positions instead of ~38 (same code path)
    small = {"schema.max_write_tokens": 4, "schema.max_say_tokens": 2} if args.smoke else None
    model = build_model(backbone, seed=args.seed, overrides=small)
    shape = lm_shape(model)
    # the backbone in the serving dtype; the audio encoder (5% of the parameters) stays fp32: its log-mel
    # front end (lws_core.model.features.LogMel) takes fp32 buffers only, and the session casts the
    # encoder's K embeddings to the backbone's dtype
    model = model.to(device=device)
    model.lm.to(dtype=dtype)
    tts = pick_tts(args.tts)
    # --engine-path hf: transformers' forward with its DynamicCache (the forward hook below counts its calls);
    # fast: the engine's fused forward over a preallocated StaticKV (its calls are counted on FastPath.forward),
    # in the model's own dtype (no low-precision copies: weight_dtype/batch_dtype "model")
    fast = args.engine_path == "fast"
    cfg = EngineConfig(max_context_tokens=args.max_context, tts=tts, fast_path=fast, weight_dtype="model", batch_dtype="model",
                       cuda_graphs=not args.no_cuda_graphs)
    engine = Engine(model, cfg)
    if fast and engine.fast_path is None:
        raise SystemExit(f"error: --engine-path fast, but the fused forward does not support {backbone}")
    info = {**device_facts(device), "smoke": bool(args.smoke), "backbone": backbone,
            "backbone_note": BACKBONES[backbone].note, **shape, "dtype": dtype_name, "dtype_note": f"backbone {dtype_name}, audio encoder fp32", "tts": tts,
            "unit_s": model.spec.unit_s, "audio_tokens_per_unit": model.spec.audio_tokens_per_unit,
            "max_write_tokens": model.spec.max_write_tokens, "max_say_tokens": model.spec.max_say_tokens,
            "max_context_tokens": args.max_context, "engine_path": args.engine_path,
            "cuda_graphs": bool(engine.fast_path is not None and engine.fast_path.graphs), "weights": "random init: every unit decodes its full budgets (worst case)"}
    return engine, info


class ForwardCounter:
    """Counts backbone forwards (calls of ``model.lm``, or of the engine's fused ``FastPath.forward``)."""

    def __init__(self, engine: Any) -> None:
        self.calls = 0
        self.tokens = 0
        self._fast = engine.fast_path
        self._h = None
        if self._fast is not None:  # an instance attribute shadows the method until close()
            inner = self._fast.forward

            def counted(feeds: Any, *a: Any, **k: Any) -> Any:
                self.calls += 1
                return inner(feeds, *a, **k)

            self._fast.forward = counted
        else:
            self._h = engine.model.lm.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: tuple, kwargs: dict, out: Any) -> None:
        self.calls += 1
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids", args[0] if args else None)
        if x is not None:
            self.tokens += int(x.shape[0] * x.shape[1])

    def reset(self) -> tuple[int, int]:
        c, t = self.calls, self.tokens
        self.calls = self.tokens = 0
        return c, t

    def close(self) -> None:
        if self._h is not None:
            self._h.remove()
        if self._fast is not None:
            del self._fast.forward


def _sync(engine: Any) -> None:
    import torch

    if next(engine.model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()


def rtf(args: argparse.Namespace) -> dict[str, Any]:
    engine, info = make_engine(args)
    unit_s = engine.model.spec.unit_s
    audio = test_audio(args.seconds, info["tts"])
    with engine.session() as warm:  # allocator, kernels, TTS: not measured
        for block in list(engine.iter_units(audio))[: args.warmup_units]:
            warm.step(block)
    counter = ForwardCounter(engine)
    replay_ms: list[float] = []
    unpatch = _time_graph_replays(engine, replay_ms)
    rows = []
    try:
        with engine.session() as s:
            for block in engine.iter_units(audio):
                counter.reset()
                out = s.step(block)
                calls, _ = counter.reset()
                rows.append((out, calls))
    finally:
        counter.close()
        unpatch()
    t = [o.timings for o, _ in rows]
    total = [x["total_ms"] / 1000 / unit_s for x in t]
    decode_fwd = [max(c - 1, 0) for _, c in rows]  # the first forward of a step is the unit's prefill
    per_token = [x["decode_ms"] / n for x, n in zip(t, decode_fwd, strict=True) if n]
    gen = [x["write_tokens"] + x["say_tokens"] for x in t]
    return {
        "what": "engine RTF and decode latency, one session",
        **info, "seconds": args.seconds, "units": len(rows),
        "speak_units": sum(o.state == "speak" for o, _ in rows),
        "rtf_p50": pct(total, 50), "rtf_p95": pct(total, 95), "rtf_max": round(max(total), 4),
        "prefill_ms_p50": pct([x["prefill_ms"] for x in t], 50), "prefill_ms_p95": pct([x["prefill_ms"] for x in t], 95),
        "decode_ms_p50": pct([x["decode_ms"] for x in t], 50), "decode_ms_p95": pct([x["decode_ms"] for x in t], 95),
        "tts_ms_p50": pct([x["tts_ms"] for x in t], 50), "tts_ms_p95": pct([x["tts_ms"] for x in t], 95),
        "decode_forwards_per_unit_p50": pct([float(n) for n in decode_fwd], 50),
        "generated_text_tokens_per_unit_p50": pct(gen, 50),
        "decode_ms_per_token_p50": pct(per_token, 50), "decode_ms_per_token_p95": pct(per_token, 95),
        "context_tokens_end": t[-1]["context_tokens"],
        # a captured step's replay alone (synchronised before and after): the rest of a token's time is the
        # session's own per-token work (embedding, grammar mask, sampling, its host sync)
        "graph_replay_ms_p50": pct(replay_ms, 50) if replay_ms else None,
        "graph_replay_ms_p95": pct(replay_ms, 95) if replay_ms else None,
    }


def _time_graph_replays(engine: Any, into: list[float]):  # noqa: ANN202 - returns the undo function
    """Time every CUDA-graph replay of the fused path into ``into`` (ms); a no-op without graphs."""
    if engine.fast_path is None or not engine.fast_path.graphs:
        return lambda: None
    import torch

    from lws_core.engine import cuda_graph

    orig = cuda_graph.GraphStep.run

    def run(self: Any, h: Any, start: int) -> Any:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = orig(self, h, start)
        torch.cuda.synchronize()
        into.append((time.perf_counter() - t0) * 1000)
        return out

    cuda_graph.GraphStep.run = run

    def undo() -> None:
        cuda_graph.GraphStep.run = orig

    return undo


def capacity(args: argparse.Namespace) -> dict[str, Any]:
    engine, info = make_engine(args)
    unit_s = engine.model.spec.unit_s
    has_many = callable(getattr(engine, "step_many", None))
    if args.path == "step_many" and not has_many:
        raise SystemExit("error: --path step_many but this engine has no Engine.step_many")
    batched = has_many and args.path != "loop"
    path = ("Engine.step_many (batched forwards)" if batched else
            "one-by-one loop (--path loop)" if has_many else "one-by-one loop (Engine.step_many not present)")
    print(f"# capacity path: {path}", file=sys.stderr, flush=True)
    audio = test_audio(max(args.units + 2, 8), info["tts"])
    blocks = list(engine.iter_units(audio))
    n_units = args.units + 1  # one warm-up round per N, not timed
    t_start = time.perf_counter()
    results: list[dict[str, Any]] = []
    n = 1
    while n <= args.max_sessions:
        sessions = [engine.session() for _ in range(n)]
        walls: list[float] = []
        try:
            for u in range(n_units):
                # sessions start at different points of the audio, so they are not in lockstep
                pairs = [(s, blocks[(u + i) % len(blocks)]) for i, s in enumerate(sessions)]
                _sync(engine)
                t0 = time.perf_counter()
                if batched:
                    engine.step_many(pairs)
                else:
                    for s, b in pairs:
                        s.step(b)
                _sync(engine)
                if u > 0:
                    walls.append(time.perf_counter() - t0)
        finally:
            for s in sessions:
                s.close()
        p95 = pct(walls, 95)
        ok = p95 is not None and p95 < unit_s
        results.append({"sessions": n, "rounds": len(walls), "round_s_p50": pct(walls, 50), "round_s_p95": p95,
                        "round_s_max": round(max(walls), 4), "real_time": ok})
        print(f"# N={n}: round p50 {pct(walls, 50)} s, p95 {p95} s, {'held' if ok else 'NOT held'}",
              file=sys.stderr, flush=True)
        if not ok and not args.keep_going:
            break
        if time.perf_counter() - t_start > args.budget_s:
            print(f"# stopping: time budget {args.budget_s} s spent", file=sys.stderr)
            break
        n *= 2
    held = []  # the largest N of the unbroken run of held Ns from N=1
    for r in results:
        if not r["real_time"]:
            break
        held.append(r["sessions"])
    return {
        "what": "batched serving capacity: sessions held at real time (p95 round time < unit_s)",
        **info, "path": "step_many" if batched else "loop", "path_note": path, "units_per_n": args.units,
        "max_sessions_tried": results[-1]["sessions"] if results else 0,
        "capacity_sessions": max(held) if held else 0,
        "capacity_bound": "exact doubling step: true capacity lies between this and the next N tried",
        "series": results, "wall_s": round(time.perf_counter() - t_start, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["rtf", "capacity"])
    ap.add_argument("--backbone", default=None, help=f"one of {', '.join(BACKBONES)} (default qwen-0.5b; tiny-qwen3 with --smoke)")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32")
    ap.add_argument("--tts", default="auto", choices=["auto", "espeak", "none"])
    ap.add_argument("--seconds", type=float, default=30.0, help="rtf: session length (units of 1 s)")
    ap.add_argument("--warmup-units", type=int, default=3)
    ap.add_argument("--units", type=int, default=10, help="capacity: timed rounds per N")
    ap.add_argument("--max-sessions", type=int, default=128)
    ap.add_argument("--budget-s", type=float, default=150.0, help="capacity: stop doubling after this many seconds")
    ap.add_argument("--path", choices=["auto", "step_many", "loop"], default="auto",
                    help="capacity: Engine.step_many when present (auto), or the one-by-one loop")
    ap.add_argument("--keep-going", action="store_true", help="capacity: try every N even after one fails")
    ap.add_argument("--max-context", type=int, default=2048, help="engine.max_context_tokens (the serving default)")
    ap.add_argument("--engine-path", choices=["hf", "fast"], default="hf",
                    help="hf: transformers' forward and DynamicCache; fast: the engine's fused forward and StaticKV")
    ap.add_argument("--no-cuda-graphs", action="store_true",
                    help="fast path on CUDA: launch the decode step's kernels eagerly (engine.cuda_graphs=false)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="Toy sizes: toy Qwen3 backbone, write/say budgets 4/2, 3 s, capacity N = 1, 2.")
    ap.add_argument("--json", help="Also write the result here.")
    a = ap.parse_args(argv)
    if a.smoke:
        a.seconds, a.warmup_units, a.units, a.max_sessions = min(a.seconds, 3.0), 1, min(a.units, 2), min(a.max_sessions, 2)
        a.keep_going = True
    r = rtf(a) if a.what == "rtf" else capacity(a)
    write_json(a.json, r)
    return r


if __name__ == "__main__":
    main()

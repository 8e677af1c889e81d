"""One decode step of the LM, four ways: which forward the engine should use, and what batching buys.

Paths, each fed the same random embeddings after a prefill of ``--context`` positions:

* ``hf``: the HF model's own forward on a DynamicCache (the engine's fallback for other backbones);
* ``hf-static-compiled``: the library path — the HF forward on transformers' ``StaticCache`` (fixed
  shapes) through ``torch.compile`` (inductor; CUDA graphs with ``--device cuda``);
* ``fused``: the engine's fused forward (``lws_core.engine.fastpath``) on one session's StaticKV;
* ``fused-compiled`` (``--compile-decode``): the same with ``engine.compile_decode`` (its single-token
  step through ``torch.compile``, inductor with the C++ wrapper);
* ``fused xB``: the fused forward advancing B sessions per step (ragged batch), per session-token.

Every path's logits are compared with one HF full forward (no cache) over the same embeddings; the
largest absolute difference is printed next to its time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decode_step.py --model MODEL_DIR --context 100 500 1500

Without ``--model`` a random-init tiny model (the default config's shapes) is used: per-token time
depends on shapes, not weight values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _timed(fn, n: int) -> float:  # noqa: ANN001
    """Median of 5 blocks of n calls, seconds per call (blocks absorb a shared machine's hiccups)."""
    blocks = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        blocks.append((time.perf_counter() - t) / n)
    return statistics.median(blocks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="LWS model directory (default: random-init tiny model)")
    ap.add_argument("--context", type=int, nargs="+", default=[100, 500, 1500])
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--steps", type=int, default=40, help="decode steps per timed block")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kv-dtype", default="model", choices=["model", "bfloat16", "float16"], help="the fused path's cache precision")
    ap.add_argument("--weight-dtype", default="auto", choices=["auto", "model", "float16", "bfloat16", "int8"],
                    help="the fused path's weight precision (engine.weight_dtype; default: the engine's own default, auto)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile path (its compile takes ~10-30 s)")
    ap.add_argument("--compile-decode", action="store_true", help="also time the fused path with engine.compile_decode")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    from transformers import StaticCache

    from lws_core.engine.cache import kept_cache
    from lws_core.engine.fastpath import FastPath, Feed
    from lws_core.model import LWSModel

    device = torch.device(args.device)
    if args.model is None:
        from lws_core.config import LWSConfig

        tmp = Path(tempfile.mkdtemp(prefix="decode-step-")) / "m"
        torch.manual_seed(0)
        LWSModel.build(LWSConfig()).save(tmp)
        args.model = str(tmp)
    lm = LWSModel.load(args.model, device=str(device)).eval().lm
    from lws_core.engine.engine import _weight_dtype

    wd = _weight_dtype(args.weight_dtype, lm.get_input_embeddings().weight)  # "auto" as the engine resolves it
    fast = FastPath(lm, wd)
    hidden = lm.config.hidden_size
    n_params = sum(p.numel() for p in lm.parameters())
    kvd = next(lm.parameters()).dtype if args.kv_dtype == "model" else getattr(torch, args.kv_dtype)
    print(f"model {args.model}: {type(lm).__name__}, {n_params / 1e6:.2f} M LM parameters; device {device}; "
          f"torch threads {torch.get_num_threads()}; fused kv {kvd}, weights {args.weight_dtype}; load {os.getloadavg()[0]:.1f}")
    gen = torch.Generator().manual_seed(0)
    rows = []
    fast_c, compile_decode_s = None, 0.0
    if args.compile_decode:
        fast_c = FastPath(lm, wd)
        compile_decode_s = fast_c.compile_decode(kvd)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for ctx in args.context:
        total = ctx + args.steps + 8
        emb = torch.randn(1, total, hidden, generator=gen).to(device)
        with torch.inference_mode():
            ref = lm(inputs_embeds=emb, use_cache=False).logits[0, ctx].float()
            x = emb[:, ctx : ctx + 1]

            # hf: DynamicCache (buffered), decode at position ctx repeatedly (crop back after each)
            cache = kept_cache()
            lm(inputs_embeds=emb[:, :ctx], cache=cache, use_cache=True)
            out = lm(inputs_embeds=x, cache=cache, use_cache=True, logits_to_keep=1).logits[0, -1]
            diff_hf = float((out.float() - ref).abs().max())
            # each timed step decodes position ctx again: drop the last position, then feed it

            def hf_step(cache=cache, x=x) -> None:  # noqa: ANN001 - loop values bound as defaults
                cache.crop(-1)  # back to ctx positions
                lm(inputs_embeds=x, cache=cache, use_cache=True, logits_to_keep=1)
                sync()

            t_hf = _timed(hf_step, args.steps)

            # fused, one session
            kv = fast.new_kv(total, device, kvd)
            fast.forward([Feed(emb[0, :ctx], kv, 0, False)])
            out = fast.forward([Feed(emb[0, ctx : ctx + 1], kv, ctx)])[0]
            diff_fused = float((out.float() - ref).abs().max())

            def fused_step(kv=kv, x=x, ctx=ctx) -> None:  # noqa: ANN001
                fast.forward([Feed(x[0], kv, ctx)])
                sync()

            t_fused = _timed(fused_step, args.steps)
            t_fc = diff_fc = None
            if fast_c is not None:
                kv_c = fast_c.new_kv(total, device, kvd)
                fast_c.forward([Feed(emb[0, :ctx], kv_c, 0, False)])
                diff_fc = float((fast_c.forward([Feed(emb[0, ctx : ctx + 1], kv_c, ctx)])[0].float() - ref).abs().max())

                def fc_step(kv=kv_c, x=x, ctx=ctx) -> None:  # noqa: ANN001
                    fast_c.forward([Feed(x[0], kv, ctx)])
                    sync()

                t_fc = _timed(fc_step, args.steps)

            batched = {}
            for b in args.batch:
                kvs = [fast.new_kv(total, device, kvd) for _ in range(b)]
                for k in kvs:
                    fast.forward([Feed(emb[0, :ctx], k, 0, False)])
                outs = fast.forward([Feed(x[0], k, ctx) for k in kvs])
                diff_b = max(float((o.float() - ref).abs().max()) for o in outs)

                def batch_step(kvs=kvs, x=x, ctx=ctx) -> None:  # noqa: ANN001
                    fast.forward([Feed(x[0], k, ctx) for k in kvs])
                    sync()

                t_b = _timed(batch_step, max(3, args.steps // 4))
                batched[b] = {"ms_per_step": t_b * 1e3, "ms_per_session_token": t_b * 1e3 / b, "max_abs_diff": diff_b}
                del kvs

        comp = None
        if not args.no_compile:
            scache = StaticCache(config=lm.config, max_cache_len=total)
            with torch.inference_mode():
                lm(inputs_embeds=emb[:, :ctx], cache=scache, use_cache=True,
                   position_ids=torch.arange(ctx, device=device)[None])
            mode = "reduce-overhead" if device.type == "cuda" else None
            compiled = torch.compile(lm, mode=mode, dynamic=False, fullgraph=False)
            pos = torch.tensor([[ctx]], device=device)

            def comp_step(rewind: bool = True, scache=scache, compiled=compiled, x=x, pos=pos) -> torch.Tensor:  # noqa: ANN001
                if rewind:
                    scache.crop(-1)  # decode position ctx again
                with torch.inference_mode():
                    r = compiled(inputs_embeds=x, cache=scache, use_cache=True, position_ids=pos, logits_to_keep=1).logits[0, -1]
                sync()
                return r

            t0 = time.perf_counter()
            out = comp_step(rewind=False)
            compile_s = time.perf_counter() - t0
            diff_c = float((out.float() - ref).abs().max())
            comp = {"ms": _timed(comp_step, args.steps) * 1e3, "compile_s": compile_s, "max_abs_diff": diff_c}
        row = {"context": ctx, "hf_ms": t_hf * 1e3, "hf_max_abs_diff": diff_hf, "fused_ms": t_fused * 1e3,
               "fused_max_abs_diff": diff_fused, "compiled": comp, "batched": batched,
               "fused_compiled_ms": None if t_fc is None else t_fc * 1e3, "fused_compiled_max_abs_diff": diff_fc,
               "compile_decode_s": compile_decode_s}
        rows.append(row)
        line = (f"ctx {ctx}: hf {t_hf * 1e3:.3f} ms (diff {diff_hf:.1e}) | fused {t_fused * 1e3:.3f} ms (diff {diff_fused:.1e})")
        if t_fc is not None:
            line += f" | fused-compiled {t_fc * 1e3:.3f} ms (diff {diff_fc:.1e}, compile {compile_decode_s:.0f} s)"
        if comp:
            line += f" | hf-static-compiled {comp['ms']:.3f} ms (diff {comp['max_abs_diff']:.1e}, compile {comp['compile_s']:.0f} s)"
        line += " | " + ", ".join(f"fused x{b}: {v['ms_per_session_token']:.3f} ms/session-token (diff {v['max_abs_diff']:.1e})" for b, v in batched.items())
        print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "device": str(device), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

"""What a one-session decode step pays to read its weights, per weight precision (issue 15).

Two measurements, both on one thread:

* ``chain``: the 17 products of one token of the tiny preset (4 layers of qkv, o, gate/up, down, then the
  head), each with its own weight so that none stays in cache, in float32 (both layouts), float16,
  bfloat16 and int8 (``torch._weight_int8pack_mm``, what ``engine.weight_dtype=int8`` calls); with
  ``--rows`` also over several rows at once (what sets ``engine.weight_rows``' auto value, ``INT8_ROWS``);
* with ``--model``: the engine's fused single-token step (``FastPath``) for each of ``--dtypes``, built in
  one process and timed in alternated blocks, so that a drifting machine affects them alike
  (``--compile`` times them through ``engine.compile_decode``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/weight_read.py [--model MODEL_DIR] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def _median_ms(fn, blocks: int = 7, n: int = 200) -> float:  # noqa: ANN001
    for _ in range(20):
        fn()
    times = []
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t) / n * 1e3)
    return statistics.median(times)


def chain(hidden: int, inter: int, layers: int, vocab: int, rows: int = 1) -> None:
    from lws_core.engine.fastpath import _int8_rows

    shapes = [(3 * hidden, hidden), (hidden, hidden), (2 * inter, hidden), (hidden, inter)] * layers + [(vocab, hidden)]
    ws = [torch.randn(o, i) * 0.05 for o, i in shapes]
    x32 = {n: torch.randn(rows, n) for n in {hidden, inter}}
    xb = {n: v.bfloat16() for n, v in x32.items()}
    xh = {n: v.half() for n, v in x32.items()}
    wt = [w.t().contiguous() for w in ws]
    w16, wb16 = [w.half() for w in ws], [w.bfloat16() for w in ws]
    q8 = [_int8_rows(w) for w in ws]
    ways = {
        "float32, F.linear on [out, in]": lambda: [F.linear(x32[w.shape[1]], w) for w in ws],
        "float32, torch.mm on [in, out] (the exact path)": lambda: [torch.mm(x32[w.shape[0]], w) for w in wt],
        "float16 copies, F.linear": lambda: [F.linear(xh[w.shape[1]], w) for w in w16],
        "bfloat16 copies, F.linear": lambda: [F.linear(xb[w.shape[1]], w) for w in wb16],
        "int8, per-row bfloat16 scale": lambda: [torch._weight_int8pack_mm(xb[q.shape[1]], q, s) for q, s in q8],
    }
    print(f"| weights ({len(shapes)} products of {rows} row(s): hidden {hidden}, inter {inter}, {layers} layers, vocab {vocab}) | ms per chain |")
    print("|---|---|")
    with torch.inference_mode():
        for name, fn in ways.items():
            print(f"| {name} | {_median_ms(fn):.3f} |", flush=True)


def fused_steps(model: str, dtypes: list[str], compile_decode: bool, context: int) -> None:
    from lws_core.engine.fastpath import FastPath, Feed
    from lws_core.model import LWSModel

    lm = LWSModel.load(model).eval().lm
    paths = {d: FastPath(lm, None if d == "model" else getattr(torch, d)) for d in dtypes}
    if compile_decode:
        for d, f in paths.items():
            print(f"# {d}: compiled in {f.compile_decode():.0f} s", flush=True)
    emb = torch.randn(context + 2, lm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    steps, times = {}, {d: [] for d in dtypes}
    with torch.inference_mode():
        for d, f in paths.items():
            kv = f.new_kv(context + 64, torch.device("cpu"), torch.float32)
            f.forward([Feed(emb[:context], kv, 0, False)])
            steps[d] = lambda f=f, kv=kv: f.forward([Feed(emb[context : context + 1], kv, context)])
            for _ in range(50):
                steps[d]()
        for _ in range(8):  # alternated blocks
            for d, step in steps.items():
                times[d].append(_median_ms(step, blocks=1, n=100))
    print(f"| weights ({'compiled' if compile_decode else 'eager'}, {context} positions) | step median (min) ms |")
    print("|---|---|")
    for d, v in times.items():
        print(f"| {d} | {statistics.median(v):.3f} ({min(v):.3f}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--inter", type=int, default=768)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=667)
    ap.add_argument("--model", help="also time the fused step of this LWS model directory")
    ap.add_argument("--dtypes", nargs="+", default=["float16", "int8"], choices=["model", "float16", "bfloat16", "int8"])
    ap.add_argument("--context", type=int, default=100)
    ap.add_argument("--rows", type=int, nargs="+", default=[1], help="rows per product (one table each)")
    ap.add_argument("--compile", action="store_true", help="time the steps through engine.compile_decode (minutes to compile)")
    args = ap.parse_args()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), {time.strftime('%Y-%m-%d %H:%M')}")
    for rows in args.rows:
        chain(args.hidden, args.inter, args.layers, args.vocab, rows)
    if args.model:
        fused_steps(args.model, args.dtypes, args.compile, args.context)


if __name__ == "__main__":
    main()

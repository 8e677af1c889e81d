"""One decode step's attention over a session's cache, by cache precision (why the engine keeps a float32 cache).

At long context a tiny model's decode step is bound by reading its keys and values (12 MB per token at 1,500
positions for the tiny preset), so a half-precision cache would read half as much. On a CPU that only pays if the
attention kernel computes in that precision without converting the cache first. This times, for one query over one
session's cache (hot in cache, as in the engine): PyTorch's SDPA in float32, bfloat16 and float16, and a hand-written
attention with bfloat16 products (keys stored transposed) and float32 softmax.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attention_dtype.py --context 500 1500 --heads 4 --head-dim 64
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable


def _median_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(20):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--context", type=int, nargs="+", default=[500, 1500])
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--capacity", type=int, default=2048, help="the cache's preallocated positions")
    ap.add_argument("--repeats", type=int, default=400)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F  # noqa: N812

    torch.set_num_threads(1)
    h, d = args.heads, args.head_dim
    scale = d**-0.5
    print(f"torch {torch.__version__}, 1 thread, one query, {h} heads x {d}; median of {args.repeats} (us)")
    print("| positions | SDPA float32 | SDPA bfloat16 | SDPA float16 | bfloat16 products, float32 softmax |")
    print("|---|---|---|---|---|")
    for length in args.context:
        k = torch.randn(1, h, args.capacity, d)
        v = torch.randn(1, h, args.capacity, d)
        q = torch.randn(1, h, 1, d)
        row = []
        for dt in (torch.float32, torch.bfloat16, torch.float16):
            kk, vv, qq = k.to(dt)[:, :, :length], v.to(dt)[:, :, :length], q.to(dt)  # views of the preallocated cache
            row.append(_median_us(lambda kk=kk, vv=vv, qq=qq: F.scaled_dot_product_attention(qq, kk, vv), args.repeats))
        kt = k[:, :, :length].transpose(-1, -2).contiguous().bfloat16()
        vb, qb = v.bfloat16(), q.bfloat16()

        def manual(kt: torch.Tensor = kt, vb: torch.Tensor = vb, qb: torch.Tensor = qb, length: int = length) -> torch.Tensor:
            s = torch.matmul(qb, kt).float() * scale
            return torch.matmul(s.softmax(-1).bfloat16(), vb[:, :, :length])

        row.append(_median_us(manual, args.repeats))
        print(f"| {length} | " + " | ".join(f"{x:.0f}" for x in row) + " |")


if __name__ == "__main__":
    main()

"""What one kernel launch and one synchronisation cost on this GPU, eagerly and inside a CUDA graph.

    python benchmarks/gpu_launch.py [--json F]

Why: the engine's decode step is hundreds of tiny kernels, so its speed on a GPU is set by launch
cost, not by the weights' bytes or FLOPs. This prices one launch (2,000 in-place adds on a
1-element tensor, synchronised once at the end), one launch-and-wait (200 adds each followed by
``torch.cuda.synchronize``), and one kernel inside a replayed graph (the same 200 adds captured,
replayed 20 times). The CPU figure beside them is the same add on a CPU tensor (dispatch only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import device_facts, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("error: CUDA is not available")
    x = torch.zeros(1, device="cuda")
    for _ in range(200):  # warm-up
        x.add_(1)
    torch.cuda.synchronize()

    def timed(fn, reps: int) -> float:  # noqa: ANN001
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps * 1e6

    def launches() -> None:
        for _ in range(2000):
            x.add_(1)

    def waits() -> None:
        for _ in range(200):
            x.add_(1)
            torch.cuda.synchronize()

    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            x.add_(1)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        for _ in range(200):
            x.add_(1)

    def replays() -> None:
        for _ in range(20):
            g.replay()

    c = torch.zeros(1)

    def cpu_adds() -> None:
        for _ in range(2000):
            c.add_(1)

    r = {**device_facts("cuda"), "what": "kernel launch and synchronisation cost"}
    for name, fn, reps in (("launch_us", launches, 2000), ("launch_and_sync_us", waits, 200),
                           ("graph_kernel_us", replays, 4000)):
        r[name] = round(min(timed(fn, reps) for _ in range(3)), 2)
    t0 = time.perf_counter()
    cpu_adds()
    r["cpu_add_dispatch_us"] = round((time.perf_counter() - t0) / 2000 * 1e6, 2)
    write_json(a.json, r)
    return r


if __name__ == "__main__":
    main()

"""A long session in bounded memory: stream N minutes of dialogue through one session and watch
the context, the sliding-window rebuilds, the per-unit cost and the process's peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engine_long.py --model MODEL_DIR --minutes 30
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument(
        "--max-context",
        type=int,
        default=None,
        help="engine.max_context_tokens (default: the EngineConfig default).",
    )
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    from engine_rtf import dialogue_audio

    from lws_core.engine import Engine, EngineConfig

    cfg = EngineConfig() if args.max_context is None else EngineConfig(max_context_tokens=args.max_context)
    eng = Engine.from_dir(args.model, config=cfg)
    piece = dialogue_audio(120)  # two minutes of questions and pauses, looped
    n_units = int(args.minutes * 60 / eng.model.spec.unit_s)
    sess = eng.session()
    rows, t0 = [], time.perf_counter()
    marks = {}
    for i in range(n_units):
        a = piece[(i * eng.unit_samples) % (len(piece) - eng.unit_samples) :][: eng.unit_samples]
        u = sess.step(a)
        rows.append((u.timings["cpu_ms"], u.timings["total_ms"], u.timings["context_tokens"]))
        if (i + 1) % max(1, n_units // 6) == 0:
            marks[i + 1] = (rss_mb(), sess.context_tokens, sess.rebuilds)
    wall = time.perf_counter() - t0
    cpu = np.array([r[0] for r in rows]) / 1000 / eng.model.spec.unit_s
    ctx = np.array([r[2] for r in rows])
    print(
        f"# {args.minutes:.0f} min session, {n_units} units of {eng.model.spec.unit_s} s, max_context_tokens={cfg.max_context_tokens}, wall {wall:.0f} s"
    )
    print("| after units | RSS MB | context tokens | rebuilds so far |")
    print("|---|---|---|---|")
    for k, (rss, c, rb) in marks.items():
        print(f"| {k} | {rss:.0f} | {c} | {rb} |")
    sixth = max(1, len(cpu) // 6)
    print(
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; max context {ctx.max():.0f}; "
        f"CPU RTF p50 first/last sixth {np.median(cpu[:sixth]):.3f}/{np.median(cpu[-sixth:]):.3f}, p95 {np.percentile(cpu, 95):.3f}; "
        f"rebuilds {sess.rebuilds}; units written {sum(1 for _ in rows)}"
    )


if __name__ == "__main__":
    main()

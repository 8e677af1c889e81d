"""Ablations on the same data and compute: full LWS vs no writing while listening vs speech-only.

Trains each variant with the same config (steps, batch, seed) on a transformed copy of
one synthesized dataset, evaluates each on the same held-out test audio with the
streaming engine, and writes ablation.md / ablation.json / ablation.png in --out.

Run:
  .venv/bin/lws data synth --out /tmp/ds600 --set data.sessions=600
  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/eval_ablations.py --data /tmp/ds600 --out /tmp/ablate
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="Synthesized dataset directory.")
    ap.add_argument("--out", type=Path, required=True, help="Work/output directory.")
    ap.add_argument("--limit", type=int, default=None, help="Test sessions per variant (default: all).")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="Config override key=value (repeatable).")
    ap.add_argument("--variants", default="full,no_write_listen,speech_only")
    args = ap.parse_args()

    import yaml

    from lws_core.config import LWSConfig
    from lws_core.eval.ablation import run_ablations

    cfg = LWSConfig().with_overrides({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.sets)} | {"eval.limit": args.limit})
    t0 = time.perf_counter()
    res = run_ablations(cfg, args.data, args.out, variants=tuple(args.variants.split(",")), limit=args.limit, progress=True)
    wall = time.perf_counter() - t0
    meta = {"date": date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, CPU only", "wall_s": round(wall, 1), "train_steps": cfg.train.max_steps}
    (args.out / "ablation_meta.json").write_text(json.dumps(meta, indent=1))
    print((args.out / "ablation.md").read_text())
    print(json.dumps(meta))
    print({v: {k: r.get(k) for k in ("spoken_accuracy", "task_accuracy", "consistency_rate")} for v, r in res.items()})


if __name__ == "__main__":
    main()

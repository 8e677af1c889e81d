"""Does the tiny preset learn the schema and turn-taking? Synthesize, train, then measure on the held-out test split.

Usage:  .venv/bin/python benchmarks/train_learning.py [--sessions 600] [--steps 300] [--out /tmp/lws-learn]
Prints teacher-forced (per-channel loss, state accuracy) and free-running engine metrics as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lws_core.config import LWSConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=600)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--backend", default="deepspeed")
    ap.add_argument("--out", default="/tmp/lws-learn")
    a = ap.parse_args()
    from lws_core.data import load_dataset_dir, synthesize
    from lws_core.eval import evaluate
    from lws_core.train import train
    from lws_core.train.metrics import evaluate_channel_losses

    out = Path(a.out)
    cfg = LWSConfig().with_overrides({"data.sessions": a.sessions, "train.max_steps": a.steps, "train.backend": a.backend})
    synthesize(cfg, out / "data", progress=False)
    t0 = time.time()
    s = train(cfg, out / "data", out / "model", progress=False)
    train_s = time.time() - t0
    tf = evaluate_channel_losses(out / "model", load_dataset_dir(out / "data")["test"])
    ev = evaluate(cfg, out / "model", out / "data", out / "eval", progress=False)
    print(json.dumps({"train_seconds": round(train_s, 1), "parameters": s.parameters, "tokens_per_s": s.tokens_per_s,
                      "teacher_forced_test": tf, "free_running_test": ev.metrics, "per_family": ev.per_family}, indent=1))


if __name__ == "__main__":
    main()

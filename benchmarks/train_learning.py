"""Does the tiny preset learn the schema and turn-taking? Train with the defaults, measure on the held-out test split.

Usage:
    .venv/bin/python benchmarks/train_learning.py [--sessions 600] [--data DIR] [--steps N] [--set k=v ...]
        [--out /tmp/lws-learn] [--engine]

Without --data it synthesizes ``--sessions`` sessions with the template teacher
first. Teacher-forced figures (no streaming engine): per-channel test loss,
state accuracy (greedy token at each state position), schema-valid units
(greedy decoding of every unit from the gold prefix, checked by UnitParser),
written-answer accuracy (grade_written on the document assembled from the
decoded writes). ``--engine`` adds the free-running figures from lws_core.eval.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import yaml

from lws_core.config import LWSConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=600)
    ap.add_argument("--data", default=None, help="Reuse a synthesized dataset instead of synthesizing.")
    ap.add_argument("--steps", type=int, default=None, help="train.max_steps (default: the config default)")
    ap.add_argument("--set", action="append", default=[], help="config override k=v (repeatable)")
    ap.add_argument("--out", default="/tmp/lws-learn")
    ap.add_argument("--limit", type=int, default=None, help="Test sessions to decode (default: all).")
    ap.add_argument("--engine", action="store_true", help="Also run the free-running engine evaluation.")
    a = ap.parse_args()
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_start = os.getloadavg()
    from lws_core.data import load_dataset_dir, synthesize
    from lws_core.train import train
    from lws_core.train.metrics import evaluate_channel_losses, teacher_forced_metrics

    out = Path(a.out)
    over: dict = {"data.sessions": a.sessions}
    if a.steps is not None:
        over["train.max_steps"] = a.steps
    for item in a.set:
        k, v = item.split("=", 1)
        over[k] = yaml.safe_load(v)
    cfg = LWSConfig().with_overrides(over)
    data = Path(a.data) if a.data else out / "data"
    if not a.data:
        synthesize(cfg, data, progress=False)
    t0 = time.time()
    s = train(cfg, data, out / "model", progress=False)
    train_wall = time.time() - t0
    load_after_train = os.getloadavg()
    test = load_dataset_dir(data)["test"]
    t1 = time.time()
    losses = evaluate_channel_losses(out / "model", test)
    tf = teacher_forced_metrics(out / "model", test, limit=a.limit, progress=True)
    model_files = [f for f in (out / "model").rglob("*") if f.is_file()]
    result = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "started": started,
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_1_5_15_at_start": [round(x, 2) for x in load_start],
        "loadavg_1_5_15_after_training": [round(x, 2) for x in load_after_train],
        "model_dir_mb": round(sum(f.stat().st_size for f in model_files) / 1e6, 2),
        "weights_mb": round(sum(f.stat().st_size for f in model_files if f.suffix == ".safetensors") / 1e6, 2),
        "saved_dtype": s.saved_dtype,
        "data_splits": {k: len(v) for k, v in load_dataset_dir(data).items()},
        "config_overrides": over,
        "train_wall_s": round(train_wall, 1),
        "train_loop_s": s.train_seconds,
        "steps": s.steps,
        "parameters": s.parameters,
        "tokens_per_s": s.tokens_per_s,
        "test_sessions": len(test),
        "teacher_forced_test": {**tf, "loss": {k: round(v, 4) for k, v in losses.items() if k != "state_accuracy"},
                                "state_accuracy_2way": losses.get("state_accuracy")},
        "eval_s": round(time.time() - t1, 1),
    }
    if a.engine:
        from lws_core.eval import evaluate

        t2 = time.time()
        ev = evaluate(cfg, out / "model", data, out / "eval", progress=False)
        result["free_running_test"] = ev.metrics
        result["eval_engine_s"] = round(time.time() - t2, 1)
    result["loadavg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

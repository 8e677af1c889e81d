"""Wall time of the main job (`lws pipeline run` on embedded defaults), per step, from a warm environment.

Usage:  .venv/bin/python benchmarks/pipeline_wall.py [--workspace DIR] [--set k=v ...]
Prints a JSON line with the total and per-step seconds (from the MLflow step runs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from lws_core.cli.common import resolve_config
from workflows.local import run_local


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", default=None)
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    ws = a.workspace or tempfile.mkdtemp(prefix="lws-bench-")
    cfg = resolve_config(None, [*a.set, f"pipeline.workspace={ws}"])
    t0 = time.time()
    res = run_local(cfg)
    print(json.dumps({"status": res.status, "wall_s": round(time.time() - t0, 1), "steps_s": res.step_seconds,
                      "metrics": {k: res.metrics.get(k) for k in ("schema_valid_rate", "state_accuracy", "task_accuracy")}}))


if __name__ == "__main__":
    main()

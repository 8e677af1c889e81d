"""Wall time of the main job (`lws pipeline run` on embedded defaults), per step, from a warm environment.

Usage:  .venv/bin/python benchmarks/pipeline_wall.py [--workspace DIR] [--rerun] [--set k=v ...]

Runs the real command (`python -m lws_core.cli.main pipeline run`, start-up included) in a fresh
workspace, then optionally once more with the same config (KFP's cache skips synthesize/train/
evaluate). Prints one JSON line per run: status, total wall seconds and per-step seconds (read
back from the MLflow step runs), plus the headline metrics. The command's own output goes to
stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid

from lws_core.cli.common import resolve_config
from lws_core.ops.tracking import Tracker
from workflows.local import collect_result

HEADLINE = ("schema_valid_rate", "state_accuracy", "task_accuracy", "consistency_rate", "fdb_turn_taking_tor", "rtf_p95")


def _once(cfg, sets: list[str], label: str) -> dict:  # noqa: ANN001
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "lws_core.cli.main", "pipeline", "run", "--run-tag", tag]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.time()
    rc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr).returncode
    res = collect_result(Tracker(cfg), tag, time.time() - t0, None if rc == 0 else f"exit {rc}")
    return {
        "run": label,
        "status": res.status,
        "wall_s": round(time.time() - t0, 1),
        "steps_s": {k: round(v, 1) for k, v in res.step_seconds.items()},
        "cached": res.cached_steps,
        "gate": res.tags.get("gate.decision"),
        "metrics": {k: res.metrics.get(k) for k in HEADLINE if k in res.metrics},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=None, help="Workspace folder (default: a fresh temp dir).")
    ap.add_argument("--rerun", action="store_true", help="Run a second time with the same config (cache hits).")
    ap.add_argument("--set", action="append", default=[], help="Config override key=value (repeatable).")
    a = ap.parse_args()
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    ws = a.workspace or tempfile.mkdtemp(prefix="lws-bench-")
    sets = [*a.set, f"pipeline.workspace={ws}"]
    cfg = resolve_config(None, sets)
    print(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} cores", "load_avg": os.getloadavg(),
                      "date": time.strftime("%Y-%m-%d %H:%M")}), flush=True)
    print(json.dumps(_once(cfg, sets, "first")), flush=True)
    if a.rerun:
        print(json.dumps(_once(cfg, sets, "rerun (cached)")), flush=True)
    print(json.dumps({"load_avg_end": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()

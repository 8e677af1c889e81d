"""Three (or more) seeds of the LWS stage on one set of stand-ins, each evaluated, then compared with a baseline.

The experiment behind every "three LWS seeds, paired" row since stop 52: the data and both stand-ins are made
once (or given), then ``lws train --set train.seed=S`` and ``lws eval run`` per seed, ``--jobs`` seeds side by
side at one thread each, then :mod:`seed_metrics` over the seeds' ``metrics.json`` (paired with ``--base``,
the same seeds of a baseline, when given). Every step is the CLI a user runs; a step whose output is already
there is skipped, so an interrupted sweep picks up where it stopped.

    .venv/bin/python benchmarks/seed_sweep.py --work /tmp/sweep --data D --encoder E \\
        --set data.extra_phrasings=true --set pretrain.backbone.max_steps=2400 \\
        --base B0/metrics.json B1/metrics.json B2/metrics.json

Without ``--data`` / ``--backbone`` / ``--encoder`` it makes them (``lws data synth``, ``lws pretrain
backbone|encoder``) with the same overrides, at ``--jobs`` threads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LWS = str(Path(sys.executable).with_name("lws"))


def _run(name: str, argv: list[str], log: Path, threads: int) -> None:
    """Run one CLI step to its log; stop the sweep with the log's tail if it fails."""
    t0 = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with log.open("w") as f:
        rc = subprocess.run(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"{name} failed (exit {rc}); the end of {log}:\n" + "\n".join(tail))
    print(f"{name}: {time.monotonic() - t0:.0f} s ({log})", flush=True)


def _seed(a: argparse.Namespace, sets: list[str], data: Path, backbone: Path, encoder: Path, s: int) -> Path:
    """Train and evaluate one seed; return its metrics.json."""
    out, ev = a.work / f"seed{s}", a.work / f"seed{s}-eval"
    if not (out / "train_summary.json").exists():  # written last
        _run(f"train seed {s}", [
            LWS, "train", "--data", str(data), "--out", str(out), "--backbone", str(backbone), "--encoder", str(encoder),
            *sets, "--set", f"train.seed={s}", "--set", "train.num_threads=1", "--quiet",
        ], a.work / f"seed{s}.log", 1)
    metrics = ev / "metrics.json"
    if not metrics.exists():
        _run(f"eval seed {s}", [
            LWS, "eval", "run", "--model", str(out), "--data", str(data), "--out", str(ev), *sets,
            "--set", "eval.liberation=false", "--quiet",
        ], a.work / f"seed{s}-eval.log", 1)
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="where the stand-ins, seeds and logs go")
    ap.add_argument("--data", type=Path, help="an `lws data synth` dataset (made in WORK/data when absent)")
    ap.add_argument("--backbone", type=Path, help="a backbone stand-in (made in WORK/backbone when absent)")
    ap.add_argument("--encoder", type=Path, help="an encoder stand-in (made in WORK/encoder when absent)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], help="config override key=value, for every step (repeatable)")
    ap.add_argument("--base", type=Path, nargs="+", help="the baseline's metrics.json, one per seed, the same order")
    ap.add_argument("--jobs", type=int, default=2, help="seeds side by side (one thread each)")
    a = ap.parse_args()
    if a.base and len(a.base) != len(a.seeds):
        ap.error(f"--base takes one metrics.json per seed ({len(a.seeds)}), got {len(a.base)}")
    a.work.mkdir(parents=True, exist_ok=True)
    sets = [x for kv in a.set for x in ("--set", kv)]
    data = a.data or a.work / "data"
    if not (data / "dataset_dict.json").exists() and not a.data:
        _run("synth", [LWS, "data", "synth", "--out", str(data), *sets, "--quiet"], a.work / "synth.log", a.jobs)
    backbone = a.backbone or a.work / "backbone"
    if not a.backbone and not (backbone / "pretrain_report.json").exists():
        _run("backbone", [LWS, "pretrain", "backbone", "--out", str(backbone), *sets, "--quiet"], a.work / "backbone.log", a.jobs)
    encoder = a.encoder or a.work / "encoder"
    if not a.encoder and not (encoder / "pretrain_report.json").exists():
        _run("encoder", [LWS, "pretrain", "encoder", "--data", str(data), "--out", str(encoder), *sets, "--quiet"],
             a.work / "encoder.log", a.jobs)
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        metrics = list(pool.map(lambda s: _seed(a, sets, data, backbone, encoder, s), a.seeds))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "seed_metrics.py"), *map(str, metrics)]
    if a.base:
        cmd += ["--base", *map(str, a.base)]
    table = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    (a.work / "seed_metrics.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()

"""A long session in bounded memory: stream N minutes of dialogue through one session and watch
the context, the sliding-window rebuilds, the per-unit cost and the process's peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engine_long.py --model MODEL_DIR --minutes 30

``--files 1 10`` instead runs the whole offline path on WAV files on disk: for each length it
writes a file (2 minutes of questions and pauses, repeated; written block by block, so the
benchmark itself never holds the file) and runs `lws simulate` on it in a fresh process,
reporting that process's peak RSS (``wait4``), so a long file can be compared with a short one:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engine_long.py --model MODEL_DIR --files 1 10
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
    ap.add_argument(
        "--files",
        type=float,
        nargs="+",
        default=None,
        help="Minutes per WAV file: run `lws simulate` on files of these lengths (peak RSS per run).",
    )
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lws-engine-long"))
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="With --files: passed to `lws simulate --set` (e.g. engine.temperature=1.0).",
    )
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    from engine_rtf import dialogue_audio

    if args.files:
        files(args.model, args.files, args.workdir, dialogue_audio(120), args.sets)
        return

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


def files(model: Path, minutes: list[float], workdir: Path, piece: np.ndarray, sets: list[str]) -> None:
    """`lws simulate` on on-disk WAVs of each length, each in its own process; peak RSS from wait4."""
    import os
    import shutil
    import subprocess

    import soundfile as sf

    workdir.mkdir(parents=True, exist_ok=True)
    lws = Path(sys.executable).with_name("lws")
    print(
        f"# lws simulate on WAV files, model {model}, --set {sets}, load average {os.getloadavg()[0]:.1f} at start"
    )
    print(
        "| file | units | file MB | decoded float32 MB | peak RSS MB | wall s | units/s | timeline.png KB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for m in minutes:
        wav, out = workdir / f"in-{m:g}min.wav", workdir / f"out-{m:g}min"
        n = int(m * 60 * 16000)
        with sf.SoundFile(wav, "w", samplerate=16000, channels=1, subtype="PCM_16") as f:
            for i in range(0, n, len(piece)):
                f.write(piece[: n - i])
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        p = subprocess.Popen(
            [str(lws), "simulate", str(wav), "--model", str(model), "--out", str(out), "--quiet"]
            + [a for kv in sets for a in ("--set", kv)],
            stdout=subprocess.PIPE,
            text=True,
        )
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        summary = p.stdout.read().strip() if p.stdout else ""
        if status != 0:
            raise SystemExit(f"lws simulate failed on {wav} (status {status})")
        units = len((out / "units.jsonl").read_text().splitlines())
        print(
            f"| {m:g} min | {units} | {wav.stat().st_size / 1e6:.1f} | {n * 4 / 1e6:.1f} | {ru.ru_maxrss / 1024:.0f} | "
            f"{wall:.0f} | {units / wall:.1f} | {(out / 'timeline.png').stat().st_size / 1e3:.0f} |"
        )
        print(f"<!-- {summary} -->")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()

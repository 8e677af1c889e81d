"""Turn-taking latency: end of the user's turn -> first spoken word in output.json.

Two measurements per unit length:

* ``floor``: the engine's structural latency floor, independent of weights. A
  scripted policy makes the model speak in the very unit whose audio contains
  the end of the user's turn (no model can react earlier); its speech plays
  from the next unit boundary, and the first word starts after the TTS's own
  lead-in. The engine's simulate() measures the latency exactly as output.json
  reports it; ``+ compute`` adds the unit's p50 compute time, which a live
  server adds before the speech can leave.
* ``model``: a trained model free-running on the held-out test split of the
  dataset it was trained for (turn end = the last user word before the
  labelled response, as in lws_core.eval).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engine_latency.py --floor 0.25 0.5 1.0 \\
        --model 1.0=MODEL_DIR:DATASET_DIR --model 0.5=...:...
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from lws_core.schema import Phase


def floor_latency(unit_s: float, trials: int = 24, seed: int = 0) -> dict:
    from lws_core.audio import get_tts
    from lws_core.config import LWSConfig
    from lws_core.engine import Engine, EngineConfig
    from lws_core.model import LWSModel

    k = max(1, round(10 * unit_s))
    cfg = LWSConfig().with_overrides({"schema.unit_s": unit_s, "schema.audio_tokens_per_unit": k})
    torch.manual_seed(seed)
    model = LWSModel.build(cfg)
    eng = Engine(model, EngineConfig(speak=True))
    ids = model.tokenizer.special
    say = model.tokenizer.encode_text(" Sure.")
    speech = get_tts().synthesize("what is twelve plus thirty").audio
    turn = len(speech) / 16000
    rng = np.random.default_rng(seed)
    lat, compute = [], []
    for _ in range(trials):
        lead = rng.uniform(0.5, 2.0)  # silence before the user speaks: the turn end falls anywhere in a unit
        t_end = lead + turn
        audio = np.concatenate(
            [np.zeros(int(lead * 16000), np.float32), speech, np.zeros(int(3 * 16000), np.float32)]
        )
        react = int(np.ceil(t_end / unit_s - 1e-9)) - 1  # the unit whose audio contains the turn end

        def policy(ctx, react=react):  # noqa: ANN001, ANN202
            if len(ctx.allowed) == 1 and not ctx.text_allowed:
                return None
            st = "speak" if ctx.unit == react else "listen"
            if ctx.phase == Phase.STATE:
                return ids.speak if st == "speak" else ids.listen
            if ctx.phase == Phase.WRITE:
                return ids.say
            if ctx.phase == Phase.SAY and st == "speak" and ctx.n_say < len(say):
                return say[ctx.n_say]
            return ids.end

        res = eng.simulate(audio, policy=policy)
        first = [w.start for w in res.spoken_words if w.start >= t_end - 1e-9]
        lat.append(first[0] - t_end)
        compute.append(res.units[react].timings["total_ms"] / 1000)
    return {
        "unit_s": unit_s,
        "mean": float(np.mean(lat)),
        "p50": float(np.median(lat)),
        "p95": float(np.percentile(lat, 95)),
        "compute_p50": float(np.median(compute)),
    }


def model_latency(model_dir: Path, dataset_dir: Path, limit: int) -> dict:
    from lws_core.data import load_dataset_dir, row_audio, row_session
    from lws_core.engine import Engine
    from lws_core.eval.metrics import turn_end_s

    eng = Engine.from_dir(model_dir)
    dd = load_dataset_dir(dataset_dir)
    rows = dd["test"]
    lat, missed, n = [], 0, 0
    for i in range(min(limit, len(rows))):
        row = rows[i]
        labels = row_session(row)
        t_end = turn_end_s(labels)
        if t_end is None:
            continue
        n += 1
        res = eng.simulate(row_audio(row))
        after = [w.start for w in res.spoken_words if w.start >= t_end - 1e-9]
        if after:
            lat.append(after[0] - t_end)
        else:
            missed += 1
    return {
        "unit_s": eng.model.spec.unit_s,
        "sessions": n,
        "responded": len(lat),
        "mean": float(np.mean(lat)) if lat else float("nan"),
        "p50": float(np.median(lat)) if lat else float("nan"),
        "p95": float(np.percentile(lat, 95)) if lat else float("nan"),
        "missed": missed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--floor",
        type=float,
        nargs="*",
        default=[0.25, 0.5, 1.0],
        help="Unit lengths for the structural floor.",
    )
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--model", action="append", default=[], help="UNIT=MODEL_DIR:DATASET_DIR (repeatable).")
    ap.add_argument("--limit", type=int, default=30, help="Test sessions per trained model.")
    args = ap.parse_args()

    tempfile.tempdir = tempfile.gettempdir()
    if args.floor:
        print("| unit | structural floor mean / p50 / p95 (s) | + compute p50 (live) |")
        print("|---|---|---|")
        for u in args.floor:
            r = floor_latency(u, args.trials)
            print(
                f"| {u} s | {r['mean']:.3f} / {r['p50']:.3f} / {r['p95']:.3f} | {r['mean'] + r['compute_p50']:.3f} |",
                flush=True,
            )
    if args.model:
        print()
        print(
            "| unit | trained model | test sessions with a turn end | responded | latency mean / p50 / p95 (s) |"
        )
        print("|---|---|---|---|---|")
        for spec in args.model:
            _, paths = spec.split("=", 1)
            m, d = paths.split(":", 1)
            r = model_latency(Path(m), Path(d), args.limit)
            print(
                f"| {r['unit_s']} s | {m} | {r['sessions']} | {r['responded']} | {r['mean']:.3f} / {r['p50']:.3f} / {r['p95']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

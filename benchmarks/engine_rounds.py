"""Batched rounds: N sessions advanced together, unit by unit, through ``Engine.step_many`` (what `lws serve`'s
batcher does at full load, without the sockets).

Each session hears a real spoken question (espeak-ng, a voice per session) and then silence, so a trained
model answers in some units and listens in others; sessions start at staggered points of their audio, so
their contexts differ as a server's do. Prints, per N, the round time (mean and p95 over the units), the
engine time per session-unit, and how many of the fused forwards of two or more sessions attended over pool
blocks (docs/engine.md). No warm-up is timed: the first round of each N is dropped.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engine_rounds.py --model MODEL_DIR --sessions 16 32 64 --units 12

Without --model a random-init tiny model (default config): random weights decode the full budgets in
every unit, the worst case. Run from another source tree with ``PYTHONPATH=<tree>`` to compare code.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

SENTENCES = [
    "What is seven times eight?",
    "Convert three kilometres to metres, please.",
    "Which is larger, forty one or fourteen?",
    "Write a python function that returns the square of a number.",
    "What comes next in two, four, six, eight?",
    "How many grams are in two kilograms?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="LWS model directory (default: a random-init tiny model)")
    ap.add_argument("--sessions", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--units", type=int, default=12, help="rounds timed per N (after one untimed round)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lws_core.audio import get_tts
    from lws_core.audio.tts import VoiceSpec, english_voices
    from lws_core.engine import Engine

    if args.model:
        engine = Engine.from_dir(args.model, lean=True)
    else:
        from lws_core.config import LWSConfig
        from lws_core.model import LWSModel

        torch.manual_seed(0)
        engine = Engine(LWSModel.build(LWSConfig()))
    tts, n = get_tts(), engine.unit_samples
    voices = english_voices(held_out=False)
    clips = []
    for i in range(max(args.sessions)):
        speech = tts.synthesize(SENTENCES[i % len(SENTENCES)], VoiceSpec(voices[i % len(voices)])).audio
        tail = np.zeros(n * (args.units + 2), dtype=np.float32)
        audio = np.concatenate([np.asarray(speech, dtype=np.float32), tail])
        clips.append(audio[(i % 4) * n // 4 :])  # staggered starts: a quarter unit apart
    fast = engine.fast_path
    print(f"model {args.model or 'random-init tiny'}; {args.threads} thread(s)")
    print("| sessions | round mean / p95 (ms) | per session-unit (ms) | speaking units | block-attention forwards |")
    print("|---|---|---|---|---|")
    for count in args.sessions:
        sessions = [engine.session() for _ in range(count)]
        before = (fast.batched_forwards, fast.pooled_rounds) if fast is not None and hasattr(fast, "pooled_rounds") else None
        times, speaking = [], 0
        for u in range(args.units + 1):
            pairs = [(s, clips[i][u * n : (u + 1) * n]) for i, s in enumerate(sessions)]
            t0 = time.perf_counter()
            outs = engine.step_many(pairs)
            if u:
                times.append(time.perf_counter() - t0)
                speaking += sum(o.state == "speak" for o in outs)
        for s in sessions:
            s.close()
        blocks = "–"
        if before is not None:
            blocks = f"{fast.pooled_rounds - before[1]} of {fast.batched_forwards - before[0]}"
        p95 = float(np.percentile(times, 95))
        mean = statistics.mean(times)
        print(f"| {count} | {1000 * mean:.0f} / {1000 * p95:.0f} | {1000 * mean / count:.2f} | "
              f"{speaking} of {count * args.units} | {blocks} |", flush=True)


if __name__ == "__main__":
    main()

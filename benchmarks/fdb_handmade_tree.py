"""Hand-made Full-Duplex-Bench outputs with varied behaviour, for checking metrics against the official scripts.

    .venv/bin/python benchmarks/fdb_handmade_tree.py --probe PROBE --out TREE [--per-task 8] [--seed 0]

A model's outputs on our probe tend to be uniform (a random-init model babbles
from the first unit: every TOR 1, latency 0, no backchannel), which exercises few
of the official rules.  This script writes, for the inputs of a probe tree
(``lws eval fdb-probe``), outputs that hit the rules' edges on purpose: silence,
one short word (TO = 0 by the 1 s / 3 words rule), answers starting before the
reference time (negative latency, clipped) and after it, interruption answers cut
by the interruption's end, and backchannel outputs mixing short "yeah"/"mm hmm"
with long (> 3 s) turns and 1-3 s segments.  Speech is espeak-ng (our TTS) placed
at random times into a silent ``output.wav`` of the input's length; ``output.json``
holds the TTS word times (after the interruption's end only, like the official ASR
step).  Then ``benchmarks/fdb_official_check.py`` compares both implementations.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

BACKCHANNELS = ("yeah", "mm hmm", "right", "okay", "uh huh")
SHORT = ("okay",)
ANSWERS = (
    "the answer is forty two",
    "six times seven is forty two and that is all",
    "sure, let me think about that for a moment before I answer you properly",
)
MEDIUM = ("that is really interesting to hear",)  # 1-3 s, > 3 words: a takeover inside the backchannel rules


def _place(out: np.ndarray, speech, t: float) -> list:  # noqa: ANN001 - lws_core.audio.tts.Speech
    from lws_core.schema import Word

    i = int(t * 16000)
    seg = speech.audio[: max(0, len(out) - i)]
    out[i : i + len(seg)] += seg
    dur = len(out) / 16000
    return [Word(text=w.text, start=w.start + t, end=min(w.end + t, dur)) for w in speech.words if w.start + t < dur]


def _reference_time(task: str, d: Path) -> float:
    if task == "smooth_turn_taking":
        return float(json.loads((d / "turn_taking.json").read_text())[0]["timestamp"][0])
    if task == "user_interruption":
        return float(json.loads((d / "interrupt.json").read_text())[0]["timestamp"][1])
    if task == "pause_handling":
        return float(json.loads((d / "pause.json").read_text())[0]["timestamp"][0])
    return 0.0


def make_sample(tts, src: Path, dst: Path, task: str, rng: np.random.Generator) -> None:  # noqa: ANN001
    import soundfile as sf

    from lws_core.eval.fdb_run import fdb_output_json, words_after

    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("output"):
            shutil.copy2(f, dst / f.name)
    n = sf.info(str(src / "input.wav")).frames
    out = np.zeros(n, np.float32)
    dur = n / 16000
    words = []
    if task == "backchannel":
        t = float(rng.uniform(0.2, 1.5))
        while t < dur - 1.0:
            r = rng.random()
            text = str(rng.choice(ANSWERS[1:])) if r < 0.2 else str(rng.choice(MEDIUM)) if r < 0.4 else str(rng.choice(BACKCHANNELS))
            sp = tts.synthesize(text)
            words += _place(out, sp, t)
            t += sp.duration_s + float(rng.uniform(0.8, 4.0))
    else:
        kind = rng.choice(["silent", "short", "answer", "answer", "answer"])
        ref = _reference_time(task, src)
        if kind != "silent":
            text = str(rng.choice(SHORT if kind == "short" else ANSWERS))
            t = float(np.clip(ref + rng.uniform(-0.6, 1.5), 0.0, max(0.0, dur - 0.5)))
            words = _place(out, tts.synthesize(text), t)
        if task == "user_interruption":
            words = words_after(words, ref)
    sf.write(str(dst / "output.wav"), np.clip(out, -1, 1), 16000, subtype="PCM_16")
    (dst / "output.json").write_text(json.dumps(fdb_output_json(words), indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probe", type=Path, required=True, help="Probe tree from `lws eval fdb-probe` (its inputs are reused).")
    ap.add_argument("--out", type=Path, required=True, help="New tree to write.")
    ap.add_argument("--per-task", type=int, default=8, help="Samples per task (probe inputs are cycled).")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from lws_core.audio.tts import get_tts
    from lws_core.eval.fdb_metrics import detect_task, sample_dirs, task_dirs

    if args.out.exists():
        print(f"error: {args.out} exists", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    tts = get_tts()
    for td in task_dirs(args.probe):
        srcs = sample_dirs(td)
        task = detect_task(srcs[0])
        for i in range(args.per_task):
            make_sample(tts, srcs[i % len(srcs)], args.out / td.name / str(i), task, rng)
    print(f"{args.per_task} hand-made samples per task -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

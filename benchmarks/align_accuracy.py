"""Forced-alignment accuracy: PocketSphinxAligner against espeak-ng's exact word times.

Each sentence is a template question (lws_core.data.tasks, all families) spoken by
a voice drawn the way data synthesis draws them (every English voice and timbre,
140-210 wpm, pitch 30-70), optionally with white noise. The aligner gets the audio
and the question text; its word starts/ends are compared with the TTS's own.
Prints mean / p95 / max absolute boundary error (ms), the same figures for a
baseline that splits the duration uniformly over the words, refusals, and the
real-time factor (align seconds / audio seconds, one thread).

Run: .venv/bin/python benchmarks/align_accuracy.py --n 50 [--snr-db 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="Sentences to align.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--snr-db", type=float, default=None, help="Add white noise at this SNR (default: clean).")
    ap.add_argument("--aligner", default="pocketsphinx")
    args = ap.parse_args()

    from lws_core.audio import english_voices, get_tts
    from lws_core.audio.align import AlignmentError, get_aligner
    from lws_core.audio.noise import add_noise
    from lws_core.data.scenarios import choose_voice
    from lws_core.data.tasks import FAMILIES, make_question

    rng = np.random.default_rng(args.seed)
    tts, aligner = get_tts(), get_aligner(args.aligner)
    voices = english_voices()
    aligner.align(tts.synthesize("warm up").audio, 16000, "warm up")  # model load is not alignment time
    errs, base, refused = [], [], []
    audio_s = align_s = 0.0
    for i in range(args.n):
        q = make_question(FAMILIES[i % len(FAMILIES)], rng)
        voice = choose_voice(rng, voices)
        sp = tts.synthesize(q.text, voice)
        audio = sp.audio if args.snr_db is None else add_noise(sp.audio, args.snr_db, rng)
        t0 = time.perf_counter()
        try:
            words = aligner.align(audio, 16000, q.text)
        except AlignmentError as e:
            refused.append(f"{voice.label()}: {q.text!r}: {e}")
            continue
        finally:
            align_s += time.perf_counter() - t0
            audio_s += sp.duration_s
        ref = sp.words
        assert [w.text for w in words] == [w.text for w in ref]
        errs += [abs(a.start - b.start) for a, b in zip(words, ref, strict=True)]
        errs += [abs(a.end - b.end) for a, b in zip(words, ref, strict=True)]
        n, dur = len(ref), sp.duration_s
        base += [abs(k * dur / n - w.start) for k, w in enumerate(ref)]
        base += [abs((k + 1) * dur / n - w.end) for k, w in enumerate(ref)]

    def fig(x: list[float]) -> str:
        a = np.asarray(x) * 1000
        return f"mean {a.mean():.1f} ms, p95 {np.percentile(a, 95):.1f} ms, max {a.max():.1f} ms" if a.size else "n/a"

    print(f"aligner={args.aligner} sentences={args.n} seed={args.seed} snr_db={args.snr_db} "
          f"audio={audio_s:.1f}s python={platform.python_version()}")
    print(f"aligned: {args.n - len(refused)}/{args.n}  boundaries: {len(errs)}")
    print(f"boundary error, aligner:          {fig(errs)}")
    print(f"boundary error, uniform baseline: {fig(base)}")
    print(f"within 50 ms: {np.mean(np.asarray(errs) <= 0.05) * 100:.1f}%  within 100 ms: "
          f"{np.mean(np.asarray(errs) <= 0.1) * 100:.1f}%" if errs else "")
    print(f"real-time factor: {align_s / max(audio_s, 1e-9):.4f} ({audio_s / max(align_s, 1e-9):.0f}x faster than real time)")
    for r in refused:
        print(f"refused: {r}")


if __name__ == "__main__":
    main()

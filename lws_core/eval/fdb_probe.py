"""Build a Full-Duplex-Bench-format probe tree from our own TTS (offline, reproducible).

The official data cannot be downloaded at run time, so tests and the pipeline's
evaluate step run the whole benchmark flow on a small tree of the same format:

    ROOT/pause_handling/<i>/      input.wav, pause.json, transcription.json
    ROOT/smooth_turn_taking/<i>/  input.wav, turn_taking.json, transcription.json
    ROOT/user_interruption/<i>/   input.wav, context.wav, interrupt.wav, interrupt.json, transcription.json
    ROOT/backchannel/<i>/         input.wav, transcription.json

Questions come from the template task families (held-out test phrasings) spoken by
held-out voices, so the probe measures the same model behaviour as the test split
in the benchmark's terms.  ``transcription.json`` uses the Candor layout
``[{"speaker": 0, "item": [{"text", "timestamp": [s, e]}]}]`` with speaker 0 = the user.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from lws_core.errors import InputError

SR = 16000

# Monologue sentences for the backchannel task: the user talks at length, pausing between sentences.
_MONOLOGUE = (
    "So last weekend I finally cleaned out the garage.",
    "There were boxes in there from three moves ago.",
    "I found my old bike and a set of paint cans.",
    "Then my neighbour came over to help me carry things.",
    "We filled the whole car twice before lunch.",
    "By the evening the floor was clear again.",
    "I think I will park the car inside this winter.",
    "Anyway it took much longer than I planned.",
)
_INTERRUPTS = (
    "Wait, can you make it shorter?",
    "Sorry, actually what is 3 plus 4?",
    "Hold on, say that again please.",
    "Stop, tell me just the answer.",
)


def _silence(s: float) -> np.ndarray:
    return np.zeros(int(round(s * SR)), dtype=np.float32)


def _words_json(words: list[tuple[str, float, float]]) -> list[dict]:
    return [{"speaker": 0, "item": [{"text": t, "timestamp": [round(s, 3), round(e, 3)]} for t, s, e in words]}]


class _Track:
    """Concatenates speech and silence while keeping absolute word times."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.words: list[tuple[str, float, float]] = []
        self.t = 0.0

    def say(self, tts, text: str, voice) -> tuple[float, float]:  # noqa: ANN001
        sp = tts.synthesize(text, voice)
        start = self.t
        self.words += [(w.text, start + w.start, start + w.end) for w in sp.words]
        self.parts.append(sp.audio.astype(np.float32))
        self.t += len(sp.audio) / SR
        return start + sp.words[0].start, start + sp.words[-1].end

    def pause(self, s: float) -> None:
        self.parts.append(_silence(s))
        self.t += len(self.parts[-1]) / SR

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.float32)


def build_probe(
    out: str | Path, per_task: int = 4, seed: int = 0, progress: bool = True, phrasings: str = "test"
) -> Path:
    """Write the probe tree to ``out`` atomically (a temp dir renamed at the end); returns ``out``.

    ``phrasings``: ``test`` (the default) draws the questions from the held-out phrasings, as the
    pipeline's probe does; ``train`` from the training phrasings (still held-out voices), so a duplex
    miss can be split into "did not hear" and "did not understand a new phrasing".
    """
    from lws_core.audio.io import write_wav
    from lws_core.audio.tts import VoiceSpec, english_voices, get_tts
    from lws_core.data.tasks import FAMILIES, make_question
    from lws_core.progress import progress as bar

    if per_task < 1:
        raise InputError(f"--per-task must be >= 1 (got {per_task})")
    if phrasings not in ("test", "train"):
        raise InputError(f"--phrasings must be 'test' or 'train' (got {phrasings!r})")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: exists and is not empty; choose a new probe directory")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    tts = get_tts()
    voices = english_voices(held_out=True)

    def voice(i: int) -> VoiceSpec:
        return VoiceSpec(name=voices[(seed + i) % len(voices)], rate_wpm=int(rng.integers(150, 190)))

    def question(i: int) -> str:
        return make_question(FAMILIES[i % len(FAMILIES)], rng, split=phrasings).text

    def sample_dir(task: str, i: int) -> Path:
        d = tmp / task / str(i)
        d.mkdir(parents=True)
        return d

    try:
        for i in bar(range(per_task), desc="fdb-probe", unit="sample x4", disable=not progress):
            v = voice(i)
            # pause handling: a question cut by a long mid-turn pause
            words = question(i).split()
            cut = max(1, len(words) // 2)
            tr = _Track()
            tr.pause(0.5)
            tr.say(tts, " ".join(words[:cut]), v)
            p0 = tr.t
            tr.pause(float(rng.uniform(1.5, 2.5)))
            p1 = tr.t
            tr.say(tts, " ".join(words[cut:]), v)
            tr.pause(0.3)
            d = sample_dir("pause_handling", i)
            write_wav(d / "input.wav", tr.audio)
            (d / "pause.json").write_text(json.dumps([{"text": "[PAUSE]", "timestamp": [round(p0, 3), round(p1, 3)]}]))
            (d / "transcription.json").write_text(json.dumps(_words_json(tr.words)))

            # smooth turn-taking: a question, then room to answer
            tr = _Track()
            tr.pause(0.5)
            _, end = tr.say(tts, question(i + 1), v)
            tr.pause(4.0)
            d = sample_dir("smooth_turn_taking", i)
            write_wav(d / "input.wav", tr.audio)
            (d / "turn_taking.json").write_text(json.dumps([{"text": "[TURN-TAKING]", "timestamp": [round(end, 3), round(tr.t, 3)]}]))
            (d / "transcription.json").write_text(json.dumps(_words_json(tr.words)))

            # user interruption: a question, the model starts answering, the user cuts in
            ctx_text, int_text = question(i + 2), _INTERRUPTS[i % len(_INTERRUPTS)]
            tr = _Track()
            tr.pause(0.5)
            tr.say(tts, ctx_text, v)
            ctx_audio = tr.audio.copy()
            tr.pause(2.5)
            n0 = len(tr.audio)
            s, e = tr.say(tts, int_text, v)
            int_audio = tr.audio[n0:].copy()
            tr.pause(4.0)
            d = sample_dir("user_interruption", i)
            write_wav(d / "input.wav", tr.audio)
            write_wav(d / "context.wav", ctx_audio)
            write_wav(d / "interrupt.wav", int_audio)
            (d / "interrupt.json").write_text(json.dumps([{"context": ctx_text, "interrupt": int_text, "timestamp": [round(s, 3), round(e, 3)]}]))
            (d / "transcription.json").write_text(json.dumps(_words_json(tr.words)))

            # backchannel: a monologue with short pauses between sentences
            tr = _Track()
            tr.pause(0.3)
            k = int(rng.integers(0, len(_MONOLOGUE)))
            for j in range(4):
                tr.say(tts, _MONOLOGUE[(k + j) % len(_MONOLOGUE)], v)
                tr.pause(float(rng.uniform(0.4, 0.9)))
            d = sample_dir("backchannel", i)
            write_wav(d / "input.wav", tr.audio)
            (d / "transcription.json").write_text(json.dumps(_words_json(tr.words)))
        (tmp / "README.md").write_text(
            f"Full-Duplex-Bench v1-format probe synthesized with espeak-ng (held-out voices, {phrasings} phrasings).\n"
            f"per_task={per_task} seed={seed} phrasings={phrasings}. Not the official data: numbers are not comparable to the leaderboard.\n"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

"""General English speech for the recogniser stand-in: utterances of frequent words, none of the task templates.

Why: the stand-in recogniser has only ever heard the task templates' words, so a held-out phrasing's new
words ("expressed", "between") are beyond it (WER 0.60 on held-out phrasings against ~0.13 on held-out
voices saying training phrasings, docs/training.md), where a real Whisper-class encoder has heard the whole
language and would hear them. This corpus gives it a general vocabulary: each utterance is 3-10 words drawn
uniformly from the ``vocab`` most frequent English words (wordfreq's list, shipped inside its package, so
nothing is downloaded), sometimes with a number, said by a training voice. It is drawn without looking at
any phrasing (the test phrasings' words are there only as far as they are among the language's frequent
words), so it is the stand-in's analogue of an ASR encoder's general pretraining, not a leak of the test set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lws_core.audio.noise import gain_db, noise
from lws_core.audio.tts import EspeakTTS, english_voices
from lws_core.data.fillers import general_words
from lws_core.model.asr import heard_form


def general_utterances(n: int, vocab: int, seed: int) -> list[str]:
    """``n`` texts of 3-10 frequent words (a third of them with a number in 0-999), reproducible by ``seed``."""
    words = general_words(vocab)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 7, i])
        ws = [str(w) for w in rng.choice(words, int(rng.integers(3, 11)))]
        if rng.random() < 1 / 3:
            ws.insert(int(rng.integers(0, len(ws) + 1)), str(int(rng.integers(0, 1000))))
        out.append(" ".join(ws))
    return out


def general_sessions(n: int, vocab: int, seed: int, unit_s: float, unit_samples: int, tok: Any, progress: bool = False) -> list[Any]:
    """The corpus as the encoder stage's sessions: per unit its audio, transcript, tokens and timed words.

    Laid out as the data pipeline lays out a question (``lws_core.data.scenarios``): 0.2-1.0 s of lead, a
    gain of -10..0 dB, a quiet pink-noise floor, and each word heard in the unit in which it ends.
    """
    from lws_core.data.scenarios import choose_voice
    from lws_core.progress import progress as bar
    from lws_core.train.pretrain_encoder import _Session

    # a private copy of the library: a second plain instance would re-initialise the process's shared espeak-ng and
    # take over its callback, so the per-process TTS (get_tts) would then render nothing
    tts = EspeakTTS(fresh=True, seed=seed)
    voices = english_voices(held_out=False)
    sr = round(unit_samples / unit_s)
    out = []
    for i, text in enumerate(bar(general_utterances(n, vocab, seed), total=n, desc="general speech", unit="utterance", disable=not progress)):
        rng = np.random.default_rng([seed, 11, i])
        sp = tts.synthesize(text, choose_voice(rng, voices))
        lead = float(rng.uniform(0.2, 1.0))
        start = int(lead * sr)
        units = int(np.ceil((start + len(sp.audio) + 0.3 * sr) / unit_samples))
        audio = np.zeros(units * unit_samples, dtype=np.float32)
        audio[start : start + len(sp.audio)] = gain_db(sp.audio, float(rng.uniform(-10, 0)))
        level = 10 ** (float(rng.uniform(-50, -30)) / 20)
        audio = (audio + level * noise(len(audio), rng, "pink")).clip(-1, 1).astype(np.float32)
        texts: list[list[str]] = [[] for _ in range(units)]
        items: list[list[tuple[list[int], float, float]]] = [[] for _ in range(units)]
        for w in sp.words:
            t0, t1 = w.start + lead, w.end + lead
            u = max(0, int(np.ceil(t1 / unit_s - 1e-9)) - 1)
            heard = heard_form([w.text])
            if u >= units or not heard:
                continue
            texts[u].append(heard)
            items[u].append((tok.encode_text(" " + heard), (t1 - u * unit_s) / unit_s - 1e-6, (t0 - u * unit_s) / unit_s))
        targets = [" ".join(t) for t in texts]
        tokens = [tok.encode_text(" " + t) if t else [] for t in targets]
        out.append(_Session(audio.reshape(units, unit_samples), targets, tokens, items))
    return out

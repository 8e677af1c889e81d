"""Unheard words in the LWS stage's training audio: a share of the question's value-free words silenced.

Why: the backbone stand-in learned to take a task from what the answer is made of
when some phrasing words are lost (its text view drops them: ``pretrain.backbone.heard_noise``,
:func:`lws_core.train.pretrain_backbone.mishearing`), because that is what the recogniser does on a
phrasing it never heard: it writes nothing for an unknown word. The LWS stage then trains on clean
audio of training phrasings only, where every word is heard, so that robustness has nothing to keep it
in the audio path; held-out phrasings are where LWS falls behind the cascade (the recogniser's own
transcript fed to the backbone: stop 59, written ``test`` 0.416 against 0.45). Silencing the audio of
the same words the text view drops (never a number, a slot value or a word the answers say back)
gives the LWS stage the audio analogue: a question with words the recogniser cannot hear, and the
same labels. Training only: validation, evaluation and serving hear the audio as it is.
"""

from __future__ import annotations

import zlib

import numpy as np

from lws_core.model.asr import heard_form
from lws_core.schema import Session
from lws_core.train.pretrain_backbone import mishearing

_FADE_S = 0.005  # a short ramp at each silenced span's edges, so no click marks where a word was


class UnheardWords:
    """Callable ``(session, audio, row_id) -> audio``: each droppable word silenced with probability ``rate``.

    Draws are reproducible: the n-th time a row is seen uses the generator seeded by (``seed``, the row
    id, n), so a rerun with the same seed and data order silences the same words, and a later epoch
    silences others.
    """

    def __init__(self, rate: float, seed: int) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.seed = seed
        self._seen: dict[str, int] = {}

    def __call__(self, session: Session, audio: np.ndarray, row_id: str) -> np.ndarray:
        if self.rate <= 0.0 or not session.user_words:
            return audio
        n = self._seen.get(row_id, 0)
        self._seen[row_id] = n + 1
        rng = np.random.default_rng([self.seed, 7717, zlib.crc32(row_id.encode()), n])
        spans = silenced_spans(session, self.rate, rng)
        return silence(audio, spans, len(audio) / session.duration_s if session.duration_s else 0.0)


def silenced_spans(session: Session, rate: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """(start, end) seconds of the words to silence: the words :func:`mishearing` may drop, each with
    probability ``rate`` (one draw per word, in order, so the choice is reproducible by ``rng``)."""
    drop = mishearing(session, rate, rng, pool=[], swap=0.0)  # swap 0: a lost word is dropped, never replaced
    spans = []
    for w in session.user_words:
        text = heard_form([w.text])
        if text and w.end > w.start and drop(text) == "":
            spans.append((w.start, w.end))
    return spans


def silence(audio: np.ndarray, spans: list[tuple[float, float]], sample_rate: float) -> np.ndarray:
    """A copy of ``audio`` (1-D float) with each span set to zero, faded out and in over a few milliseconds."""
    if not spans or sample_rate <= 0:
        return audio
    out = np.array(audio, dtype=np.float32, copy=True)
    fade = max(1, int(_FADE_S * sample_rate))
    for start, end in spans:
        a, b = max(0, int(start * sample_rate)), min(len(out), int(np.ceil(end * sample_rate)))
        if b <= a:
            continue
        out[a:b] = 0.0
        lo = max(0, a - fade)
        hi = min(len(out), b + fade)
        out[lo:a] *= np.linspace(1.0, 0.0, a - lo, endpoint=False, dtype=np.float32)  # fade out
        out[b:hi] *= np.linspace(0.0, 1.0, hi - b, endpoint=False, dtype=np.float32)  # fade in
    return out

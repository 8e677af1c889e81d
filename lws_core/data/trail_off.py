"""Trailed-off questions (``data.trail_off_rate``): the user stops at a pause and never finishes.

Why: the model learns when to answer from two cues, silence and a question that sounds complete. On
held-out phrasings the second cue fails (the recogniser stand-in hears new words as noise), and in
stop 42's FDB probe the model then listened through four seconds of silence without ever taking the
turn (docs/training.md). Nothing in training said what a long silence after an unfinished question
means: pauses always ended with the rest of the question. Here some training pause sessions stop at
the pause; once the silence has lasted ``data.trail_off_wait_s`` (never shorter than the longest
trained pause, ``data.pause_max_s``, so a real pause is never a reason to speak) the model takes the
turn and asks for the question again. A voice agent that stays silent forever when a user trails off
is broken whatever its benchmarks say, so this is behaviour worth having, not a probe trick; the graded
splits (``test``, ``test_seen``) never get these sessions, and their answers are not graded. Off by default:
measured in stop 43 (three seeds, paired), it brought the held-out-phrasing turn-taking TOR from 0.82 to 0.98
at rate 0.5 and at 0.2, but held-out-phrasing consistency fell from 0.90 to 0.83 (benchmarks/results/liberation.md).
"""

from __future__ import annotations

import numpy as np

from lws_core.data.types import Script

# (written, spoken): the reply to a question the user never finished
REPLIES = (
    ("I heard only part of the question. Please say it again.", "Sorry, I missed the end of that. Could you say the whole question again?"),
    ("The question was cut off. Please repeat it.", "I think the question got cut off. Could you repeat it?"),
    ("I did not hear the whole question. Please ask again.", "Sorry, I only heard part of it. Can you ask again?"),
)


def draw_trail_off(seed: int, index: int, rate: float) -> np.random.Generator | None:
    """Session ``index``'s trail-off generator (probability ``rate``), else None.

    Its own generator (not the session's), so a session draws the same question, voice and pause
    with or without trail-offs, and the graded splits stay identical.
    """
    if rate <= 0:
        return None
    rng = np.random.default_rng([seed, index, 17])
    return rng if rng.random() < rate else None


def reply_script(script: Script, last_heard_word: int, rng: np.random.Generator) -> Script:
    """The script for a question heard up to word ``last_heard_word``: the notes on what was heard, then a
    request to repeat the question (no answer: the rest of the question was never said)."""
    written, spoken = REPLIES[int(rng.integers(len(REPLIES)))]
    notes = [n for n in script.notes if n.depends_on_word <= last_heard_word]
    return Script(notes=notes, written=written, spoken=spoken)

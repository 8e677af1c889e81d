"""Filler words in training questions (``data.filler_rate``): speech the recogniser never learnt, in a question.

Why: on held-out phrasings (the ``test`` split) the stand-in recogniser hears a new word ("expressed",
"between") as noise, and that noise is where the split's state, pause and consistency misses come from
(docs/training.md, stop 37): training never showed the LWS model a question with a word it could not
place, so it takes the turn, or writes a note, on the noise. A filler is a frequent English word that no
training phrasing or slot value says (so it cannot change the question) and that is not a number word;
it goes at a random word gap of a training or validation question (``data.filler_place``: ``anywhere``
after the first word, or at the ``edges``), so a question can also go on after its last value. The list
is wordfreq's, shipped in its package, chosen without looking at any held-out phrasing; the graded splits
(``test``, ``test_seen``) never get fillers. On by default since stop 58 (half the training questions, at the
edges), for the LWS data only: the backbone's text corpus takes none and the recogniser stand-in learns from the
dataset's filler-free twin (lws_core.train.pretrain_encoder), so the fillers stay speech it cannot read. Measured
on fixed stand-ins (stop 57, three LWS seeds): held-out-phrasing state accuracy 0.926 -> 0.958, written accuracy
held; a recogniser that had learnt them too gave 0.944 and answered less (one seed). benchmarks/results/liberation.md.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# number words would add a value the question's answer ignores
_NUMBER_WORDS = frozenset((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty", "thirty", "forty",
    "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "million", "billion", "first", "second",
    "third", "half", "once", "twice", "double", "dozen",
))


def general_words(vocab: int) -> list[str]:
    """The ``vocab`` most frequent alphabetic English words (wordfreq's ``top_n_list``)."""
    from wordfreq import top_n_list

    out = [w for w in top_n_list("en", vocab * 2) if w.isascii() and w.isalpha()]
    return out[:vocab]


@lru_cache(maxsize=4)
def filler_words(vocab: int) -> tuple[str, ...]:
    """The frequent words a question may carry as fillers: none of the training phrasings' words or their
    forms (a prefix of four letters or more: "tables" for "table"), no number words."""
    from lws_core.data.tasks import training_vocabulary

    banned = training_vocabulary()
    stems = tuple(w for w in banned if len(w) >= 4)
    return tuple(
        w for w in general_words(vocab)
        if w not in banned and w not in _NUMBER_WORDS and not w.startswith(stems)
    )


def draw_fillers(
    seed: int, index: int, rate: float, most: int, vocab: int, place: str = "anywhere"
) -> tuple[list[str], np.random.Generator, str] | None:
    """Session ``index``'s fillers, the generator that places them and where (``data.filler_place``), or None
    (probability 1 - ``rate``).

    Its own generator (not the session's), so a session draws the same values, voice and scenario with or
    without fillers, and the graded splits stay identical.
    """
    if rate <= 0:
        return None
    rng = np.random.default_rng([seed, index, 13])
    if rng.random() >= rate:
        return None
    words = filler_words(vocab)
    return [str(w) for w in rng.choice(words, int(rng.integers(1, most + 1)))], rng, place

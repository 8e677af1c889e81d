"""Arithmetic drills for the backbone stand-in: the small-number facts a real pretrained LLM already knows.

Why: the text ceiling of the stand-in trained on sessions alone stalled near
0.2 (stop 21). It copied questions and followed the answer format, but it could
not multiply or add: "6 * 11 = 18", "49 + 29 = 41". About 10,000 sessions cannot
teach a model ~150 products and two-digit addition. A real LLM learned those
facts from its pretraining text, long before anyone asked it a spoken question.
So the stand-in gets them the same way: dense plain-text rows of facts in the
notes' own syntax (``7 * 7 = 49``, ``49 + 29 = 78``, ``92 vs 13: 92 is larger``),
packed beside the session rows at every step.

The ranges are generic school arithmetic (products to 12 × 12 and by common unit
factors, sums and differences of numbers below 200). They are not drawn from the
question generator, and they carry no phrasing and no audio, so the held-out
phrasings and voices stay unseen.

Measured, and off by default (``pretrain.backbone.drill_rows``): one drill row
per step at the default 600 steps lowered the text ceiling from 0.165 / 0.222 to
0.071 / 0.074 (one run each, ``benchmarks/results/pipeline.md``); the backbone
learnt neither the facts nor copying in that budget. Kept for longer budgets.
"""

from __future__ import annotations

import numpy as np

from lws_core.schema import IGNORE_INDEX

# multipliers beyond the times tables: the factors of everyday unit conversions (days, hours, feet, kg, m)
_FACTORS = (7, 12, 24, 60, 100, 1000)
_ADJ = ("larger", "bigger", "smaller")


def fact(rng: np.random.Generator) -> str:
    """One random fact line."""
    ri = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    kind = ri(0, 4)
    if kind == 0:
        a = ri(1, 12)
        b = ri(1, 12) if rng.random() < 0.75 else int(rng.choice(_FACTORS))
        return f"{a} * {b} = {a * b}\n"
    if kind == 1:
        a, b = ri(0, 150), ri(1, 60)
        return f"{a} + {b} = {a + b}\n"
    if kind == 2:
        a = ri(2, 199)
        b = ri(1, a)
        return f"{a} - {b} = {a - b}\n"
    if kind == 3:
        a, b = ri(10, 99), ri(10, 99)
        adj = str(rng.choice(_ADJ))
        r = min(a, b) if adj == "smaller" else max(a, b)
        return f"{a} vs {b}: {r} is {adj}\n"
    a = ri(2, 150)  # doubling ("Now double that.")
    return f"{a} * 2 = {2 * a}\n"


def drill_row(rng: np.random.Generator, encode, row_len: int) -> tuple[list[int], list[int]]:  # noqa: ANN001 - str -> ids
    """Fact lines, tokenized, up to ``row_len`` tokens: one plain-text document, every token a label."""
    ids: list[int] = []
    while True:
        line = encode(fact(rng))
        if len(ids) + len(line) > row_len:
            break
        ids += line
    return ids, list(ids)


_LINKS = ("and", "vs", "or", "times", "plus", "minus", "by", "to", "of")


def copy_row(rng: np.random.Generator, encode, filler: int, row_len: int) -> tuple[list[int], list[int]]:  # noqa: ANN001
    """Copy episodes, up to ``row_len`` tokens: heard-style words with ``filler`` (``<|audio|>``) slots between
    them, unlabelled, then the same words written as a note line, labelled.

    Why: teacher-forced, the session-only backbone writes a heard number's first digit right 77 % of the
    time and its later digits 66 % (``benchmarks/copy_probe.py``, ``test_seen``), where copying would give
    nearly 100 %. Random numbers cannot be predicted, only copied, so these rows reward nothing but a
    look-back-and-copy mechanism, in the layout the sessions use.

    Measured worse, so off by default (``pretrain.backbone.copy_rows``): one row per step at the default
    600 steps gave 43 % / 21 % on the same probe (one run each, ``benchmarks/results/pipeline.md``).
    """
    ids: list[int] = []
    labels: list[int] = []
    while True:
        words = []
        for i in range(int(rng.integers(2, 5))):
            if i:
                words.append(str(rng.choice(_LINKS)))
            words.append(str(int(rng.integers(0, 1000 if rng.random() < 0.3 else 100))))
        heard: list[int] = []
        for w in words:
            heard += encode(" " + w) + [filler] * int(rng.integers(0, 3))
        note = encode("- " + " ".join(words) + "\n")
        if len(ids) + len(heard) + len(note) > row_len:
            break
        ids += heard + note
        labels += [IGNORE_INDEX] * len(heard) + note
    return ids, labels

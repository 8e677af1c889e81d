"""Hand-made dataset rows with the synthesizer's row schema (Session JSON + PCM16 audio).

Used where a test is about the collator or the model, not about data synthesis:
they build in milliseconds and their content is known exactly.
"""

from __future__ import annotations

import numpy as np

from lws_core.schema import SCHEMA_VERSION, Session, Unit, train_bpe_tokenizer

UNIT_SAMPLES = 16000
CORPUS = ["what is twelve plus three", "the answer is 15", "**Answer:** 15", "noted: plus", "ok, let me think"] * 20


def tokenizer():  # noqa: ANN201
    return train_bpe_tokenizer(CORPUS, vocab_size=300)


def session(n_listen: int = 3, n_speak: int = 2, sid: str = "s0") -> Session:
    units = [Unit(state="listen", write="noted: plus" if i == 1 else "") for i in range(n_listen)]
    units += [
        Unit(state="speak", write="**Answer:** 15" if i == 0 else "", say="the answer is 15", eot=i == n_speak - 1)
        for i in range(n_speak)
    ]
    return Session(id=sid, units=units)


def row(s: Session, seed: int = 0, freq: float = 220.0) -> dict:
    """One row: a sine per unit (frequency differs per unit so unit order is checkable) plus a little noise."""
    rng = np.random.default_rng(seed)
    n = len(s.units) * UNIT_SAMPLES
    t = np.arange(n) / 16000.0
    unit_idx = np.arange(n) // UNIT_SAMPLES
    wave = 0.3 * np.sin(2 * np.pi * (freq + 50 * unit_idx) * t) + 0.01 * rng.standard_normal(n)
    pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
    return {
        "id": s.id,
        "session": s.model_dump_json(),
        "audio": pcm,
        "scenario": "single_turn",
        "task_family": "arithmetic",
        "question": "what is twelve plus three",
        "answer": "15",
        "teacher": "template",
        "voice": "test",
        "schema_version": SCHEMA_VERSION,
        "unit_s": 1.0,
    }


def rows(k: int = 3) -> list[dict]:
    return [row(session(n_listen=2 + i, n_speak=1 + i % 2, sid=f"s{i}"), seed=i) for i in range(k)]

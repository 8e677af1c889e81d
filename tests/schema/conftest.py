from __future__ import annotations

import pytest

from lws_core.schema import train_bpe_tokenizer

CORPUS = [
    "what is 12 plus 30 and then times 4",
    "The answer is 42. | a | b |\n|---|---|\n| 1 | 2 |",
    "def add(a, b):\n    return a + b",
    "convert 3 kilometers to meters: 3000 m",
    "mm-hmm right okay sure, let me write that down",
]


@pytest.fixture(scope="session")
def tok():
    return train_bpe_tokenizer(CORPUS * 4, vocab_size=400)

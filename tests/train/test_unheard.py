"""Unheard words (``train.unheard_word_rate``): which words are silenced, how, reproducibly, and that the
collator changes the audio only. Hand-made sessions and audio (``tests.model.synthetic``): the test is
about the augmentation's bookkeeping, not about speech."""

from __future__ import annotations

import numpy as np
import pytest

from lws_core.config import LWSConfig
from lws_core.schema import Session, Unit, Word
from lws_core.train.collator import LWSCollator
from lws_core.train.unheard import UnheardWords, silence, silenced_spans
from tests.model import synthetic

K = 10
SR = synthetic.UNIT_SAMPLES  # one-second units


def _session(sid: str = "q0") -> Session:
    words = ["please", "tell", "me", "what", "is", "12", "plus", "3", "right", "now"]
    user_words = [Word(text=w, start=0.1 + 0.3 * i, end=0.35 + 0.3 * i) for i, w in enumerate(words)]
    units = [Unit(state="listen", write="- 12 plus 3\n" if i == 2 else "") for i in range(4)]
    units += [Unit(state="speak", write="**Answer:** 15\n", say="fifteen", eot=True)]
    return Session(id=sid, units=units, user_words=user_words)


def _texts(s: Session, spans: list[tuple[float, float]]) -> list[str]:
    return [w.text for w in s.user_words if (w.start, w.end) in spans]


def test_every_droppable_word_and_no_other_at_rate_one():
    s = _session()
    spans = silenced_spans(s, 1.0, np.random.default_rng(0))
    # numbers and the words the notes say back ("plus") are never silenced: the labels need them heard
    assert _texts(s, spans) == ["please", "tell", "me", "what", "is", "right", "now"]
    assert silenced_spans(s, 0.0, np.random.default_rng(0)) == []


def test_silence_zeroes_the_span_fades_its_edges_and_leaves_the_rest():
    audio = np.ones(SR, dtype=np.float32)
    out = silence(audio, [(0.5, 0.6)], SR)
    a, b = int(0.5 * SR), int(0.6 * SR)
    assert np.all(out[a:b] == 0.0)
    fade = int(0.005 * SR)
    assert np.all(out[: a - fade] == 1.0) and np.all(out[b + fade :] == 1.0)
    assert 0.0 < out[a - fade // 2] < 1.0 and 0.0 < out[b + fade // 2] < 1.0  # ramps, not a step
    assert np.all(audio == 1.0)  # the input is not modified


def test_draws_are_reproducible_per_row_and_change_between_epochs():
    s = _session()
    audio = np.ones(len(s.units) * SR, dtype=np.float32)
    first, again = UnheardWords(0.5, seed=3), UnheardWords(0.5, seed=3)
    e1 = first(s, audio, s.id)
    assert np.array_equal(e1, again(s, audio, s.id))  # same seed, same row, same epoch: same words
    e2 = first(s, audio, s.id)  # this row's second epoch
    assert not np.array_equal(e1, e2)
    assert np.array_equal(e2, again(s, audio, s.id))
    assert not np.array_equal(e1, UnheardWords(0.5, seed=4)(s, audio, s.id))


def test_collator_changes_the_audio_of_silenced_words_only():
    s = _session()
    row = synthetic.row(s)
    tok = synthetic.tokenizer()
    plain = LWSCollator(tok, K, SR)([row])
    heard = LWSCollator(tok, K, SR, augment=UnheardWords(1.0, seed=0))([row])
    for key in ("input_ids", "labels", "channels", "audio_mask", "attention_mask"):
        assert np.array_equal(plain[key].numpy(), heard[key].numpy()), key
    a, b = plain["unit_audio"].reshape(-1).numpy(), heard["unit_audio"].reshape(-1).numpy()
    w = s.user_words[0]  # "please": silenced
    assert np.all(b[int(w.start * SR) + 1 : int(w.end * SR)] == 0.0) and np.abs(a[int(w.start * SR) : int(w.end * SR)]).max() > 0.1
    n = s.user_words[5]  # "12": heard
    lo, hi = int(n.start * SR) + 100, int(n.end * SR) - 100
    assert np.array_equal(a[lo:hi], b[lo:hi])


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_rate_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError):
        LWSConfig.model_validate({"train": {"unheard_word_rate": bad}})
    with pytest.raises(ValueError):
        UnheardWords(bad, seed=0)

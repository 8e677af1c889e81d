"""The encoder stand-in's general English speech (``pretrain.encoder.general_utterances``): frequent words
from wordfreq's shipped list, said by training voices, each word heard in the unit in which it ends."""

from __future__ import annotations

import numpy as np

from lws_core.audio.tts import english_voices
from lws_core.model.asr import heard_form
from lws_core.train.general_speech import general_sessions, general_utterances, general_words


def test_utterances_draw_frequent_words_reproducibly() -> None:
    words = general_words(500)
    assert len(words) == 500 and words[:3] == ["the", "to", "and"] and all(w.isalpha() for w in words)
    a, b = general_utterances(40, 500, seed=3), general_utterances(40, 500, seed=3)
    assert a == b and a != general_utterances(40, 500, seed=4)
    vocab = set(words)
    for text in a:
        ws = text.split()
        assert 3 <= len([w for w in ws if not w.isdigit()]) <= 10
        assert all(w in vocab or (w.isdigit() and int(w) < 1000) for w in ws)
    assert any(any(w.isdigit() for w in t.split()) for t in a)  # some carry a number


def test_sessions_hear_each_word_in_the_unit_where_it_ends(tiny_dataset) -> None:
    from lws_core.train.pretrain_encoder import dataset_tokenizer

    tok = dataset_tokenizer(tiny_dataset)
    unit_s, unit_samples = 1.0, 16000
    sessions = general_sessions(4, 300, seed=0, unit_s=unit_s, unit_samples=unit_samples, tok=tok)
    texts = general_utterances(4, 300, seed=0)
    assert len(sessions) == 4
    for s, text in zip(sessions, texts, strict=True):
        n = s.units.shape[0]
        assert s.units.shape == (n, unit_samples) and s.units.dtype == np.float32
        assert np.abs(s.units).max() <= 1.0 and np.abs(s.units).max() > 0.01  # speech, not only the noise floor
        assert " ".join(t for t in s.targets if t) == heard_form(text.split())  # every word, in order, once
        for target, tokens, items in zip(s.targets, s.tokens, s.items, strict=True):
            assert tokens == (tok.encode_text(" " + target) if target else [])
            assert len(items) == len(target.split())
            for ids, end, start in items:
                assert ids and 0.0 < end <= 1.0 and start < end  # it ends inside this unit


def test_only_training_voices_speak_it() -> None:
    assert set(english_voices(held_out=False)).isdisjoint(english_voices(held_out=True))


def test_the_process_tts_still_speaks_after_it(tiny_dataset) -> None:
    """The corpus uses a private copy of espeak-ng: the per-process TTS that the engine and the server share keeps
    its own state (a plain second instance took over the library's callback and left the shared one mute)."""
    from lws_core.audio import get_tts
    from lws_core.train.pretrain_encoder import dataset_tokenizer

    shared = get_tts()
    before = shared.synthesize("hello there").audio
    general_sessions(1, 100, seed=1, unit_s=1.0, unit_samples=16000, tok=dataset_tokenizer(tiny_dataset))
    after = shared.synthesize("hello there").audio
    assert len(before) > 1000 and abs(len(after) - len(before)) < 0.05 * len(before)  # espeak's noise moves a sample
    assert np.abs(after).max() > 0.01

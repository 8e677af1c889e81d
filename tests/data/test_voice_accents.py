"""Synthetic accents for training speech (``data.voice_accents``, ``pretrain.encoder.voice_accents``): new espeak-ng
voices recombined from the training accents' parts, for the training splits only. Real espeak-ng throughout."""

from __future__ import annotations

import numpy as np
import pytest

from lws_core.audio.accents import MAX_VOICE_PATH, accent_definition, accent_file, accent_names
from lws_core.audio.io import SAMPLE_RATE
from lws_core.audio.tts import VARIANTS, EspeakTTS, VoiceSpec, english_voices, label_language, more_variants
from lws_core.config import LWSConfig, config_from_dict, step_view
from lws_core.data import load_dataset_dir, synthesize
from lws_core.errors import InputError


def test_an_accent_is_a_pure_function_of_its_index_and_never_borrows_from_the_held_out_accent():
    defs = [accent_definition(k) for k in range(40)]
    assert defs == [accent_definition(k) for k in range(40)]
    assert len(set(defs)) == 40
    for d in defs:
        lines = d.splitlines()
        assert "language en" in lines and sum(ln.startswith("phonemes ") for ln in lines) == 1
        # the held-out en-gb-x-gbcwmd is phoneme table en-wm, h-dropping and intonation 4: none of it here
        assert "phonemes en-wm" not in lines and "h NULL" not in d and not any(ln.startswith("intonation") for ln in lines)
        assert sum(ln.startswith("replace 00 ") and ln.split()[2] in {"I", "E", "a", "aa", "0", "V", "U", "3:", "i:",
                                                                           "u:", "O:", "A:", "eI", "aI", "oU", "aU"}
                        for ln in lines) >= 2
    assert accent_file("lws-accent-3").read_text() == defs[3]
    with pytest.raises(ValueError, match="not a synthetic accent"):
        accent_file("lws-accent-x")


def test_accents_add_training_voices_only_and_each_speaks_with_word_timings():
    core, more = english_voices(held_out=False), english_voices(held_out=False, accents=4)
    assert set(core) < set(more) and len(more) == len(core) + 4 * (len(VARIANTS) - 2)
    assert english_voices(held_out=True, accents=4) == english_voices(held_out=True)
    assert {label_language(v) for v in more} - {label_language(v) for v in core} == set(accent_names(4))
    # the longest variant name still fits espeak-ng's voice-name buffer (a longer one would abort the process)
    assert len(f"{accent_file('lws-accent-63')}+{max(more_variants(), key=len)}") <= MAX_VOICE_PATH
    tts = EspeakTTS(fresh=True)
    audio = {}
    for name in ("en-us+m1", *(f"{a}+m1" for a in accent_names(4))):
        speech = tts.synthesize("what is 38 times 8 in grams", VoiceSpec(name))
        assert len(speech.words) == 7 and speech.duration_s > 0.8 and float(np.abs(speech.audio).max()) > 0.01
        audio[name] = speech.audio
    arrays = list(audio.values())
    assert all(len(a) != len(b) or not np.array_equal(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:])


def test_every_accent_says_every_word_of_a_probe_that_holds_each_english_vowel():
    # A replacement to a phoneme the accent's table lacks makes espeak-ng say nothing for that vowel ("I" came out
    # silent): every word of the probe must be heard, in all 64 accents that data.voice_accents allows.
    tts = EspeakTTS(fresh=True)
    probe = "I sit at the bath, but good nurses see two thoughts. Calm faces price goats out now, boy; here, there, far, north, sure"
    for language in accent_names(64):
        speech = tts.synthesize(probe, VoiceSpec(f"{language}+m1"))
        assert len(speech.words) == len(probe.split())
        for w in speech.words:
            seg = speech.audio[int(w.start * SAMPLE_RATE):int(w.end * SAMPLE_RATE)]
            assert w.end - w.start >= 0.05 and float(np.abs(seg).max()) > 0.02, (language, w)


def test_bad_accent_voices_are_refused_with_a_message_not_a_crash():
    tts = EspeakTTS(fresh=True)
    with pytest.raises(InputError, match="unknown espeak voice"):
        tts.synthesize("hello", VoiceSpec("lws-accent-x+m1"))
    with pytest.raises(InputError, match="longer than espeak-ng takes"):
        tts.synthesize("hello", VoiceSpec("lws-accent-1+" + "v" * 25))
    with pytest.raises(InputError, match="longer than espeak-ng takes"):  # any voice: espeak-ng aborted on this one
        tts.synthesize("hello", VoiceSpec("en-us+" + "v" * 60))


def test_accents_reach_training_sessions_only(tmp_path):
    cfg = LWSConfig().with_overrides({"data.chunk_sessions": 10, "data.test_fraction": 0.2, "data.test_seen_fraction": 0.2})
    base = load_dataset_dir(synthesize(cfg, tmp_path / "base", sessions=60, workers=2, progress=False, text_only=True).out_dir)
    acc = load_dataset_dir(synthesize(cfg.with_overrides({"data.voice_accents": 8}), tmp_path / "acc", sessions=60,
                                      workers=2, progress=False, text_only=True).out_dir)
    synthetic = set(accent_names(8))
    assert sum(label_language(r["voice"]) in synthetic for split in ("train", "validation") for r in acc[split]) >= 10
    assert not any(label_language(r["voice"]) in synthetic for split in base for r in base[split])
    for split in ("test", "test_seen"):  # the graded splits keep their sessions and voices
        assert len(base[split]) > 0
        assert [(r["id"], r["question"], r["voice"]) for r in base[split]] == [(r["id"], r["question"], r["voice"]) for r in acc[split]]


def test_the_recogniser_corpus_takes_its_own_accents_through_the_step_view():
    from lws_core.train.pretrain_encoder import encoder_corpus_config

    cfg = LWSConfig().with_overrides({"pretrain.encoder.voice_accents": 5})
    assert cfg.data.voice_accents == 0  # the LWS data keeps its voices
    for c in (cfg, config_from_dict(step_view(cfg, "pretrain_encoder"))):
        assert encoder_corpus_config(c).data.voice_accents == 5
    assert encoder_corpus_config(LWSConfig()).data.voice_accents == 8  # the default since stop 63
    unset = LWSConfig().with_overrides({"pretrain.encoder.voice_accents": None, "data.voice_accents": 3})
    assert encoder_corpus_config(unset).data.voice_accents == 3  # null: the data's own

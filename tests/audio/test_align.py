"""Forced alignment of recorded speech: real espeak-ng speech, real PocketSphinx, no mocks.

espeak-ng reports each word's exact time, so its speech is a recording with a
known answer. Measured on these sentences: mean boundary error 15-25 ms, worst
60-90 ms; a uniform split of the duration is off by ~100 ms on average and
~280 ms at worst, so the tolerances below (mean 40 ms, every boundary 120 ms)
separate a real aligner from a guess.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lws_core.audio import SAMPLE_RATE, VoiceSpec, get_tts, resample, write_wav
from lws_core.audio.align import (
    Aligner,
    AlignmentError,
    PocketSphinxAligner,
    get_aligner,
    spell_number,
    transcript_words,
)
from lws_core.errors import InputError
from lws_core.schema.timeline import Word

TEXT = "What is 12 plus 30, and how many inches are in 9 feet?"
MEAN_TOL, MAX_TOL = 0.040, 0.200
LWS = [sys.executable, "-m", "lws_core.cli.main"]


@pytest.fixture(scope="module")
def aligner() -> PocketSphinxAligner:
    return get_aligner("pocketsphinx")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def speech():
    return get_tts().synthesize(TEXT, VoiceSpec("en-us+m3", 175))


def errors(got: list[Word], ref: list[Word], shift: float = 0.0) -> np.ndarray:
    assert [w.text for w in got] == [w.text for w in ref]
    return np.array([abs(g.start - (r.start + shift)) for g, r in zip(got, ref, strict=True)]
                    + [abs(g.end - (r.end + shift)) for g, r in zip(got, ref, strict=True)])


def uniform_split(ref: list[Word], duration: float) -> list[Word]:
    n = len(ref)
    return [Word(text=w.text, start=k * duration / n, end=(k + 1) * duration / n) for k, w in enumerate(ref)]


def assert_close(got: list[Word], ref: list[Word], shift: float = 0.0) -> np.ndarray:
    e = errors(got, ref, shift)
    assert e.mean() <= MEAN_TOL and e.max() <= MAX_TOL, (e.mean(), e.max())
    for a, b in zip(got, got[1:], strict=False):
        assert a.start <= a.end <= b.start + 1e-6  # ordered, no overlaps
    return e


@pytest.mark.parametrize("voice", [VoiceSpec("en-us+m3", 175), VoiceSpec("en-gb-x-rp+f2", 150, 60), VoiceSpec("en+m1", 200, 40)])
def test_word_times_match_tts_and_beat_a_uniform_split(aligner, voice):
    sp = get_tts().synthesize(TEXT, voice)
    got = aligner.align(sp.audio, SAMPLE_RATE, TEXT)
    assert [w.text for w in got] == TEXT.split()  # one timing per transcript token, original strings
    e = assert_close(got, sp.words)
    base = errors(uniform_split(sp.words, sp.duration_s), sp.words)
    # the same tolerance refuses a naive guess, and the aligner is several times closer
    assert base.mean() > MEAN_TOL and base.max() > MAX_TOL
    assert e.mean() < base.mean() / 3


@pytest.mark.parametrize("rate", [8000, 24000, 44100])
def test_other_sample_rates(aligner, speech, rate):
    audio = resample(speech.audio, SAMPLE_RATE, rate)
    assert_close(aligner.align(audio, rate, TEXT), speech.words)


def test_leading_silence_and_noise(aligner, speech):
    rng = np.random.default_rng(0)
    lead = 0.8
    audio = np.concatenate([np.zeros(int(lead * SAMPLE_RATE), np.float32), speech.audio, np.zeros(SAMPLE_RATE // 2, np.float32)])
    audio = audio + rng.normal(0, 0.003, audio.size).astype(np.float32)  # a quiet room, ~30 dB SNR
    got = aligner.align(audio, SAMPLE_RATE, TEXT)
    assert got[0].start >= lead - 0.05
    assert_close(got, speech.words, shift=lead)


def test_refuses_what_it_cannot_align(aligner, speech):
    cases = {
        "the quick brown fox jumps over the lazy dog and runs far away": "no alignment found",
        " ".join([TEXT] * 4): "no alignment found",  # far too much text
        "What is 12 plus 30,": "seems to miss words",  # half the speech has no words
        "   ": "no words",
        "?! --": "no words",
        "What is a zxqvbnm": "not in the pronouncing dictionary: 'zxqvbnm'",
    }
    for text, needle in cases.items():
        with pytest.raises(AlignmentError, match=needle):
            aligner.align(speech.audio, SAMPLE_RATE, text)
    for audio, needle in [(np.zeros(0, np.float32), "empty"), (np.zeros(SAMPLE_RATE, np.float32), "no speech"),
                          (np.full(100, np.nan, np.float32), "NaN"), (np.zeros((2, 100), np.float32), "mono")]:
        with pytest.raises(AlignmentError, match=needle):
            aligner.align(audio, SAMPLE_RATE, TEXT)
    assert issubclass(AlignmentError, InputError)  # the CLI turns it into one line and exit 2
    for e in (AlignmentError("x"),):
        assert "\n" not in str(e)


def test_transcript_normalisation():
    assert spell_number(0) == ["zero"]
    assert spell_number(1204) == ["one", "thousand", "two", "hundred", "four"]
    assert spell_number(-15) == ["minus", "fifteen"]
    toks = dict(transcript_words("Is 3.5 (or 1,000) the 21st — twenty-one, 5%?"))
    assert toks == {
        "Is": ["is"], "3.5": ["three", "point", "five"], "(or": ["or"], "1,000)": ["one", "thousand"],
        "the": ["the"], "21st": ["twenty", "first"], "\u2014": [], "twenty-one,": ["twenty", "one"], "5%?": ["five", "percent"],
    }


@pytest.mark.parametrize(("token", "words"), [
    ("101", "one hundred one"),  # no British "and" inside a number
    ("1,234,567", "one million two hundred thirty four thousand five hundred sixty seven"),  # no commas, no hyphens
    ("999999999999999", "nine hundred ninety nine trillion nine hundred ninety nine billion nine hundred ninety nine "
                        "million nine hundred ninety nine thousand nine hundred ninety nine"),
    ("1000000000000000", "one zero zero zero zero zero zero zero zero zero zero zero zero zero zero zero"),  # read as digits
    ("112th", "one hundred twelfth"), ("20th", "twentieth"), ("1000000th", "one millionth"),
    ("-0.25", "minus zero point two five"), ("3x4", "three x four"),
])
def test_numbers_are_plain_dictionary_words(token, words):
    """The spelling feeds the aligner's dictionary, the ASR targets, the tokenizer corpus and the TTS
    text alike: lower-case words separated by single spaces, nothing else."""
    got = transcript_words(token)[0][1]
    assert " ".join(got) == words
    assert all(w.isalpha() and w.islower() for w in got)


def test_punctuation_tokens_and_inflections(aligner):
    text = "Write a function that subtracts 7 \u2014 quickly."
    sp = get_tts().synthesize(text)
    got = aligner.align(sp.audio, SAMPLE_RATE, text)  # "subtracts" is not in CMUdict: stem + suffix
    assert [w.text for w in got] == text.split()
    dash = got[text.split().index("\u2014")]
    assert dash.start == dash.end  # nothing said for it: a zero span after the previous word


def test_registry(aligner):
    assert isinstance(aligner, Aligner) and aligner.name == "pocketsphinx"
    assert get_aligner("PocketSphinx") is aligner
    with pytest.raises(InputError, match="unknown aligner 'nope'; known: pocketsphinx"):
        get_aligner("nope")


def test_cli_align(tmp_path, speech):
    wav = write_wav(tmp_path / "q.wav", resample(speech.audio, SAMPLE_RATE, 22050), 22050)
    out = tmp_path / "words.json"
    p = subprocess.run([*LWS, "data", "align", str(wav), "--text", TEXT, "--json", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "inches" in p.stdout and "start s" in p.stdout
    doc = json.loads(out.read_text())
    assert doc["aligner"] == "pocketsphinx" and [w["text"] for w in doc["words"]] == TEXT.split()
    got = [Word(**w) for w in doc["words"]]
    assert_close(got, speech.words)

    for args, needle in [
        ([str(wav), "--text", "the quick brown fox jumps over the lazy dog and runs far away"], "no alignment found"),
        ([str(tmp_path / "missing.wav"), "--text", "hello"], "audio file not found"),
        ([str(out), "--text", "hello"], "not a readable audio file"),
        ([str(wav), "--text", " "], "transcript is empty"),
    ]:
        p = subprocess.run([*LWS, "data", "align", *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, (p.stdout, p.stderr)
        lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], p.stderr

"""Forced alignment of recorded speech: word timestamps for a known transcript.

Data synthesis gets exact word times from the TTS (:mod:`lws_core.audio.tts`);
real recordings need them from a forced aligner. An :class:`Aligner` takes
mono audio at any rate and the transcript and returns one
:class:`~lws_core.schema.timeline.Word` per whitespace token of the transcript,
in order, with the token's original text and its span in seconds -- the same
shape as :attr:`Speech.words`, so recorded and synthesized speech are
interchangeable downstream.

The shipped implementation, :class:`PocketSphinxAligner`, runs CMU PocketSphinx
5 offline with the US-English acoustic model and CMU dictionary that ship inside
its wheel (nothing is downloaded). pocketsphinx is imported lazily, so
``import lws_core.audio`` never needs it.

Failures the user can cause -- empty or silent audio, a transcript with no
words, words outside the pronouncing dictionary, a transcript that does not
match the audio -- raise :class:`AlignmentError` with a one-line reason.
Limits: English only with the shipped model; a transcript that differs from the
audio by a word or two usually still aligns (forced alignment cannot hear
substitutions), but missing or extra stretches of speech are refused.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from num2words import num2words

from lws_core.audio.io import SAMPLE_RATE, load_audio, pcm16_bytes, resample
from lws_core.errors import InputError
from lws_core.schema.timeline import Word

__all__ = [
    "ALIGNERS",
    "AlignmentError",
    "Aligner",
    "PocketSphinxAligner",
    "align_file",
    "get_aligner",
    "spell_number",
    "spell_ordinal",
    "transcript_words",
]


class AlignmentError(InputError):
    """The audio and transcript could not be aligned; the message says why in one line."""


@runtime_checkable
class Aligner(Protocol):
    """Word timestamps for a known transcript of a recording."""

    name: str

    def align(self, samples: np.ndarray, sample_rate: int, transcript: str) -> list[Word]:
        """One :class:`Word` per whitespace token of ``transcript``, in order, times in seconds
        from the start of ``samples`` (float32 mono at ``sample_rate``)."""
        ...


# ---------------------------------------------------------------- transcript normalisation

# Stand-alone symbols a speaker says as words (espeak says them the same way).
_SYMBOLS = {"+": "plus", "-": "minus", "\u2212": "minus", "*": "times", "\u00d7": "times", "=": "equals",
            "%": "percent", "&": "and", "/": "slash", "\u00f7": "divided by", "@": "at", "#": "number"}
_NUMBER = re.compile(r"^([-\u2212]?)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th|%)?$")


_DIGIT_READING_FROM = 10**15  # beyond quadrillions a number is read digit by digit, like a code


@functools.lru_cache(maxsize=4096)  # corpora repeat the same numbers; num2words is ~30 us a call
def _dictionary_words(n: int, to: str) -> tuple[str, ...]:
    """num2words' English ("one hundred and twenty-first") as the plain dictionary words the
    aligner, the ASR targets and the tokenizer corpus share ("one hundred twenty first"):
    hyphens and commas become spaces and the British "and" inside a number is dropped."""
    spelled = num2words(n, lang="en", to=to)
    return tuple(w for w in spelled.replace("-", " ").replace(",", " ").split() if w != "and")


def spell_number(n: int) -> list[str]:
    """Cardinal ``n`` as dictionary words: ``1204 -> ['one', 'thousand', 'two', 'hundred', 'four']``."""
    if n < 0:
        return ["minus", *spell_number(-n)]
    if n >= _DIGIT_READING_FROM:
        return [w for d in str(n) for w in spell_number(int(d))]
    return list(_dictionary_words(n, "cardinal"))


def spell_ordinal(n: int) -> list[str]:
    """Ordinal ``n`` (n >= 0) as dictionary words: ``21 -> ['twenty', 'first']``."""
    if n >= _DIGIT_READING_FROM:
        *head, last = str(n)  # read digit by digit, the last one as an ordinal
        return [*(w for d in head for w in spell_number(int(d))), *spell_ordinal(int(last))]
    return list(_dictionary_words(n, "ordinal"))


def _token_words(token: str) -> list[str]:
    """Dictionary words a speaker says for one whitespace token (empty for pure punctuation)."""
    t = unicodedata.normalize("NFKC", token).lower().replace("\u2019", "'").replace("\u2018", "'")
    if t in _SYMBOLS:
        return _SYMBOLS[t].split()
    t = t.strip(".,;:!?\"'()[]{}<>\u201c\u201d\u2026")
    if t in _SYMBOLS:
        return _SYMBOLS[t].split()
    m = _NUMBER.match(t)
    if m:
        sign, whole, frac, suffix = m.groups()
        n = int(whole.replace(",", ""))
        words = spell_ordinal(n) if suffix in ("st", "nd", "rd", "th") else spell_number(n)
        if frac:
            words += ["point", *(w for d in frac for w in spell_number(int(d)))]
        if suffix == "%":
            words.append("percent")
        return (["minus"] if sign else []) + words
    out: list[str] = []
    # split on anything that is not a letter, digit or apostrophe ("twenty-one", "and/or", "3x")
    for part in re.split(r"[^\w']+|_", t):
        part = part.strip("'")
        if not part:
            continue
        for piece in re.findall(r"\d+|[^\d]+", part):
            out += spell_number(int(piece)) if piece.isdigit() else [piece]
    return out


def transcript_words(transcript: str) -> list[tuple[str, list[str]]]:
    """Whitespace tokens of ``transcript`` with the lowercase dictionary words each is spoken as."""
    return [(tok, _token_words(tok)) for tok in (transcript or "").split()]


_LETTERS = " abcdefghijklmnopqrstuvwxyz'"


def spoken_form(words: list[str]) -> str:
    """Words as they are pronounced, in lower-case letters: "42" -> "forty two", "x*2" -> "x times two".

    Digits are spelled because the recogniser hears "forty two", not "42"; the
    same spelling rules as the forced aligner's.
    """
    out: list[str] = []
    for _, spelled in transcript_words(" ".join(words)):
        out += spelled
    text = " ".join(out).lower()
    return " ".join("".join(c for c in w if c in _LETTERS) for w in text.split() if any(c in _LETTERS[1:] for c in w))


# ---------------------------------------------------------------- pocketsphinx

_FRAME_S = 0.01  # pocketsphinx's default frame rate is 100 frames/s
_CMN_INIT = "40,3,-1,0,0,0,0,0,0,0,0,0,0"  # the en-us model's -cmninit, padded to 13 cepstra
_ALT = re.compile(r"\(\d+\)$")  # alternative pronunciations come back as "word(2)"


class PocketSphinxAligner:
    """Forced alignment with CMU PocketSphinx 5 and the en-us model inside its wheel (offline).

    ``pronunciations`` adds dictionary entries (word -> space-separated ARPABET
    phones, e.g. ``{"lws": "EH L D AH B AH L Y UW EH S"}``); the shipped CMU
    dictionary has ~134k English words and no letter-to-sound rules, so other
    words raise :class:`AlignmentError` naming them. ``model_dir`` and
    ``dictionary`` point at another PocketSphinx acoustic model and dictionary.

    PocketSphinx's grammar search sometimes prunes the right path when its
    silence model fits a stretch of speech better than the words do (it then
    reports no hypothesis), and whether that happens depends on how the audio
    is fed. So the aligner tries, in order: the word sequence with optional
    silences fed in one block, the same fed in 0.2 s blocks, and the bare word
    sequence without silences, whose pauses are then trimmed off the word
    edges by energy. The first that yields exactly the transcript's words wins.
    Each attempt starts from the same cepstral mean, so a result does not depend
    on what was aligned before. One decoder per mode and instance; a lock
    serialises threads.
    """

    name = "pocketsphinx"

    def __init__(
        self,
        pronunciations: dict[str, str] | None = None,
        model_dir: str | Path | None = None,
        dictionary: str | Path | None = None,
        max_unaligned_speech_s: float = 0.6,
        max_s_per_phone: float = 0.3,
    ) -> None:
        self.pronunciations = {k.lower(): v for k, v in (pronunciations or {}).items()}
        self.model_dir = model_dir
        self.dictionary = dictionary
        self.max_unaligned_speech_s = max_unaligned_speech_s
        self.max_s_per_phone = max_s_per_phone
        self._decoders: dict[bool, object] = {}
        self._lock = threading.Lock()

    def _load(self, fillers: bool = True):  # noqa: ANN202 - pocketsphinx.Decoder
        if fillers not in self._decoders:
            try:
                import pocketsphinx
            except ImportError as e:  # pragma: no cover - a declared dependency
                raise AlignmentError(f"the pocketsphinx aligner needs the pocketsphinx package ({e})") from None
            kw: dict[str, object] = {"lm": None, "samprate": SAMPLE_RATE, "loglevel": "FATAL", "fsgusefiller": fillers}
            if self.model_dir is not None:
                kw["hmm"] = str(self.model_dir)
            if self.dictionary is not None:
                kw["dict"] = str(self.dictionary)
            try:
                dec = pocketsphinx.Decoder(**kw)
                items = list(self.pronunciations.items())
                for i, (word, phones) in enumerate(items):
                    dec.add_word(word, phones.upper(), i == len(items) - 1)  # rebuild the search once
            except (RuntimeError, ValueError) as e:
                raise AlignmentError(f"pocketsphinx could not load its model/dictionary: {e}") from None
            self._decoders[fillers] = dec
        return self._decoders[fillers]

    @staticmethod
    def _decode(dec, spoken: list[str], pcm: bytes, block: int | None, fillers: bool) -> list[tuple[str, float, float]] | None:  # noqa: ANN001
        """Words (dictionary form, seconds) of one alignment attempt, or None when it found no path."""
        try:
            if fillers:
                dec.set_align_text(" ".join(spoken))
            else:  # a linear grammar: exactly these words, no optional silences or noises
                n = len(spoken)
                fsg = dec.create_fsg("lws_align", 0, n, [(i, i + 1, 1.0, w) for i, w in enumerate(spoken)])
                dec.add_fsg("lws_align", fsg)
                dec.activate_search("lws_align")
            dec.set_cmn(_CMN_INIT)  # the cepstral mean carries over between utterances: start each from the same one
            dec.start_utt()
            if block is None:
                dec.process_raw(pcm, full_utt=True)
            else:
                for i in range(0, len(pcm), block):
                    dec.process_raw(pcm[i : i + block], full_utt=False)
            dec.end_utt()
        except RuntimeError as e:
            raise AlignmentError(f"pocketsphinx failed: {e}") from None
        segs = dec.seg()
        if segs is None:
            return None
        words = [(_ALT.sub("", s.word), s.start_frame * _FRAME_S, (s.end_frame + 1) * _FRAME_S)
                 for s in segs if not _is_filler(s.word)]
        return words if [w for w, _, _ in words] == spoken else None

    def align(self, samples: np.ndarray, sample_rate: int, transcript: str) -> list[Word]:
        tokens = transcript_words(transcript)
        spoken = [w for _, ws in tokens for w in ws]
        if not spoken:
            raise AlignmentError("the transcript has no words to align")
        audio = np.asarray(samples, dtype=np.float32)
        if audio.ndim != 1:
            raise AlignmentError(f"expected mono audio (1-D samples), got shape {audio.shape}")
        if audio.size == 0:
            raise AlignmentError("the audio is empty")
        if not np.all(np.isfinite(audio)):
            raise AlignmentError("the audio contains NaN or infinite samples")
        audio = resample(audio, int(sample_rate), SAMPLE_RATE)
        duration = audio.size / SAMPLE_RATE
        pcm = pcm16_bytes(audio)
        with self._lock:
            dec = self._load()
            missing = sorted({w for w in spoken if dec.lookup_word(w) is None and not _add_inflection(self, w)})
            if missing:
                shown = ", ".join(repr(w) for w in missing[:5]) + (" ..." if len(missing) > 5 else "")
                raise AlignmentError(f"not in the pronouncing dictionary: {shown} (spell it out or pass pronunciations=)")
            loud = _loud_frames(audio)
            if not loud.any():
                raise AlignmentError(f"no speech found in the {duration:.2f} s of audio")
            speech_s = float(loud.sum()) * _FRAME_S
            reason = (f"no alignment found: the transcript ({len(spoken)} words) does not match "
                      f"the {duration:.2f} s of audio (wrong text, too much text, or no speech)")
            n_phones = {w: len((dec.lookup_word(w) or "x").split()) for w in spoken}
            for fillers, block in ((True, None), (True, 2 * SAMPLE_RATE // 5), (False, None)):
                words = self._decode(self._load(fillers), spoken, pcm, block, fillers)
                if words is None:
                    continue
                if fillers:  # speech the search called silence means words are missing from the text
                    gaps = _unaligned_speech(loud, words)
                    if gaps > max(self.max_unaligned_speech_s, 0.25 * speech_s):
                        reason = f"{gaps:.2f} s of speech lies outside the aligned words: the transcript seems to miss words"
                        continue
                else:  # no silences: every frame is in some word, so missing words show as overlong ones
                    words = _trim_pauses(words, loud)
                    slow = [w for w, a, b in words if b - a > max(1.0, self.max_s_per_phone * n_phones[w])]
                    if slow:
                        reason = f"{slow[0]!r} would last too long: the transcript seems to miss words"
                        continue
                break
            else:
                raise AlignmentError(reason)
        return _to_tokens(tokens, words, duration)


_VOICELESS = {"P", "T", "K", "F", "TH"}
_SIBILANT = {"S", "Z", "SH", "ZH", "CH", "JH"}


def _inflect(base: str, suffix: str) -> str | None:
    """Phones of ``base`` + an English suffix (-s, -ed, -ing), by the regular rules."""
    last = base.split()[-1]
    if suffix == "s":
        return base + (" IH Z" if last in _SIBILANT else " S" if last in _VOICELESS else " Z")
    if suffix == "ed":
        return base + (" IH D" if last in ("T", "D") else " T" if last in _VOICELESS | _SIBILANT - {"Z", "ZH", "JH"} else " D")
    return base + " IH NG"


def _add_inflection(aligner: PocketSphinxAligner, word: str) -> bool:
    """Give an out-of-dictionary regular inflection ("subtracts", "graphed") its stem's phones plus the
    suffix; True when the word was added. The dictionary has no letter-to-sound rules beyond this."""
    dec = aligner._load(True)
    stems = []
    for suffix, cut, add in (("'s", 2, "s"), ("es", 2, "s"), ("s", 1, "s"), ("ed", 2, "ed"), ("ed", 1, "ed"),
                             ("ing", 3, "ing"), ("ing", 3, "ing+e")):
        if word.endswith(suffix) and len(word) - cut >= 2:
            stem = word[:-cut] + ("e" if add == "ing+e" else "")
            stems.append((stem, add.split("+")[0]))
    for stem, add in stems:
        base = dec.lookup_word(stem)
        if base:
            phones = _inflect(base, add)
            try:
                for d in aligner._decoders.values():
                    d.add_word(word, phones, True)
            except RuntimeError:
                return False
            aligner.pronunciations[word] = phones  # decoders loaded later get it too
            return True
    return False


def _loud_frames(audio: np.ndarray) -> np.ndarray:
    """Per 10 ms frame: louder than the floor (2x the quietest decile, at least 3% of the peak)?

    Stationary noise sets the floor, so pauses in a noisy room count as quiet."""
    frame = int(_FRAME_S * SAMPLE_RATE)
    n = audio.size // frame
    if n == 0:
        return np.zeros(0, bool)
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    floor = max(1e-4, 0.03 * float(rms.max()), 2.0 * float(np.percentile(rms, 10)))
    return rms > floor


def _trim_pauses(words: list[tuple[str, float, float]], loud: np.ndarray, min_pause_s: float = 0.08) -> list[tuple[str, float, float]]:
    """Move word edges off quiet stretches (>= ``min_pause_s``) that a grammar without silences put inside words."""
    n = loud.size
    k = int(round(min_pause_s / _FRAME_S))
    out = []
    for w, a, b in words:
        f0, f1 = int(round(a / _FRAME_S)), min(int(round(b / _FRAME_S)), n)
        idx = np.flatnonzero(loud[f0:f1])
        if idx.size:
            if idx[0] >= k:
                a = (f0 + idx[0]) * _FRAME_S
            if (f1 - f0) - 1 - idx[-1] >= k:
                b = (f0 + idx[-1] + 1) * _FRAME_S
        out.append((w, a, b))
    return out


def _is_filler(word: str) -> bool:
    return word.startswith("<") or word.startswith("[") or word.startswith("++")


def _unaligned_speech(loud: np.ndarray, words: list[tuple[str, float, float]]) -> float:
    """Seconds of loud frames that fall in no aligned word."""
    inside = np.zeros(loud.size, bool)
    for _, a, b in words:
        inside[int(round(a / _FRAME_S)) : int(round(b / _FRAME_S))] = True
    return float(np.sum(loud & ~inside)) * _FRAME_S


def _to_tokens(tokens: list[tuple[str, list[str]]], words: list[tuple[str, float, float]], duration: float) -> list[Word]:
    """Fold dictionary-word spans back onto the transcript's tokens; silent tokens get a zero span."""
    out: list[Word] = []
    k, prev_end = 0, 0.0
    for tok, ws in tokens:
        if ws:
            start, end = words[k][1], words[k + len(ws) - 1][2]
            k += len(ws)
        else:  # punctuation only: nothing is said; sit at the previous word's end (as the TTS does)
            start = end = prev_end
        end = min(end, duration)
        start = min(start, end)
        out.append(Word(text=tok, start=round(start, 4), end=round(end, 4)))
        prev_end = end
    return out


# ---------------------------------------------------------------- registry

ALIGNERS: dict[str, Callable[[], Aligner]] = {"pocketsphinx": PocketSphinxAligner}
_CACHE: dict[str, Aligner] = {}
_CACHE_LOCK = threading.Lock()


def get_aligner(name: str = "pocketsphinx") -> Aligner:
    """The process's aligner called ``name`` (built on first use); unknown names raise InputError."""
    key = (name or "").strip().lower()
    if key not in ALIGNERS:
        raise InputError(f"unknown aligner {name!r}; known: {', '.join(sorted(ALIGNERS))}")
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = ALIGNERS[key]()
        return _CACHE[key]


def align_file(path: str | Path, transcript: str, aligner: str = "pocketsphinx") -> tuple[list[Word], float]:
    """Align an audio file (any format/rate :func:`load_audio` reads) against ``transcript``.

    Returns the words and the audio duration in seconds.
    """
    if not (transcript or "").strip():
        raise AlignmentError("the transcript is empty")
    al = get_aligner(aligner)
    audio = load_audio(path)
    return al.align(audio, SAMPLE_RATE, transcript), audio.size / SAMPLE_RATE

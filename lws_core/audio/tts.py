"""Text-to-speech with exact word timings: espeak-ng through ctypes (no system package).

Data synthesis needs user speech *and* the time each word ends (the causality
check keys on it), and the streaming engine needs to say the model's words.
espeak-ng's synchronous mode hands us the audio plus WORD events (each word's
text and audio position) and PHONEME events (each phoneme's audio position,
pauses included), so a word starts at its WORD event and ends where the engine
starts the next word or a pause: timings are the engine's own, not an
aligner's guess or an energy estimate. It runs hundreds of times faster than real time.

espeak-ng keeps global state, so there is one engine per process
(:func:`get_tts`); a lock serialises threads inside the process. Processes
each load their own copy of the library and are independent.

Reproducibility: two things make espeak-ng's samples vary.
1. Its noise generator (breath in the ``f*`` variants, Klatt aspiration and
   frication) is seeded by ``espeak_Initialize`` with ``time(NULL)``, so the
   same call sequence gave different audio in runs started in different
   seconds (measured: about a third of the sessions of a 30-session synthesis
   differed between two runs, whatever the worker count). We reseed it right
   after initialising (``espeak_ng_SetRandSeed``, espeak-ng >= 1.52) and on
   :meth:`EspeakTTS.reseed`, so output no longer depends on the clock.
2. Other synthesis state is process-global and carried between calls (the pitch
   flutter phase, the AGC and cycle counters in ``wavegen.c``) and cannot be
   reset through the API. Output is therefore a pure function of the call
   sequence from a given library state; data synthesis runs each fixed chunk of
   sessions in a process forked from one warmed-up state and reseeds per session.
"""

from __future__ import annotations

import ctypes
import functools
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from lws_core.audio.accents import MAX_VOICE_PATH, accent_file, accent_names, is_accent
from lws_core.audio.io import SAMPLE_RATE, resample
from lws_core.errors import InputError
from lws_core.schema.timeline import Word

# espeak-ng constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_INITIALIZE_PHONEME_EVENTS = 0x0001
_RATE, _VOLUME, _PITCH = 1, 2, 3

# English voices shipped with espeakng-loader, and variants (voice "timbres").
ENGLISH_VOICES = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3", "klatt4")
# Held out for the test split: a language variant and two timbres never heard in training.
HELD_OUT_LANGS = ("en-gb-x-gbcwmd",)
HELD_OUT_VARIANTS = ("f4", "klatt3")

# Characters English espeak reads sensibly; anything else (other scripts, emoji,
# control characters) is refused instead of being spelled out as code points.
_SPEAKABLE = re.compile(r"^[A-Za-z0-9\s.,;:!?'\"()\[\]{}<>+\-*/=%&$#@^_|~`\u2018\u2019\u201c\u201d\u2013\u2014\u00d7\u00f7\u00b0]*$")


class UnspeakableError(InputError):
    """The text contains nothing the TTS can say, or symbols it cannot say."""


@dataclass(frozen=True)
class VoiceSpec:
    """A voice: espeak name (``lang`` or ``lang+variant``), speaking rate, pitch (0-100), volume (0-200)."""

    name: str = "en-us"
    rate_wpm: int = 175
    pitch: int = 50
    volume: int = 100

    def label(self) -> str:
        return f"{self.name}@{self.rate_wpm}wpm/p{self.pitch}"


def label_language(label: str) -> str:
    """The espeak language (the accent) of a :meth:`VoiceSpec.label`: ``"en-gb-x-gbcwmd+f4@177wpm/p32"`` ->
    ``"en-gb-x-gbcwmd"``."""
    return label.split("@", 1)[0].split("+", 1)[0]


@dataclass
class Speech:
    """Synthesized audio (float32, 16 kHz) and one :class:`Word` per whitespace token of the text."""

    audio: np.ndarray
    words: list[Word] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@runtime_checkable
class TTS(Protocol):
    """What data synthesis and the engine need from a speech synthesizer."""

    def synthesize(self, text: str, voice: VoiceSpec | None = None) -> Speech: ...


@functools.cache  # read once: every synthesized session asks for the voice list
def more_variants() -> tuple[str, ...]:
    """The other voice variants the packaged espeak-ng data ships (its ``voices/!v`` folder: ~100 timbres, from
    ``Alex`` to ``zac``), beyond :data:`VARIANTS`: more speakers for a training corpus to hear. The held-out
    variants stay out, and so do names with spaces (espeak cannot take them in ``lang+variant``)."""
    import espeakng_loader

    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    names = sorted(f.name for f in folder.iterdir() if f.is_file()) if folder.is_dir() else []
    return tuple(n for n in names if " " not in n and n not in VARIANTS and n not in HELD_OUT_VARIANTS)


def english_voices(held_out: bool | None = None, timbres: str = "core", accents: int = 0) -> list[str]:
    """Voice names ``lang+variant``; ``held_out=True`` gives the test-only voices, False the training ones.

    ``timbres="all"`` adds :func:`more_variants` to the training voices (``data.voice_timbres``);
    ``accents`` adds that many synthetic accents (:mod:`lws_core.audio.accents`, ``data.voice_accents``) to
    the training languages. The held-out voices are the same either way, so a test split does not change."""
    out = []
    extra = more_variants() if timbres == "all" and held_out is False else ()
    synthetic = tuple(accent_names(accents)) if held_out is False else ()
    for lang in (*ENGLISH_VOICES, *synthetic):
        for var in (*VARIANTS, *extra):
            test = lang in HELD_OUT_LANGS or var in HELD_OUT_VARIANTS
            if held_out is None or held_out == test:
                out.append(f"{lang}+{var}")
    return out


class _Event(ctypes.Structure):
    class _Id(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _Id),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakTTS:
    """espeak-ng via the ``espeakng-loader`` wheel; use :func:`get_tts` for the per-process instance."""

    def __init__(self, fresh: bool = False, seed: int = 0) -> None:
        """``fresh=True`` loads a private copy of the library: its own global state, independent of
        any other instance in the process (reproducible data synthesis starts from one).
        ``seed`` replaces the wall-clock seed espeak-ng gives its noise generator."""
        import espeakng_loader

        lib_path = espeakng_loader.get_library_path()
        if fresh:
            import os
            import shutil
            import tempfile

            tmp = tempfile.mkdtemp(prefix="lws-espeak-")
            copy = os.path.join(tmp, "libespeak-ng-private.so")
            shutil.copy(lib_path, copy)
            self._lib = ctypes.CDLL(copy)  # a different file: the dynamic loader maps a new instance
            shutil.rmtree(tmp, ignore_errors=True)  # the mapping stays valid after unlink
        else:
            self._lib = ctypes.CDLL(lib_path)
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetVoiceByFile.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        self._lock = threading.Lock()
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), _INITIALIZE_PHONEME_EVENTS
        )
        if rate <= 0:
            raise InputError(f"espeak-ng failed to initialise (data at {espeakng_loader.get_data_path()})")
        self.native_sr = rate
        try:
            self._set_seed = self._lib.espeak_ng_SetRandSeed
        except AttributeError:  # espeak-ng < 1.52: no seed API; output then varies with the start time
            self._set_seed = None
        else:
            self._set_seed.argtypes = [ctypes.c_long]
        self.reseed(seed)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int]] = []  # (text_position 1-based, length, sample offset)
        self._phonemes: list[tuple[int, bool]] = []  # (sample offset, is a pause)
        self._n = 0
        self._cb = _CALLBACK(self._on_audio)  # keep a reference: espeak calls back into it
        self._lib.espeak_SetSynthCallback(self._cb)
        self._voice: VoiceSpec | None = None

    def _on_audio(self, wav, n, events) -> int:  # noqa: ANN001 - ctypes pointers
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_WORD:
                # ``sample``: native-rate samples from the start of the synthesis (audio_position is the same in ms)
                self._events.append((e.text_position, e.length, e.sample))
            elif e.type == _EVENT_PHONEME:
                # espeak mnemonics; pause phonemes are "_", "_:", "_!" ... (silence between words or clauses)
                self._phonemes.append((e.sample, e.id.string.startswith(b"_")))
            i += 1
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            self._n += n
        return 0

    @property
    def seedable(self) -> bool:
        """Whether the library lets us seed its noise generator (espeak-ng >= 1.52)."""
        return self._set_seed is not None

    def reseed(self, seed: int) -> None:
        """Seed espeak-ng's noise generator (breathy voices, Klatt noise) so audio does not depend on the clock."""
        if self._set_seed is not None:
            with self._lock:
                self._set_seed(int(seed) & 0x7FFFFFFF)

    def _set_voice(self, voice: VoiceSpec) -> None:
        if voice == self._voice:
            return
        lang, _, variant = voice.name.partition("+")
        if len(voice.name.encode()) > MAX_VOICE_PATH:  # espeak-ng's name buffers: a long name aborts the process
            raise InputError(f"voice name {voice.name!r} is longer than espeak-ng takes ({MAX_VOICE_PATH} bytes)")
        if is_accent(lang):  # a synthetic accent: its voice file, loaded by path (lws_core.audio.accents)
            try:
                path = f"{accent_file(lang)}{'+' + variant if variant else ''}"
            except ValueError:
                ok = False
            else:
                if len(path.encode()) > MAX_VOICE_PATH:
                    raise InputError(f"voice {voice.name!r}: its file path {path!r} is longer than espeak-ng takes "
                                     f"({MAX_VOICE_PATH} bytes); use a shorter variant name")
                ok = self._lib.espeak_SetVoiceByFile(path.encode()) == 0
        else:
            ok = self._lib.espeak_SetVoiceByName(voice.name.encode()) == 0
        if not ok:
            raise InputError(f"unknown espeak voice {voice.name!r} (see lws_core.audio.tts.english_voices())")
        self._lib.espeak_SetParameter(_RATE, int(voice.rate_wpm), 0)
        self._lib.espeak_SetParameter(_PITCH, int(voice.pitch), 0)
        self._lib.espeak_SetParameter(_VOLUME, int(voice.volume), 0)
        self._voice = voice

    def synthesize(self, text: str, voice: VoiceSpec | None = None) -> Speech:
        """Speak ``text``; return 16 kHz audio and a timed Word per whitespace token (no overlaps)."""
        text = unicodedata.normalize("NFC", text or "").strip()
        if not text or not any(c.isalnum() for c in text):
            raise UnspeakableError(f"nothing to say in {text!r}")
        if not _SPEAKABLE.match(text):
            bad = sorted({c for c in text if not _SPEAKABLE.match(c)})
            raise UnspeakableError(f"text has symbols the TTS cannot say: {''.join(bad)!r}")
        voice = voice or VoiceSpec()
        raw = text.encode("utf-8")
        with self._lock:
            self._set_voice(voice)
            self._chunks, self._events, self._phonemes, self._n = [], [], [], 0
            buf = ctypes.create_string_buffer(raw)
            rc = self._lib.espeak_Synth(buf, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if rc != 0:
                raise UnspeakableError(f"espeak-ng failed (code {rc}) on {text[:40]!r}")
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            events, phonemes = list(self._events), list(self._phonemes)
        audio22 = pcm.astype(np.float32) / 32768.0
        if audio22.size == 0 or not events:
            raise UnspeakableError(f"espeak-ng produced no speech for {text[:40]!r}")
        audio = resample(audio22, self.native_sr, SAMPLE_RATE)
        words = _time_tokens(text, events, phonemes, len(audio), self.native_sr)
        return Speech(audio=audio, words=words)


def _char_to_byte(text: str) -> list[int]:
    out, b = [], 0
    for c in text:
        out.append(b)
        b += len(c.encode("utf-8"))
    out.append(b)
    return out


def _time_tokens(
    text: str, events: list[tuple[int, int, int]], phonemes: list[tuple[int, bool]], total: int, native_sr: int
) -> list[Word]:
    """Map espeak's word and phoneme events onto the whitespace tokens of ``text``: one [start, end] each.

    espeak reports where each of *its* words starts; its words may split a token
    ("3.5") or skip one ("-", "("; after a skipped dash it reports the next word at
    the dash's position, which we move back onto that word). A token starts at its first WORD event and
    ends at the first pause phoneme after its last sounding phoneme, or where
    the next token starts (so trailing pauses and punctuation silence are not
    part of the word). A token espeak does not say gets a zero-length span at
    the previous word's end (the next word's start if it is first).
    """
    scale = SAMPLE_RATE / native_sr
    # espeak text positions count characters from 1 (UTF-8 input: characters, verified for ASCII)
    ev = sorted((pos - 1, smp * scale) for pos, _, smp in events)
    pauses = sorted(t * scale for t, is_pause in phonemes if is_pause)
    sounds = sorted(t * scale for t, is_pause in phonemes if not is_pause)
    tokens = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    firsts = [min((t for p, t in ev if a <= p < b), default=None) for a, b, _ in tokens]
    for i in range(len(tokens) - 1):
        # espeak skips a spoken-as-pause dash ("5 - 3") and reports the next word at the dash's position
        if firsts[i] is not None and firsts[i + 1] is None and not any(c.isalnum() for c in tokens[i][2]):
            firsts[i], firsts[i + 1] = None, firsts[i]
    starts: list[float | None] = []
    prev = 0.0
    for first in firsts:
        if first is not None:
            prev = max(prev, first)  # keep starts ordered
            starts.append(prev)
        else:
            starts.append(None)
    said = [i for i, st in enumerate(starts) if st is not None]
    spans: dict[int, tuple[float, float]] = {}
    for k, i in enumerate(said):
        st = float(starts[i])  # type: ignore[arg-type]
        nxt = float(starts[said[k + 1]]) if k + 1 < len(said) else float(total)
        mine = [t for t in sounds if st <= t < nxt]
        if not mine:
            end = st
        else:
            end = min((t for t in pauses if mine[-1] < t < nxt), default=nxt)
        spans[i] = (st, min(max(end, st), nxt, float(total)))
    words: list[Word] = []
    for i, (_, _, tok) in enumerate(tokens):
        if i in spans:
            st, end = spans[i]
        else:
            before = [j for j in said if j < i]
            after = [j for j in said if j > i]
            st = end = spans[before[-1]][1] if before else spans[after[0]][0] if after else 0.0
        words.append(Word(text=tok, start=round(st / SAMPLE_RATE, 4), end=round(end / SAMPLE_RATE, 4)))
    return words


_INSTANCE: EspeakTTS | None = None
_INSTANCE_LOCK = threading.Lock()


def get_tts() -> EspeakTTS:
    """The process's espeak engine (created on first use; espeak-ng allows one per process)."""
    global _INSTANCE
    with _INSTANCE_LOCK:
        if _INSTANCE is None:
            _INSTANCE = EspeakTTS()
        return _INSTANCE

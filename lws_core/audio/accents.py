"""Synthetic English accents for the recogniser's corpus: new espeak-ng voices built from the training accents' parts.

Why: the speech-encoder stand-in hears seven espeak English accents in training and is tested on an eighth
(``en-gb-x-gbcwmd``, :data:`lws_core.audio.tts.HELD_OUT_LANGS`); that accent alone held most of its held-out-voice
errors (WER 0.167 on half the words against 0.04-0.09 for the training accents in held-out timbres, stop 62). A
real ASR corpus has many accents; seven are few to generalise from. So, as data augmentation, each synthetic accent
is a new espeak voice file that recombines what the training accents are made of (phoneme table, dictionary
rules, stress lengths, phoneme replacements) and adds a few generic vowel shifts (a vowel said as a neighbour
in the vowel chart, the commonest way English accents differ). Nothing here is read from the held-out accent:
its phoneme table (``en-wm``), its rules (h-dropping) and its intonation never appear (tested).

An accent is named ``lws-accent-<k>`` and is a pure function of ``k``; :class:`~lws_core.audio.tts.EspeakTTS`
writes its file on first use (:func:`accent_file`) and loads it by path (``espeak_SetVoiceByFile``), so a voice
``lws-accent-3+m1`` works in any process without installing anything into espeak-ng's data folder.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import numpy as np

ACCENT_PREFIX = "lws-accent-"

# The training accents' parts (espeak-ng-data/lang/gmw/en*, the seven of ENGLISH_VOICES that are not held out).
_TABLES = ("en", "en-us", "en-sc", "en-n", "en-rp", "en-wi", "en-us-nyc")
_DICTRULES = ("", "3 6", "2 5 6 7", "8")
_STRESS_LENGTHS = ("", "140 120 190 170 0 0 255 300", "180 130 200 200 0 0 250 270", "160 150 180 180 220 220 290 290",
                   "175 175 175 175 220 220 250 290")
_REPLACEMENTS = (
    "03 I i", "03 I2 i", "00 o@ O@", "03 @ a#", "03 3 a#", "03 @ V", "01 aI aI2", "02 a a/", "02 u: U", "03 N n",
    "03 i I2", "00 D d", "00 T t[", "00 U@ o@",
)
# Replacements whose target phoneme only the Scottish table (en-sc) has: elsewhere espeak-ng says nothing for the
# vowel (measured: "I" came out silent), so they go with that table alone.
_TABLE_ONLY = {"01 aI aI2": "en-sc", "02 a a/": "en-sc"}
# Generic vowel shifts: each of espeak's English vowel mnemonics and its neighbours in the vowel chart
# (one step in height or backness, or a diphthong's onset moved one step).
_NEIGHBOURS = {
    "I": ("i:", "E"), "E": ("I", "a"), "a": ("E", "aa", "V"), "aa": ("a", "A:"), "0": ("O:", "V"),
    "V": ("U", "@", "0"), "U": ("V", "u:"), "3:": ("@", "V"), "i:": ("I",), "u:": ("U", "oU"),
    "O:": ("0", "oU"), "A:": ("aa", "0"), "eI": ("E", "aI"), "aI": ("eI", "OI"), "oU": ("O:", "aU"),
    "aU": ("a", "oU"),
}
_SEED = 20261207


def is_accent(language: str) -> bool:
    """Whether an espeak language name (the part of a voice name before ``+``) is a synthetic accent."""
    return language.startswith(ACCENT_PREFIX)


def accent_names(n: int) -> list[str]:
    """The first ``n`` synthetic accents' language names."""
    return [f"{ACCENT_PREFIX}{k}" for k in range(n)]


def accent_definition(k: int) -> str:
    """Accent ``k``'s espeak voice file: a training accent's phoneme table, dictionary rules and stress lengths
    drawn at random, each training accent's replacement kept with probability 1/2, and 2-4 vowel shifts."""
    if k < 0:
        raise ValueError(f"accent index {k} < 0")
    rng = np.random.default_rng([_SEED, k])
    table = str(rng.choice(_TABLES))
    lines = [f"name LWS synthetic accent {k}", "language en", f"phonemes {table}"]
    if rules := str(rng.choice(_DICTRULES)):
        lines.append(f"dictrules {rules}")
    if stress := str(rng.choice(_STRESS_LENGTHS)):
        lines.append(f"stressLength {stress}")
    lines += [f"replace {r}" for r in _REPLACEMENTS if rng.random() < 0.5 and _TABLE_ONLY.get(r, table) == table]
    vowels = sorted(_NEIGHBOURS)
    for v in rng.choice(vowels, size=int(rng.integers(2, 5)), replace=False):
        lines.append(f"replace 00 {v} {rng.choice(_NEIGHBOURS[str(v)])}")
    return "\n".join(lines) + "\n"


# espeak-ng copies a voice file's name (with its ``+variant``) into a 40-byte buffer: a longer one aborts the
# process (measured: 40 characters crash, 39 load). So the files live in a short folder, and longer names are refused.
MAX_VOICE_PATH = 39


@functools.cache
def _folder() -> Path:
    # One shared folder: the files are a pure function of their index, so every process (and every run) reuses
    # them and nothing accumulates; written atomically (see accent_file). /tmp, not TMPDIR, to keep paths short.
    base = Path("/tmp") if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK) else Path(tempfile.gettempdir())
    folder = base / f"lws-acc-{os.getuid() if hasattr(os, 'getuid') else 0}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def accent_file(language: str) -> Path:
    """The voice file of a synthetic accent (``lws-accent-<k>``), written on first use."""
    try:
        k = int(language.removeprefix(ACCENT_PREFIX))
    except ValueError:
        raise ValueError(f"{language!r} is not a synthetic accent (expected {ACCENT_PREFIX}<k>)") from None
    path = _folder() / f"a{k}"
    text = accent_definition(k)
    if not path.exists() or path.read_text() != text:
        part = path.with_name(f".a{k}.{os.getpid()}")
        part.write_text(text)
        part.replace(path)  # atomic: a process reading it never sees half a file
    return path

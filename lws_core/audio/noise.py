"""Noise and loudness for synthetic user speech: white/pink noise at a target SNR, gain in dB.

Clean TTS is too easy; real microphones add hiss and hum and people speak at
different levels. Everything takes an explicit ``numpy.random.Generator`` so a
seed reproduces a dataset bit for bit.
"""

from __future__ import annotations

import numpy as np


def rms(audio: np.ndarray) -> float:
    a = np.asarray(audio, dtype=np.float64)
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


def noise(n: int, rng: np.random.Generator, color: str = "white") -> np.ndarray:
    """Unit-RMS noise of ``n`` samples; ``pink`` is 1/f shaped (closer to room noise than white)."""
    if n <= 0:
        return np.zeros(0, np.float32)
    w = rng.standard_normal(n)
    if color == "pink":
        spec = np.fft.rfft(w)
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = 1.0
        w = np.fft.irfft(spec / np.sqrt(f), n)
    elif color != "white":
        raise ValueError(f"unknown noise color {color!r}")
    r = rms(w)
    return (w / r if r > 0 else w).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, color: str = "white", ref_rms: float | None = None) -> np.ndarray:
    """Return ``audio`` plus noise at ``snr_db`` relative to ``ref_rms`` (default: the RMS of the non-silent part)."""
    audio = np.asarray(audio, dtype=np.float32)
    if ref_rms is None:
        loud = audio[np.abs(audio) > 1e-4]
        ref_rms = rms(loud) if loud.size else 0.0
    if ref_rms <= 0:
        ref_rms = 0.05
    level = ref_rms / (10 ** (snr_db / 20))
    return np.clip(audio + level * noise(audio.size, rng, color), -1.0, 1.0).astype(np.float32)


def gain_db(audio: np.ndarray, db: float) -> np.ndarray:
    """Scale by ``db`` decibels and clip to [-1, 1]."""
    return np.clip(np.asarray(audio, dtype=np.float32) * np.float32(10 ** (db / 20)), -1.0, 1.0)

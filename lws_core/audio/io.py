"""Read, validate, resample and write audio: everything inside LWS is float32 mono 16 kHz.

Users hand us WAV/FLAC/OGG files of any rate, width and channel count; a bad
file must fail with one line naming it, not a NumPy traceback three stages
later. Long files stream in bounded memory through :func:`iter_audio_blocks`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lws_core.errors import InputError

SAMPLE_RATE = 16000


def _check_finite(audio: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(audio)):
        raise InputError(f"{where}: audio contains NaN or infinite samples")


def _to_mono_f32(data: np.ndarray) -> np.ndarray:
    if data.ndim == 2:
        data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(data, dtype=np.float32)


def resample(audio: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
    """Resample mono float audio with soxr (high quality, fast); a no-op when rates match."""
    audio = np.asarray(audio, dtype=np.float32)
    if from_sr <= 0 or to_sr <= 0:
        raise InputError(f"sample rates must be positive, got {from_sr} -> {to_sr}")
    if from_sr == to_sr or audio.size == 0:
        return audio
    import soxr

    return np.asarray(soxr.resample(audio, from_sr, to_sr), dtype=np.float32)


def _open(path: Path):  # noqa: ANN202 - soundfile.SoundFile
    import soundfile as sf

    if not path.is_file():
        raise InputError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: audio file is empty")
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise InputError(f"{path}: not a readable audio file ({str(e).splitlines()[0]})") from None


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Load any WAV (8/16/24/32-bit int, float), FLAC or OGG file as float32 mono at ``sr``.

    Integer PCM is scaled to [-1, 1) by soundfile; float files are clipped to
    [-1, 1]. Missing, empty, truncated or non-audio files and NaN/inf samples
    raise :class:`InputError` naming the file.
    """
    path = Path(path)
    with _open(path) as f:
        native_sr = f.samplerate
        try:
            data = f.read(dtype="float32", always_2d=True)
        except Exception as e:  # libsndfile raises several types on truncated data
            raise InputError(f"{path}: truncated or corrupt audio ({str(e).splitlines()[0]})") from None
    if data.shape[0] == 0:
        raise InputError(f"{path}: audio file has no samples")
    audio = _to_mono_f32(data)
    _check_finite(audio, str(path))
    audio = resample(audio, native_sr, sr)
    return np.clip(audio, -1.0, 1.0, out=audio)


def iter_audio_blocks(path: str | Path, block_samples: int, sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Yield ``block_samples``-long float32 mono blocks at ``sr`` (the last one may be shorter).

    Memory stays bounded by the block size whatever the file length: soundfile
    reads native blocks and a streaming soxr resampler carries its state across
    them, so block boundaries leave no clicks.
    """
    import soxr

    if block_samples <= 0:
        raise InputError(f"block_samples must be positive, got {block_samples}")
    path = Path(path)
    f = _open(path)
    with f:
        native_sr = f.samplerate
        rs = None if native_sr == sr else soxr.ResampleStream(native_sr, sr, 1, dtype="float32")
        native_block = max(1, int(block_samples * native_sr / sr))
        pending = np.zeros(0, dtype=np.float32)
        total = 0
        while True:
            try:
                data = f.read(native_block, dtype="float32", always_2d=True)
            except Exception as e:
                raise InputError(f"{path}: truncated or corrupt audio ({str(e).splitlines()[0]})") from None
            last = data.shape[0] < native_block
            chunk = _to_mono_f32(data)
            _check_finite(chunk, str(path))
            if rs is not None:
                chunk = rs.resample_chunk(chunk, last=last)
            pending = np.concatenate([pending, np.clip(chunk, -1.0, 1.0)])
            while pending.size >= block_samples:
                yield pending[:block_samples].copy()
                total += block_samples
                pending = pending[block_samples:]
            if last:
                break
        if pending.size:
            total += pending.size
            yield pending
        if total == 0:
            raise InputError(f"{path}: audio file has no samples")


def write_wav(path: str | Path, audio: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    """Write mono audio as 16-bit PCM WAV (clipped to [-1, 1])."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    sf.write(str(path), audio, sr, subtype="PCM_16")
    return path


def pcm16_bytes(audio: np.ndarray) -> bytes:
    """Float audio -> little-endian PCM16 bytes: how datasets store audio (2 bytes a sample, not lists of floats)."""
    a = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return np.round(a * 32767.0).astype("<i2").tobytes()


def from_pcm16_bytes(b: bytes) -> np.ndarray:
    """Little-endian PCM16 bytes -> float32 in [-1, 1]."""
    if len(b) % 2:
        raise InputError(f"PCM16 data has an odd number of bytes ({len(b)})")
    return np.frombuffer(b, dtype="<i2").astype(np.float32) / 32767.0

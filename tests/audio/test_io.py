"""Audio loading: every format/width/rate/channel count we promise, and one-line errors on bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from lws_core.audio import from_pcm16_bytes, iter_audio_blocks, load_audio, pcm16_bytes, resample, write_wav
from lws_core.errors import InputError


def _tone(sr: int, seconds: float = 0.5, f: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("fmt", "subtype", "sr", "channels"),
    [
        ("WAV", "PCM_U8", 8000, 1),
        ("WAV", "PCM_16", 16000, 1),
        ("WAV", "PCM_24", 44100, 2),
        ("WAV", "PCM_32", 22050, 1),
        ("WAV", "FLOAT", 48000, 2),
        ("FLAC", "PCM_16", 32000, 1),
        ("OGG", "VORBIS", 24000, 2),
    ],
)
def test_load_formats(tmp_path, fmt, subtype, sr, channels):
    x = _tone(sr)
    data = np.stack([x, x], axis=1) if channels == 2 else x
    p = tmp_path / f"a.{fmt.lower()}"
    sf.write(str(p), data, sr, format=fmt, subtype=subtype)
    y = load_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 8000) <= 2  # 0.5 s at 16 kHz whatever the source rate
    assert np.abs(y).max() <= 1.0
    tol = 0.08 if subtype in ("PCM_U8", "VORBIS") else 0.02
    assert abs(np.sqrt(np.mean(y**2)) - 0.5 / np.sqrt(2)) < tol  # level preserved by downmix + resample


def test_stereo_downmix_averages(tmp_path):
    x = _tone(16000)
    p = tmp_path / "s.wav"
    sf.write(str(p), np.stack([x, np.zeros_like(x)], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(p), x / 2, atol=1e-6)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(InputError, match="empty.wav: audio file is empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "text.wav").write_text("this is not audio at all")
    with pytest.raises(InputError, match="text.wav: not a readable audio file"):
        load_audio(tmp_path / "text.wav")
    good = tmp_path / "good.wav"
    sf.write(str(good), _tone(16000, 1.0), 16000, subtype="PCM_16")
    trunc = tmp_path / "trunc.wav"
    trunc.write_bytes(good.read_bytes()[:30])  # header cut short
    with pytest.raises(InputError, match="trunc.wav"):
        load_audio(trunc)
    bad = np.ones(100, np.float32)
    bad[10] = np.nan
    sf.write(str(tmp_path / "nan.wav"), bad, 16000, subtype="FLOAT")
    with pytest.raises(InputError, match="nan.wav: audio contains NaN"):
        load_audio(tmp_path / "nan.wav")
    for err in (InputError,):
        try:
            load_audio(tmp_path / "text.wav")
        except err as e:
            assert "\n" not in str(e)


def test_roundtrip_and_pcm(tmp_path):
    x = _tone(16000)
    p = write_wav(tmp_path / "o.wav", x)
    assert sf.info(str(p)).subtype == "PCM_16"
    np.testing.assert_allclose(load_audio(p), x, atol=1e-4)
    b = pcm16_bytes(x)
    assert len(b) == 2 * len(x)
    np.testing.assert_allclose(from_pcm16_bytes(b), x, atol=1e-4)
    with pytest.raises(InputError):
        from_pcm16_bytes(b"abc")


def test_resample_length():
    assert len(resample(np.zeros(22050, np.float32), 22050, 16000)) == 16000
    x = _tone(16000)
    assert resample(x, 16000, 16000) is not None


def test_iter_blocks_matches_whole_file(tmp_path):
    sr = 44100
    x = _tone(sr, 3.3, f=300)
    p = tmp_path / "long.wav"
    sf.write(str(p), x, sr, subtype="PCM_16")
    blocks = list(iter_audio_blocks(p, 4000))
    assert all(len(b) == 4000 for b in blocks[:-1]) and 0 < len(blocks[-1]) <= 4000
    joined = np.concatenate(blocks)
    whole = load_audio(p)
    assert abs(len(joined) - len(whole)) <= 2
    n = min(len(joined), len(whole)) - 200
    assert np.max(np.abs(joined[200:n] - whole[200:n])) < 1e-2  # streaming resampler == one-shot, no seams

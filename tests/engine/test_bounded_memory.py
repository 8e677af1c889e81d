"""simulate_file streams: a 3-minute file is read one unit at a time and never held whole in memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import soundfile as sf

from lws_core.engine.session import Phase


def _listen_only(engine):  # noqa: ANN001, ANN202
    """Every unit listens and writes nothing (cheap units: the test is about memory, not decisions)."""
    ids = engine.model.tokenizer.special

    def policy(ctx):  # noqa: ANN001, ANN202
        if len(ctx.allowed) == 1 and not ctx.text_allowed:
            return None
        if ctx.phase == Phase.STATE:
            return ids.listen
        return ids.say if ctx.phase == Phase.WRITE else ids.end

    return policy


def test_simulate_file_reads_in_blocks_and_stays_small(engine, speech, tmp_path, monkeypatch):
    minutes, sr = 3, 48000
    path = tmp_path / "long.wav"
    piece = np.repeat(speech, 3)  # 48 kHz by sample repetition: speech-like energy, no resampler needed here
    with sf.SoundFile(path, "w", samplerate=sr, channels=2, subtype="PCM_16") as f:  # written in blocks too
        for i in range(0, minutes * 60 * sr, piece.size):
            blk = piece[: minutes * 60 * sr - i]
            f.write(np.stack([blk, blk], axis=1))
    decoded_bytes = minutes * 60 * sr * 2 * 4  # what reading it whole as float32 would take
    reads: list[int] = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *a, **k):  # noqa: ANN001, ANN202 - records the request, then really reads
        reads.append(frames)
        return real_read(self, frames, *a, **k)

    def traced_peak(p, out):  # noqa: ANN001, ANN202
        tracemalloc.start()
        try:
            r = engine.simulate_file(p, out, progress=False, policy=_listen_only(engine))
            return r, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # a 2-second run first: first-use imports (matplotlib, soxr: ~20 MB of modules) are not per-file memory
    short = tmp_path / "short.wav"
    sf.write(short, np.stack([piece[: 2 * sr]] * 2, axis=1), sr, subtype="PCM_16")
    _, peak_short = traced_peak(short, tmp_path / "out-short")
    monkeypatch.setattr(sf.SoundFile, "read", spy)
    res, peak = traced_peak(path, tmp_path / "out")
    n_units = minutes * 60
    assert len(res.units) == n_units and res.input_samples == n_units * 16000
    assert all(0 < r <= sr for r in reads) and len(reads) >= n_units  # never "the whole file" (-1)
    msg = f"peak traced allocation {peak / 1e6:.1f} MB (2 s file: {peak_short / 1e6:.1f} MB), decoded {decoded_bytes / 1e6:.0f} MB"
    assert peak < decoded_bytes / 20, msg  # far below the file's decoded size
    assert peak < peak_short + 2e6, msg  # 90x the length, ~the same memory (unit records: ~1 kB a unit)
    assert len(sf.read(tmp_path / "out" / "output.wav")[0]) == n_units * 16000
    assert res.user_speech and res.user_speech[-1][1] > n_units - 60  # activity found through the whole file

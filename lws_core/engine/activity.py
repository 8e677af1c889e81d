"""Where the user was speaking in a recording: a causal energy gate, fed one unit at a time.

A simulated recording comes without a transcript, so the timeline cannot show the
user's words; it can show *when* the user spoke. The detector streams (it keeps
one partial frame, a noise-floor estimate and the closed segments), so a long
file keeps bounded memory, and it costs microseconds per unit, far below the
engine's own per-unit cost (silero-vad, installed, costs ~35 ms per second of
audio on this CPU, more than a listening unit).

The gate: 20 ms frames; a frame is voiced when its RMS is above both an absolute
floor (-50 dBFS) and ``ratio`` × a noise floor that follows the quietest frames
(drops at once, rises by at most 3 dB/s), so stationary room noise does not count as
speech. Gaps shorter than ``hangover_s`` between voiced frames are bridged (the
pauses between words), and segments shorter than ``min_speech_s`` are dropped
(clicks).
"""

from __future__ import annotations

import numpy as np

FRAME_S = 0.02
ABS_FLOOR = 10 ** (-50 / 20)  # -50 dBFS RMS
RISE_PER_FRAME = 10 ** (3.0 / 20 * FRAME_S)  # the noise floor rises at most 3 dB per second


class SpeechActivity:
    """Streaming speech-activity segments ``[(start_s, end_s), ...]`` of the audio fed so far."""

    def __init__(
        self,
        sample_rate: int = 16000,
        ratio: float = 4.0,
        hangover_s: float = 0.3,
        min_speech_s: float = 0.1,
    ) -> None:
        self.sr = sample_rate
        self.frame = int(round(FRAME_S * sample_rate))
        self.ratio = ratio
        self.hangover = int(round(hangover_s / FRAME_S))
        self.min_frames = max(1, int(round(min_speech_s / FRAME_S)))
        self._pending = np.zeros(0, dtype=np.float32)
        self._floor = ABS_FLOOR
        self._n_frames = 0  # frames classified so far
        self._open: int | None = None  # first frame of the segment being extended
        self._last_voiced = -1
        self._closed: list[tuple[int, int]] = []  # [first frame, last frame + 1)

    def feed(self, block: np.ndarray) -> None:
        """Classify the whole frames of ``block`` (the remainder waits for the next block)."""
        x = np.concatenate([self._pending, np.asarray(block, dtype=np.float32).reshape(-1)])
        n = x.size // self.frame
        self._pending = x[n * self.frame :].copy()
        if n == 0:
            return
        rms = np.sqrt(np.mean(x[: n * self.frame].reshape(n, self.frame).astype(np.float64) ** 2, axis=1))
        for r in rms:  # the floor is causal and per frame: a short Python loop (50 frames a second)
            self._floor = max(ABS_FLOOR, min(float(r), self._floor * RISE_PER_FRAME))
            i = self._n_frames
            if r > max(ABS_FLOOR, self.ratio * self._floor):
                if self._open is None:
                    self._open = i
                elif i - self._last_voiced > self.hangover:
                    self._close()
                    self._open = i
                self._last_voiced = i
            self._n_frames += 1

    def _close(self) -> None:
        if self._open is not None and self._last_voiced + 1 - self._open >= self.min_frames:
            self._closed.append((self._open, self._last_voiced + 1))
        self._open = None

    @property
    def fed_s(self) -> float:
        """Seconds of audio classified so far (whole frames)."""
        return self._n_frames * FRAME_S

    def voiced_since(self, t: float) -> float:
        """Seconds of speech (segments as :meth:`segments` gives them) after time ``t``."""
        return sum(max(0.0, b - max(a, t)) for a, b in self.segments() if b > t)

    def segments(self) -> list[tuple[float, float]]:
        """Segments so far, in seconds; one still open ends at its last voiced frame."""
        spans = list(self._closed)
        if self._open is not None and self._last_voiced + 1 - self._open >= self.min_frames:
            spans.append((self._open, self._last_voiced + 1))
        return [(a * FRAME_S, b * FRAME_S) for a, b in spans]

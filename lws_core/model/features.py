"""Whisper-style log-mel features computed in torch, one unit at a time.

Computed per unit (not per 30 s window) so the streaming engine and training see
exactly the same features; normalisation is Whisper's (log10, 8-decade floor,
(x + 4) / 4) applied per unit.
"""

from __future__ import annotations

import torch
from torch import nn

N_FFT = 400
HOP = 160


def _mel_filters(sr: int, n_mels: int) -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=sr / 2,
        sampling_rate=sr,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.tensor(fb, dtype=torch.float32).T  # [n_mels, freq]


class LogMel(nn.Module):
    """audio [N, samples] -> features [N, n_mels, samples // HOP]."""

    def __init__(self, n_mels: int = 80, sample_rate: int = 16000) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("filters", _mel_filters(sample_rate, n_mels), persistent=False)

    @staticmethod
    def frames_for(samples: int) -> int:
        return samples // HOP

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        # always in float32: a model cast to bf16 casts these buffers too, and stft has no bf16 kernel
        audio = audio.float()
        stft = torch.stft(audio, N_FFT, HOP, window=self.window.float(), return_complex=True)
        spec = torch.view_as_real(stft[..., :-1])
        power = spec.pow(2).sum(-1)  # |z|^2 without the square root of abs() (a third of a batched unit's features)
        mel = self.filters.float() @ power
        log = torch.clamp(mel, min=1e-10).log10()
        peak = log.amax(dim=(-2, -1), keepdim=True)
        log = torch.maximum(log, peak - 8.0)
        return (log + 4.0) / 4.0

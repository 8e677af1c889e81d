"""Audio side of the model: a Whisper-style encoder and the projector into the LM's embedding space.

Each unit's audio is encoded on its own (streaming-friendly: unit u never sees
unit u+1), then frames are stacked and projected to exactly K embeddings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from lws_core.errors import InputError
from lws_core.model.features import LogMel


def encoder_positions(unit_samples: int) -> int:
    """Encoder output length for one unit (Whisper: conv1 stride 1, conv2 stride 2, padding 1)."""
    frames = LogMel.frames_for(unit_samples)
    return (frames - 1) // 2 + 1


class UnitAudioEncoder(nn.Module):
    """audio [N, unit_samples] -> embeddings [N, K, lm_hidden]."""

    def __init__(self, whisper_encoder: nn.Module, n_mels: int, unit_samples: int, k: int, lm_hidden: int, sample_rate: int = 16000) -> None:
        super().__init__()
        self.featurizer = LogMel(n_mels, sample_rate)
        self.encoder = whisper_encoder
        self.unit_samples = unit_samples
        self.k = k
        positions = encoder_positions(unit_samples)
        self.stack = math.ceil(positions / k)
        self.padded = self.stack * k
        d = whisper_encoder.config.d_model
        self.projector = nn.Sequential(nn.Linear(d * self.stack, lm_hidden), nn.GELU(), nn.Linear(lm_hidden, lm_hidden))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.shape[-1] != self.unit_samples:
            raise ValueError(f"unit audio has {audio.shape[-1]} samples, expected {self.unit_samples}")
        feats = self.featurizer(audio).to(self.projector[0].weight.dtype)
        need = 2 * self.encoder.config.max_source_positions  # Whisper's conv stack wants exactly this many frames
        if feats.shape[-1] < need:  # e.g. 0.25 s units: 25 frames for 13 positions
            feats = torch.nn.functional.pad(feats, (0, need - feats.shape[-1]))
        hidden = self.encoder(input_features=feats).last_hidden_state  # [N, P, d]
        n, p, d = hidden.shape
        if p < self.padded:
            hidden = torch.cat([hidden, hidden.new_zeros(n, self.padded - p, d)], dim=1)
        stacked = hidden[:, : self.padded].reshape(n, self.k, self.stack * d)
        return self.projector(stacked)


def whisper_config(encoder_kwargs: dict, unit_samples: int, path: str | None = None):  # noqa: ANN201 - WhisperConfig
    """The encoder's config without any weights: from the preset, or read from a local Whisper directory.

    Read on its own so a wrong ``model.encoder_path`` (no directory, or a directory
    without a Whisper config) fails in one line before a multi-GB backbone is loaded,
    and so the memory pre-check can size the encoder without building it.
    """
    from transformers import WhisperConfig

    positions = encoder_positions(unit_samples)
    if path is None:
        return WhisperConfig(max_source_positions=positions, **encoder_kwargs)
    if not Path(path).is_dir():
        raise InputError(f"model.encoder_path not found: {path}")
    cfg_file = Path(path) / "config.json"
    try:
        model_type = json.loads(cfg_file.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise InputError(f"model.encoder_path {path}: not a Whisper directory (no readable config.json: {type(e).__name__})") from None
    if model_type != "whisper":
        raise InputError(f"model.encoder_path {path}: config.json describes a {model_type!r} model, not Whisper")
    cfg = WhisperConfig.from_pretrained(path, local_files_only=True)
    cfg.max_source_positions = positions
    return cfg


def build_whisper_encoder(encoder_kwargs: dict, unit_samples: int, path: str | None = None) -> nn.Module:
    """Random-init encoder from a config, or a pretrained one from a local Whisper directory.

    Whisper expects 30 s windows (1500 positions); we feed one unit, so the
    position table is cut to the unit's length (the first rows of a pretrained
    table are exactly the positions a short input uses).
    """
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    positions = encoder_positions(unit_samples)
    if path is None:
        enc = WhisperEncoder(whisper_config(encoder_kwargs, unit_samples))
    else:
        from transformers import WhisperModel

        whisper_config(encoder_kwargs, unit_samples, path)  # one-line InputError for a non-Whisper directory
        try:
            full = WhisperModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, SafetensorError) as e:
            raise InputError(f"model.encoder_path {path}: cannot load Whisper weights ({str(e).splitlines()[0][:160]})") from None
        enc = full.encoder
        weight = enc.embed_positions.weight.data[:positions].clone()
        enc.embed_positions = nn.Embedding(positions, weight.shape[1])
        enc.embed_positions.weight.data.copy_(weight)
        enc.embed_positions.requires_grad_(False)
        enc.config.max_source_positions = positions
    return enc

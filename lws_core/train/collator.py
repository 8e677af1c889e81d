"""Dataset rows -> model batches. Pure: tokenizes on the fly, so the tokenizer can change without re-synthesis.

A row is a synthesized session (``session`` JSON + ``audio`` PCM16 bytes). Each
unit's audio becomes one row of ``unit_audio`` in placeholder order, so the model
can scatter the K embeddings of unit j into the j-th block of ``<|audio|>`` slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lws_core.errors import SchemaMismatchError
from lws_core.schema import IGNORE_INDEX, SCHEMA_VERSION, SchemaTokenizer, Session, encode


@dataclass
class EncodedRow:
    input_ids: list[int]
    labels: list[int]
    channels: list[int]
    audio_mask: list[bool]
    unit_audio: np.ndarray  # [units, unit_samples] float32


def encode_row(
    row: dict[str, Any], tok: SchemaTokenizer, k: int, unit_samples: int, max_length: int | None = None
) -> EncodedRow:
    """Encode one dataset row; sessions longer than ``max_length`` are cut at a unit boundary."""
    version = row.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise SchemaMismatchError(f"row {row.get('id')}: made for schema {version!r}, this code speaks {SCHEMA_VERSION!r}")
    session = Session.model_validate_json(row["session"])
    audio = np.frombuffer(row["audio"], dtype="<i2").astype(np.float32) / 32768.0
    n_units = len(session.units)
    need = n_units * unit_samples
    if audio.shape[0] < need:
        audio = np.pad(audio, (0, need - audio.shape[0]))
    unit_audio = audio[:need].reshape(n_units, unit_samples)
    enc = encode(session, tok, k)
    if max_length is not None and len(enc) > max_length:
        keep = [i for i, start in enumerate(enc.unit_starts) if (enc.unit_starts[i + 1] if i + 1 < n_units else len(enc)) <= max_length]
        n_keep = len(keep)
        cut = enc.unit_starts[n_keep] if n_keep < n_units else len(enc)
        enc.input_ids, enc.labels, enc.channels, enc.audio_mask = (
            enc.input_ids[:cut], enc.labels[:cut], enc.channels[:cut], enc.audio_mask[:cut]
        )
        unit_audio = unit_audio[:n_keep]
    return EncodedRow(enc.input_ids, enc.labels, enc.channels, enc.audio_mask, unit_audio)


class LWSCollator:
    """Callable collator for the HF Trainer / DataLoader: pads to the longest row in the batch."""

    def __init__(self, tok: SchemaTokenizer, k: int, unit_samples: int, max_length: int | None = 2048) -> None:
        self.tok = tok
        self.k = k
        self.unit_samples = unit_samples
        self.max_length = max_length

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = [encode_row(r, self.tok, self.k, self.unit_samples, self.max_length) for r in rows]
        return collate(encoded, self.tok.special.pad)


def collate(encoded: list[EncodedRow], pad_id: int) -> dict[str, torch.Tensor]:
    n = max(len(e.input_ids) for e in encoded)
    b = len(encoded)
    input_ids = torch.full((b, n), pad_id, dtype=torch.long)
    labels = torch.full((b, n), IGNORE_INDEX, dtype=torch.long)
    channels = torch.zeros((b, n), dtype=torch.long)
    audio_mask = torch.zeros((b, n), dtype=torch.bool)
    attention = torch.zeros((b, n), dtype=torch.long)
    for i, e in enumerate(encoded):
        m = len(e.input_ids)
        input_ids[i, :m] = torch.tensor(e.input_ids)
        labels[i, :m] = torch.tensor(e.labels)
        channels[i, :m] = torch.tensor(e.channels)
        audio_mask[i, :m] = torch.tensor(e.audio_mask)
        attention[i, :m] = 1
    unit_audio = torch.from_numpy(np.concatenate([e.unit_audio for e in encoded], axis=0))
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "audio_mask": audio_mask,
        "unit_audio": unit_audio,
        "labels": labels,
        "channels": channels,
    }

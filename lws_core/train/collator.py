"""Dataset rows -> model batches. Pure: tokenizes on the fly, so the tokenizer can change without re-synthesis.

A row is a synthesized session (``session`` JSON + ``audio`` PCM16 bytes). Each
unit's audio becomes one row of ``unit_audio`` in placeholder order, so the model
can scatter the K embeddings of unit j into the j-th block of ``<|audio|>`` slots.

Nothing here touches the model: the collator is tested on its own, and the same
function feeds training, teacher-forced evaluation and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lws_core.errors import ConfigError, InputError, SchemaMismatchError
from lws_core.schema import IGNORE_INDEX, SCHEMA_VERSION, SchemaTokenizer, Session, encode

# training-time audio augmentation: (session, its whole audio as 1-D float, row id) -> audio of the same length
AudioAugment = Callable[[Session, np.ndarray, str], np.ndarray]

# Audio may be off by rounding (unit_s * 16000 need not be an integer for odd unit_s); more than
# this many samples of difference means the row was made with another unit length or is corrupt.
_AUDIO_SLACK_SAMPLES = 2


@dataclass
class EncodedRow:
    """One session as position-aligned lists plus its unit audio (already cut to ``max_length``)."""

    input_ids: list[int]
    labels: list[int]
    channels: list[int]
    audio_mask: list[bool]
    unit_audio: np.ndarray  # [units, unit_samples] float32
    unit_starts: list[int]
    state_positions: list[int]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def _row_id(row: dict[str, Any]) -> str:
    return str(row.get("id", "?"))


def row_unit_audio(row: dict[str, Any], n_units: int, unit_samples: int) -> np.ndarray:
    """PCM16 bytes -> [n_units, unit_samples] float32 in [-1, 1); refuses audio that does not fit the units."""
    raw = row.get("audio")
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise InputError(f"row {_row_id(row)}: 'audio' must be PCM16 bytes, got {type(raw).__name__}")
    audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    need = n_units * unit_samples
    if abs(audio.shape[0] - need) > _AUDIO_SLACK_SAMPLES * max(n_units, 1):
        raise InputError(
            f"row {_row_id(row)}: {audio.shape[0]} audio samples for {n_units} units of {unit_samples} "
            f"(expected {need}; was the dataset made with another schema.unit_s?)"
        )
    if audio.shape[0] < need:
        audio = np.pad(audio, (0, need - audio.shape[0]))
    return audio[:need].reshape(n_units, unit_samples)


def unit_cut(starts: list[int], length: int, max_length: int, row_id: str) -> tuple[int, int]:
    """(units kept, tokens kept) when a sequence of ``length`` tokens whose units start at ``starts`` is cut
    to ``max_length`` at a unit boundary; a first unit longer than ``max_length`` is a ConfigError."""
    ends = [*starts[1:], length]  # unit i occupies [starts[i], ends[i])
    n_keep = sum(1 for e in ends if e <= max_length)
    if n_keep == 0:
        raise ConfigError(
            f"train.max_length={max_length} is shorter than the first unit of row {row_id} "
            f"({ends[0] if ends else length} tokens); raise train.max_length"
        )
    return n_keep, ends[n_keep - 1]


def encode_row(
    row: dict[str, Any], tok: SchemaTokenizer, k: int, unit_samples: int, max_length: int | None = None,
    augment: AudioAugment | None = None,
) -> EncodedRow:
    """Encode one dataset row; sessions longer than ``max_length`` are cut at a unit boundary; ``augment``
    (training only, e.g. :class:`lws_core.train.unheard.UnheardWords`) changes the audio, never the labels.

    Cutting never splits a unit (a half unit would teach the model to stop
    mid-grammar), and the audio of the dropped units is dropped with them so the
    placeholder count and the audio rows still match.
    """
    version = row.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise SchemaMismatchError(f"row {_row_id(row)}: made for schema {version!r}, this code speaks {SCHEMA_VERSION!r}")
    try:
        session = Session.model_validate_json(row["session"])
    except (KeyError, ValueError) as e:
        raise InputError(f"row {_row_id(row)}: unreadable 'session' ({str(e).splitlines()[0][:120]})") from None
    n_units = len(session.units)
    unit_audio = row_unit_audio(row, n_units, unit_samples)
    if augment is not None and n_units:
        unit_audio = augment(session, unit_audio.reshape(-1), _row_id(row)).reshape(n_units, unit_samples)
    enc = encode(session, tok, k)
    ids, labels, channels, amask = enc.input_ids, enc.labels, enc.channels, enc.audio_mask
    starts, states = enc.unit_starts, enc.state_positions
    truncated = False
    if max_length is not None and len(enc) > max_length:
        n_keep, cut = unit_cut(starts, len(enc), max_length, _row_id(row))
        ids, labels, channels, amask = ids[:cut], labels[:cut], channels[:cut], amask[:cut]
        starts, states = starts[:n_keep], states[:n_keep]
        unit_audio = unit_audio[:n_keep]
        truncated = True
    return EncodedRow(ids, labels, channels, amask, unit_audio, starts, states, truncated)


class LWSCollator:
    """Callable collator for the HF Trainer / DataLoader: pads to the longest row in the batch."""

    def __init__(
        self, tok: SchemaTokenizer, k: int, unit_samples: int, max_length: int | None = 2048,
        augment: AudioAugment | None = None,
    ) -> None:
        self.tok = tok
        self.k = k
        self.unit_samples = unit_samples
        self.max_length = max_length
        self.augment = augment

    def encode(self, row: dict[str, Any]) -> EncodedRow:
        return encode_row(row, self.tok, self.k, self.unit_samples, self.max_length, self.augment)

    def token_length(self, row: dict[str, Any]) -> int:
        """A row's training length in tokens (after the ``max_length`` cut) from its session alone: what the
        length-grouped sampler batches by, without decoding the audio."""
        enc = encode(Session.model_validate_json(row["session"]), self.tok, self.k)
        if self.max_length is None or len(enc) <= self.max_length:
            return len(enc)
        return unit_cut(enc.unit_starts, len(enc), self.max_length, _row_id(row))[1]

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate([self.encode(r) for r in rows], self.tok.special.pad)


def collate(encoded: list[EncodedRow], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row: pad id, label -100, channel 0 (NONE), no audio, attention 0."""
    if not encoded:
        raise ValueError("collate() needs at least one row")
    n = max(len(e.input_ids) for e in encoded)
    b = len(encoded)
    input_ids = torch.full((b, n), pad_id, dtype=torch.long)
    labels = torch.full((b, n), IGNORE_INDEX, dtype=torch.long)
    channels = torch.zeros((b, n), dtype=torch.long)
    audio_mask = torch.zeros((b, n), dtype=torch.bool)
    attention = torch.zeros((b, n), dtype=torch.long)
    for i, e in enumerate(encoded):
        m = len(e.input_ids)
        input_ids[i, :m] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[i, :m] = torch.tensor(e.labels, dtype=torch.long)
        channels[i, :m] = torch.tensor(e.channels, dtype=torch.long)
        audio_mask[i, :m] = torch.tensor(e.audio_mask, dtype=torch.bool)
        attention[i, :m] = 1
    unit_audio = torch.from_numpy(np.ascontiguousarray(np.concatenate([e.unit_audio for e in encoded], axis=0)))
    # each row's first unit has no previous unit: its left-context window starts in silence
    audio_first = torch.zeros(unit_audio.shape[0], dtype=torch.bool)
    offset = 0
    for e in encoded:
        if e.unit_audio.shape[0]:
            audio_first[offset] = True
        offset += e.unit_audio.shape[0]
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "audio_mask": audio_mask,
        "unit_audio": unit_audio,
        "audio_first": audio_first,
        "labels": labels,
        "channels": channels,
    }


CHAIN_COLUMN = "members"  # a chained row (train.chain_sessions): the indices of its sessions in the source rows


def concat_encoded(parts: list[EncodedRow], max_length: int | None, row_id: str) -> EncodedRow:
    """Sessions one after another as one sequence (what a live session that goes on looks like), cut to
    ``max_length`` at a unit boundary like a single session."""
    ids: list[int] = []
    labels: list[int] = []
    channels: list[int] = []
    amask: list[bool] = []
    starts: list[int] = []
    states: list[int] = []
    for p in parts:
        off = len(ids)
        ids += p.input_ids
        labels += p.labels
        channels += p.channels
        amask += p.audio_mask
        starts += [s + off for s in p.unit_starts]
        states += [s + off for s in p.state_positions]
    audio = np.concatenate([p.unit_audio for p in parts], axis=0)
    truncated = any(p.truncated for p in parts)
    if max_length is not None and len(ids) > max_length:
        n_keep, cut = unit_cut(starts, len(ids), max_length, row_id)
        ids, labels, channels, amask = ids[:cut], labels[:cut], channels[:cut], amask[:cut]
        starts, states, audio, truncated = starts[:n_keep], states[:n_keep], audio[:n_keep], True
    return EncodedRow(ids, labels, channels, amask, audio, starts, states, truncated)


def plan_chains(n: int, max_chain: int, seed: int) -> list[list[int]]:
    """Every row once, in groups of 1..``max_chain`` consecutive rows of a seeded permutation (sizes uniform).

    Why uniform from 1: a chain's first session is a fresh session's, so single sessions stay as common in
    training as they are at the start of every live session; a chain of two or more teaches what comes after."""
    rng = np.random.default_rng([seed, 4099])
    order = rng.permutation(n).tolist()
    chains, i = [], 0
    while i < n:
        k = int(rng.integers(1, max_chain + 1))
        chains.append(order[i : i + k])
        i += k
    return chains


class ChainCollator(LWSCollator):
    """An :class:`LWSCollator` over chained rows (``{"members": [i, j, ...]}``) of ``source`` rows."""

    def __init__(
        self, source: Any, tok: SchemaTokenizer, k: int, unit_samples: int, max_length: int | None = 2048,
        augment: AudioAugment | None = None,
    ) -> None:
        super().__init__(tok, k, unit_samples, max_length, augment)
        self.source = source
        # lengths need the sessions only: reading whole rows would decode every member's audio too
        self._sessions = source.select_columns(["session"]) if hasattr(source, "select_columns") else source

    def encode(self, row: dict[str, Any]) -> EncodedRow:
        members = row[CHAIN_COLUMN]
        parts = [encode_row(self.source[int(m)], self.tok, self.k, self.unit_samples, None, self.augment) for m in members]
        return concat_encoded(parts, self.max_length, f"chain of {len(members)} from row {members[0]}")

    def token_length(self, row: dict[str, Any]) -> int:
        members = row[CHAIN_COLUMN]
        starts: list[int] = []
        total = 0
        for m in members:
            enc = encode(Session.model_validate_json(self._sessions[int(m)]["session"]), self.tok, self.k)
            starts += [s + total for s in enc.unit_starts]
            total += len(enc)
        if self.max_length is None or total <= self.max_length:
            return total
        return unit_cut(starts, total, self.max_length, f"chain from row {members[0]}")[1]

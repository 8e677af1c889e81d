"""Teacher-forced measurements of a model on dataset rows: per-channel loss and state accuracy.

These need no streaming engine, so training can report them at the end of every
run; the engine-based (free-running) numbers come from lws_core.eval.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lws_core.model import LWSModel
from lws_core.model.lws_model import channel_losses
from lws_core.schema import CHANNEL_NAMES, Channel
from lws_core.train.collator import LWSCollator


@torch.no_grad()
def evaluate_channel_losses(
    model: LWSModel | str | Path, rows: Sequence[dict[str, Any]], limit: int | None = None, batch_size: int = 8
) -> dict[str, float]:
    """Mean loss per channel (state, write_listen, write_respond, say), ``total``, and ``state_accuracy``."""
    if not isinstance(model, LWSModel):
        model = LWSModel.load(model)
    was_training = model.training
    model.eval()
    spec = model.spec
    col = LWSCollator(model.tokenizer, spec.audio_tokens_per_unit, spec.unit_samples)
    n = len(rows) if limit is None else min(limit, len(rows))
    sums = {name: 0.0 for name in CHANNEL_NAMES.values()}
    counts = {name: 0 for name in CHANNEL_NAMES.values()}
    total_sum, total_n, state_ok, state_n = 0.0, 0, 0, 0
    sp = model.tokenizer.special
    device = next(model.parameters()).device
    for start in range(0, n, batch_size):
        batch = col([rows[i] for i in range(start, min(n, start + batch_size))])
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        total, per, cnt = channel_losses(out.logits, batch["labels"], batch["channels"])
        valid = int((batch["labels"][:, 1:] != -100).sum())
        total_sum += float(total) * valid
        total_n += valid
        for name, v in per.items():
            sums[name] += float(v) * cnt[name]
            counts[name] += cnt[name]
        # state accuracy: the argmax over {listen, speak} at each state position
        is_state = (batch["channels"] == int(Channel.STATE)) & ((batch["labels"] == sp.listen) | (batch["labels"] == sp.speak))
        pos = is_state[:, 1:].nonzero(as_tuple=False)
        if len(pos):
            logits = out.logits[pos[:, 0], pos[:, 1]][:, [sp.listen, sp.speak]]
            pred = torch.where(logits[:, 1] > logits[:, 0], sp.speak, sp.listen)
            gold = batch["labels"][pos[:, 0], pos[:, 1] + 1]
            state_ok += int((pred == gold).sum())
            state_n += len(pos)
    if was_training:
        model.train()
    result = {name: sums[name] / counts[name] for name in sums if counts[name]}
    result["total"] = total_sum / max(total_n, 1)
    if state_n:
        result["state_accuracy"] = state_ok / state_n
    return result

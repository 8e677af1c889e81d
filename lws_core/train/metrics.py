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
from lws_core.schema import CHANNEL_NAMES, Channel, Session
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


@torch.no_grad()
def teacher_forced_metrics(
    model: LWSModel | str | Path, rows: Sequence[dict[str, Any]], limit: int | None = None, progress: bool = False
) -> dict[str, float]:
    """Per-unit greedy decoding from the gold prefix: does the model produce valid units, the right state, the answer?

    For every unit of every session the model sees the gold history (all earlier
    units as written in the data, plus this unit's audio) and decodes its output
    greedily over the whole vocabulary, without grammar constraints, until
    ``<|end|>`` or the unit's token budget. The :class:`UnitParser` then says
    whether the unit is schema-valid (closed by ``<|end|>``, no grammar issues,
    within the write/say budgets). This isolates what the model has learned
    from the compounding errors of free-running decoding, which the streaming
    engine measures separately.

    Returns ``schema_valid_units``, ``state_accuracy`` (the greedy token at each
    state position equals the label), ``written_accuracy`` (``grade_written`` on
    the document assembled from the decoded write segments, over sessions whose
    gold document itself grades correct), and counts.
    """
    from transformers import DynamicCache

    from lws_core.schema import Phase, UnitParser

    try:
        from lws_core.data.tasks import grade_written
    except ImportError:  # pragma: no cover - data stage always present in this repo
        grade_written = None

    if not isinstance(model, LWSModel):
        model = LWSModel.load(model)
    was_training = model.training
    model.eval()
    spec, tok = model.spec, model.tokenizer
    sp = tok.special
    col = LWSCollator(tok, spec.audio_tokens_per_unit, spec.unit_samples, max_length=None)
    device = next(model.parameters()).device
    embed_tokens = model.lm.get_input_embeddings()
    budget = spec.max_write_tokens + spec.max_say_tokens + 6  # + state, write, say, eot, end, slack
    n = len(rows) if limit is None else min(limit, len(rows))
    units = valid = state_ok = 0
    graded = written_ok = gold_ok = 0
    it = range(n)
    if progress:
        from lws_core.progress import progress as bar

        it = bar(it, desc="teacher-forced decode", unit="session")
    for i in it:
        row = rows[i]
        enc = col.encode(row)
        ids = torch.tensor([enc.input_ids], device=device)
        amask = torch.tensor([enc.audio_mask], device=device)
        emb = model.embed(ids, amask, torch.from_numpy(enc.unit_audio).to(device))
        cache = DynamicCache()
        pos = 0
        doc = []
        for state_pos in enc.state_positions:
            logits = model.lm(inputs_embeds=emb[:, pos:state_pos], cache=cache, use_cache=True, logits_to_keep=1).logits
            pos = state_pos
            parser = UnitParser(tok, start=Phase.STATE)
            done = None
            for _ in range(budget):
                t = int(logits[0, -1].argmax())
                done = parser.feed(t)
                if done is not None:
                    break
                step = embed_tokens(torch.tensor([[t]], device=device))
                logits = model.lm(inputs_embeds=step, cache=cache, use_cache=True, logits_to_keep=1).logits
            extra = int(cache.get_seq_length()) - state_pos
            if extra > 0:  # drop the decoded tokens: the next unit continues from the gold history
                cache.crop(-extra)
            parsed = done if done is not None else parser.finish()[-1]
            gold_state = enc.input_ids[state_pos]
            units += 1
            state_ok += int((sp.speak if parsed.state == "speak" else sp.listen) == gold_state and not _state_issue(parsed))
            valid += int(
                done is not None
                and not parsed.forced
                and not parsed.issues
                and len(parsed.write_ids) <= spec.max_write_tokens
                and len(parsed.say_ids) <= spec.max_say_tokens
            )
            doc.append(parsed.write)
        answer = row.get("answer") or ""
        if grade_written is not None and answer:
            session_doc = Session.model_validate_json(row["session"]).written_document()
            if grade_written(answer, session_doc):
                gold_ok += 1
                graded += 1
                written_ok += int(grade_written(answer, "".join(doc)))
    if was_training:
        model.train()
    out: dict[str, float] = {"units": float(units), "sessions": float(n)}
    if units:
        out["schema_valid_units"] = valid / units
        out["state_accuracy"] = state_ok / units
    if graded:
        out["written_accuracy"] = written_ok / graded
        out["graded_sessions"] = float(graded)
    return out


def _state_issue(parsed) -> bool:  # noqa: ANN001
    """True when the first decoded token was not a state token (the parser then records it)."""
    return any(msg.startswith("expected a state token") for msg in parsed.issues)

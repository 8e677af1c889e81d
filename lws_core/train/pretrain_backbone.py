"""Pretrain the LLM stand-in on text only: the teacher's sessions with the user's words as text.

The real LWS recipe liberates a pretrained LLM's capability; on a laptop there
is none, so this stage makes one. It trains the tiny causal LM on the schema's
own stream, with each unit's audio slots replaced by the transcript of the words
heard in that unit (``encode(..., heard=...)``): question → notes → written
answer → spoken answer, with the same turn-taking. No audio is needed, so it sees
many more sessions than the audio set. The result is saved as a plain local HF
checkpoint (model + tokenizer), which the LWS stage loads through
``model.backbone_path`` exactly like a real one.

A plain PyTorch loop, not the DeepSpeed Trainer: the stage exists only where no
pretrained LLM is at hand, and at scale it is skipped.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lws_core.data.tasks import phrasing_words, slot_words
from lws_core.errors import InputError
from lws_core.hardware import bf16_autocast
from lws_core.model.asr import heard_form, heard_slots
from lws_core.model.presets import PRESETS, lm_config
from lws_core.schema import IGNORE_INDEX, SchemaTokenizer, Session, encode
from lws_core.train.drills import copy_row, drill_row
from lws_core.train.loop import LossLog, optimizer_step


@dataclass
class BackboneReport:
    out_dir: str
    steps: int
    train_sessions: int
    parameters: int
    wall_s: float
    tokens_per_s: float
    final_loss: float
    losses: list[tuple[int, float]] = field(default_factory=list)


def mishearing(session: Session, rate: float, rng: np.random.Generator, pool: list[str], swap: float = 0.5):  # noqa: ANN201 - str -> str
    """A recogniser's errors on one session, simulated: each heard word that is neither a number, a slot value
    (:func:`lws_core.data.tasks.slot_words`) nor said back in the session's notes or answers is, with probability
    ``rate``, heard as a random word of ``pool`` (:func:`lws_core.data.tasks.phrasing_words`; a ``swap`` share of
    them) or dropped (the rest).

    Why: the stand-in recogniser has only heard the templates' words, so on a phrasing it never heard it drops
    or swaps the words that carry no value (it heard half of them on held-out phrasings, against 0.94 on training
    ones, docs/training.md). A backbone that only ever read clean transcripts learned to lean on those words; one
    that reads some of them lost learns to take the task from what the answer is made of. Numbers and the words
    the answer repeats (units, operations, "larger") are never touched: the labels would then ask for something
    that was not heard.
    """
    kept = set(heard_form([session.written_document(), session.spoken_text()]).split()) | slot_words()

    def mishear(text: str) -> str:
        words = text.split()
        if any(c.isdigit() for c in text) or any(w in kept for w in words) or rng.random() >= rate:
            return text
        return "" if rng.random() < 1.0 - swap else pool[int(rng.integers(len(pool)))]

    return mishear


def text_view(session: Session, tok: SchemaTokenizer, k: int, max_length: int, mishear=None) -> tuple[list[int], list[int]]:  # noqa: ANN001
    """(input_ids, labels) of a session's text view, cut at a unit boundary to ``max_length``; ``mishear``: see
    :func:`mishearing`."""
    enc = encode(session, tok, k, heard=heard_slots(session, tok, k, mishear))
    ids, labels = enc.input_ids, enc.labels
    if len(ids) > max_length:
        ends = [*enc.unit_starts[1:], len(ids)]
        cut = max([e for e in ends if e <= max_length], default=max_length)
        ids, labels = ids[:cut], labels[:cut]
    return ids, labels


def load_sessions(data_dir: str | Path, split: str = "train") -> list[Session]:
    from datasets import load_from_disk

    try:
        ds = load_from_disk(str(data_dir))[split]
    except (FileNotFoundError, KeyError) as e:
        raise InputError(f"{data_dir}: no {split!r} split in a synthesized dataset ({e})") from None
    return [Session.model_validate_json(s) for s in ds["session"]]


def pack(rows: list[tuple[list[int], list[int]]], order: np.ndarray, row_len: int) -> list[list[int]]:
    """Greedy packing of sessions (in ``order``) into rows of at most ``row_len`` tokens; each row lists its sessions.

    Why: right-padding a batch of sessions to its longest (~190 tokens on average,
    up to ~330) spent ~40 % of every step on padding. Packed rows carry whole
    sessions only (none is split), and :func:`packed_batch` masks attention per
    session, so training sees exactly what unpacked training would.
    """
    packed: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i in order:
        n = min(len(rows[i][0]), row_len)
        if cur and used + n > row_len:
            packed.append(cur)
            cur, used = [], 0
        cur.append(int(i))
        used += n
    if cur:
        packed.append(cur)
    return packed


def packed_batch(rows: list[tuple[list[int], list[int]]], groups: list[list[int]], pad: int, row_len: int) -> dict[str, torch.Tensor]:
    """Model inputs for packed rows: ids, labels, per-session positions and a block-diagonal causal mask.

    Each session attends only to itself (a 4-D boolean mask) and its positions
    restart at 0, as in the streaming engine. Padding forms its own block (so no
    mask row is empty) and carries no labels.
    """
    b = len(groups)
    ids = torch.full((b, row_len), pad, dtype=torch.long)
    lab = torch.full((b, row_len), IGNORE_INDEX, dtype=torch.long)
    pos = torch.zeros((b, row_len), dtype=torch.long)
    doc = torch.full((b, row_len), -1, dtype=torch.long)
    for r, group in enumerate(groups):
        at = 0
        for d, i in enumerate(group):
            x, y = rows[i][0][:row_len], rows[i][1][:row_len]
            n = min(len(x), row_len - at)
            ids[r, at : at + n] = torch.tensor(x[:n])
            lab[r, at : at + n] = torch.tensor(y[:n])
            pos[r, at : at + n] = torch.arange(n)
            doc[r, at : at + n] = d
            at += n
        pos[r, at:] = torch.arange(row_len - at)
    causal = torch.ones(row_len, row_len, dtype=torch.bool).tril()
    mask = (doc[:, :, None] == doc[:, None, :]) & causal
    return {"input_ids": ids, "labels": lab, "position_ids": pos, "attention_mask": mask[:, None]}


def pretrain_backbone(
    cfg,  # noqa: ANN001 - LWSConfig
    corpus_dir: str | Path,
    out_dir: str | Path,
    tokenizer: SchemaTokenizer,
    progress: bool = True,
    on_log: Any = None,
) -> BackboneReport:
    """Train the preset's LM from scratch on the corpus's train split (text view) and save it with its tokenizer."""
    from transformers import AutoModelForCausalLM

    t0 = time.time()
    bc = cfg.pretrain.backbone
    torch.manual_seed(bc.seed)
    rng = np.random.default_rng(bc.seed)
    sessions = load_sessions(corpus_dir, "train")
    if not sessions:
        raise InputError(f"{corpus_dir}: the corpus's train split is empty")
    k, max_len = cfg.schema_.audio_tokens_per_unit, cfg.train.max_length
    pool = phrasing_words() if bc.heard_noise > 0 else []

    def views() -> list[tuple[list[int], list[int]]]:  # drawn again each epoch under heard_noise, so no error sticks
        noisy = bc.heard_noise > 0  # at 0 rng is not drawn from, so a clean backbone is draw for draw what it was before
        return [text_view(s, tokenizer, k, max_len, mishearing(s, bc.heard_noise, rng, pool, bc.heard_swap) if noisy else None) for s in sessions]

    rows = views()
    lm = AutoModelForCausalLM.from_config(lm_config(PRESETS[cfg.model.preset], tokenizer.vocab_size, tokenizer.special.pad))
    opt = torch.optim.AdamW(lm.parameters(), lr=bc.learning_rate, weight_decay=0.01, betas=(0.9, 0.95))
    total, warm = bc.max_steps, min(bc.warmup_steps, bc.max_steps - 1)

    def lr_at(step: int) -> float:  # linear warm-up, cosine to 10 %
        if step < warm:
            return (step + 1) / max(warm, 1)
        p = (step - warm) / max(total - warm, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    log = LossLog("text_loss", total, "pretrain backbone", progress, on_log)
    lm.train()
    # rows of fixed length (one shape for the CPU kernels: oneDNN caches a primitive per shape, and unbounded
    # shapes once grew this loop to 5.6 GB); each step packs about ``batch_size`` sessions' worth of tokens
    row_len = max(512, -(-max(len(r[0]) for r in rows) // 64) * 64)
    mean_len = float(np.mean([len(r[0]) for r in rows]))
    rows_per_step = max(1, round(bc.batch_size * mean_len / row_len))
    tokens = 0
    packed = pack(rows, rng.permutation(len(rows)), row_len)
    pos = 0
    for step in range(1, total + 1):
        if pos + rows_per_step > len(packed):
            if bc.heard_noise > 0:
                rows = views()
            packed, pos = pack(rows, rng.permutation(len(rows)), row_len), 0
        batch = packed_batch(rows, packed[pos : pos + rows_per_step], tokenizer.special.pad, row_len)
        tokens += sum(len(rows[i][0]) for g in packed[pos : pos + rows_per_step] for i in g)
        extra_rows = [drill_row(rng, tokenizer.encode_text, row_len) for _ in range(bc.drill_rows)]
        extra_rows += [copy_row(rng, tokenizer.encode_text, tokenizer.special.audio, row_len) for _ in range(bc.copy_rows)]
        if extra_rows:  # drill and copy rows, one document per row
            extra = packed_batch(extra_rows, [[i] for i in range(len(extra_rows))], tokenizer.special.pad, row_len)
            batch = {k: torch.cat([batch[k], extra[k]]) for k in batch}
            tokens += sum(len(r[0]) for r in extra_rows)
        pos += rows_per_step
        with bf16_autocast(cfg.pretrain.bf16):
            loss = lm(**batch).loss
        optimizer_step(loss, lm.parameters(), opt, sched)
        log.update(step, loss)
    log.close()
    wall = time.time() - t0
    out = save_backbone(lm, tokenizer, out_dir)
    report = BackboneReport(str(out), total, len(rows), sum(p.numel() for p in lm.parameters()), round(wall, 1),
                            round(tokens / max(wall, 1e-9), 1), round(log.ema or float("nan"), 4), log.losses)
    (out / "pretrain_report.json").write_text(json.dumps(asdict(report), indent=2))
    return report


def save_backbone(lm: torch.nn.Module, tokenizer: SchemaTokenizer, out_dir: str | Path) -> Path:
    """A plain HF checkpoint directory (config, safetensors, tokenizer + schema ids), written atomically."""
    import shutil

    out = Path(out_dir)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    lm.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def corpus_config(cfg):  # noqa: ANN001, ANN201 - LWSConfig -> LWSConfig
    """The data config of the backbone's text corpus: its own seed and size, every session in train.

    Train sessions use training phrasings only, so the held-out phrasings of the
    audio set's test split stay unseen by the backbone too; none carries filler words.
    """
    # no filler words (data.filler_rate): they are speech the recogniser is taught to write nothing for, so no text
    # the LWS model reads or writes ever holds one, and the backbone's text view should not either
    return train_only_corpus(cfg, cfg.pretrain.backbone.sessions, cfg.pretrain.backbone.seed).with_overrides({"data.filler_rate": 0.0})


def train_only_corpus(cfg, sessions: int, seed: int):  # noqa: ANN001, ANN201 - LWSConfig -> LWSConfig
    """The data config of a stand-in's own corpus: ``sessions`` sessions from ``seed``, all in train (training
    voices and phrasings; the test fraction cannot be 0, and at 1e-6 no session lands there). The extra training
    phrasings only where ``pretrain.extra_phrasings`` lets them in."""
    return cfg.with_overrides({
        "data.sessions": sessions, "data.seed": seed, "data.validation_fraction": 0.0,
        "data.test_fraction": 1e-6, "data.test_seen_fraction": 0.0,
        # the switch read first, so that a step handed a config without it fails (tests/config/test_step_sections.py)
        "data.extra_phrasings": cfg.pretrain.extra_phrasings and cfg.data.extra_phrasings,
    })


def build_backbone(
    cfg,  # noqa: ANN001 - LWSConfig
    out_dir: str | Path,
    progress: bool = True,
    on_log: Any = None,
) -> BackboneReport:
    """The whole stage: synthesize the text-only corpus (no audio kept), pretrain, save to ``out_dir``.

    The tokenizer is the data pipeline's budget tokenizer, so the budgets the
    dataset was cut with hold token for token in the LWS stage too.
    """
    import shutil

    from lws_core.data.budget import budget_tokenizer
    from lws_core.data.synth import synthesize
    from lws_core.scratch import scratch_dir

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = scratch_dir(out_dir.parent, f".{out_dir.name}.corpus")  # a killed run's folder goes at the next run
    try:
        summary = synthesize(corpus_config(cfg), work / "corpus", progress=progress, text_only=True)
        report = pretrain_backbone(cfg, work / "corpus", out_dir, budget_tokenizer(), progress=progress, on_log=on_log)
        report_path = Path(report.out_dir) / "pretrain_report.json"
        data = json.loads(report_path.read_text())
        data["corpus"] = {"sessions": summary.rows.get("train", 0), "rejects": summary.rejects, "synth_s": summary.wall_s}
        report_path.write_text(json.dumps(data, indent=2))
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)

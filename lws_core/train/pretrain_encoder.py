"""Pretrain the speech-encoder stand-in as a CTC recogniser on the synthesized user speech.

A plain PyTorch loop, not the DeepSpeed Trainer: this stage exists only where no
pretrained Whisper-class encoder is available (a laptop), its model is a few
hundred thousand parameters, and at scale it is skipped (``model.encoder_path``).
Its output directory loads as ``model.encoder_path`` (a Whisper encoder saved
with ``save_pretrained`` plus ``lws_encoder.json``), so the LWS stage treats it
exactly like a real checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lws_core.errors import ConfigError, InputError
from lws_core.hardware import bf16_autocast
from lws_core.model.asr import (
    CTCRecognizer,
    CTCVocab,
    EncoderMeta,
    UnitSpeechEncoder,
    aligned_path,
    context_windows,
    ctc_loss,
    heard_form,
    heard_items,
    heard_speech,
    transcribe_units,
    unit_positions,
    window_positions,
)
from lws_core.model.presets import PRESETS
from lws_core.schema import Session, heard_words
from lws_core.train.fast_dropout import fast_dropout
from lws_core.train.loop import LossLog, optimizer_step
from lws_core.train.pretrain_backbone import train_only_corpus


@dataclass
class EncoderReport:
    out_dir: str
    steps: int
    train_units: int
    wall_s: float
    final_loss: float
    wer: float | None
    wer_sessions: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    examples: list[dict[str, str]] = field(default_factory=list)
    wer_interval: tuple[float, float] | None = None  # 95 % bootstrap interval over the evaluated sessions
    wer_breakdown: dict[str, float] = field(default_factory=dict)  # where the errors are (wer_breakdown())


@dataclass
class _Session:
    units: np.ndarray  # [n, unit] float32
    targets: list[str]  # transcript per unit (heard_form)
    tokens: list[list[int]]  # the LM tokens of that transcript, per unit
    items: list[list[tuple[list[int], float, float]]] = field(default_factory=list)  # per unit: (word's LM tokens, end, start)
    voice: str = ""  # the voice's label (VoiceSpec.label), for the WER per accent


def _load_split(data_dir: Path, split: str, unit_samples: int, limit: int | None = None, tok=None) -> list[_Session]:  # noqa: ANN001
    from datasets import load_from_disk

    try:
        ds = load_from_disk(str(data_dir))[split]
    except (FileNotFoundError, KeyError) as e:
        raise InputError(f"{data_dir}: no {split!r} split in a synthesized dataset ({e})") from None
    out = []
    for row in ds.select(range(min(len(ds), limit))) if limit else ds:
        s = Session.model_validate_json(row["session"])
        raw = row["audio"] or b""
        if not raw:
            raise InputError(f"{data_dir}: rows carry no audio (a text-only dataset cannot pretrain the encoder)")
        a = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        n = len(s.units)
        a = np.pad(a, (0, max(0, n * unit_samples - a.shape[0])))[: n * unit_samples].reshape(n, unit_samples)
        out.append(_Session(a, *recogniser_targets(s, tok), voice=row.get("voice") or ""))
    return out


def recogniser_targets(s: Session, tok) -> tuple[list[str], list[list[int]], list]:  # noqa: ANN001 - SchemaTokenizer | None
    """Per unit, what the recogniser is taught to write: the heard transcript, its LM tokens and its timed items
    (:func:`lws_core.model.asr.heard_items`; none without ``tok``). The session's filler words (``meta["fillers"]``,
    ``data.filler_rate``) are left out: a word the recogniser is not taught is one it should write nothing for."""
    fillers = set(s.meta.get("fillers", ()))
    if fillers:
        texts = [heard_form([w for w in ws if heard_form([w]) not in fillers]) for ws in heard_words(s)]
    else:
        texts = heard_speech(s)
    tokens = [tok.encode_text(" " + t) if (tok is not None and t) else [] for t in texts]
    untaught = (lambda t: "" if t in fillers else t) if fillers else None
    return texts, tokens, heard_items(s, tok, untaught) if tok is not None else []


def _kept_windows(sessions: list[_Session], keep: np.ndarray, ctx: int) -> torch.Tensor:
    """[len(keep), ctx + unit] windows of the kept units (indices over all sessions' units in order),
    built session by session so only the kept ones are ever held together."""
    out, at, j = [], 0, 0
    for s in sessions:
        n = len(s.units)
        mine = []
        while j < len(keep) and keep[j] < at + n:
            mine.append(int(keep[j]) - at)
            j += 1
        if mine:
            first = np.zeros(n, dtype=bool)
            first[0] = True
            out.append(context_windows(torch.from_numpy(s.units), first, ctx)[mine])
        at += n
    return torch.cat(out)


def encoder_corpus_config(cfg):  # noqa: ANN001, ANN201 - LWSConfig -> LWSConfig
    """The data config of the recogniser's own extra corpus: ``pretrain.encoder.sessions`` training sessions from
    its ``corpus_seed``, with its own filler rate, filler place, voice timbres and accents where ``pretrain.encoder`` sets them."""
    ec = cfg.pretrain.encoder
    corpus_cfg = train_only_corpus(cfg, ec.sessions, ec.corpus_seed)
    overrides = {"data.filler_rate": ec.filler_rate, "data.filler_place": ec.filler_place, "data.voice_timbres": ec.voice_timbres,
                 "data.voice_accents": ec.voice_accents}
    return corpus_cfg.with_overrides({k: v for k, v in overrides.items() if v is not None})


def _synthesized_train(corpus_cfg, out_dir: Path, name: str, unit_samples: int, tok, progress: bool) -> list[_Session]:  # noqa: ANN001
    """The train split of the sessions ``corpus_cfg`` describes, synthesized in a scratch folder beside ``out_dir``
    (removed after; a killed run's folder goes at the next run)."""
    import shutil

    from lws_core.data.synth import synthesize
    from lws_core.scratch import scratch_dir

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = scratch_dir(out_dir.parent, f".{out_dir.name}.{name}")
    try:
        synthesize(corpus_cfg, work / name, progress=progress)
        return _load_split(work / name, "train", unit_samples, tok=tok)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _extra_corpus(cfg, out_dir: Path, unit_samples: int, tok, progress: bool) -> list[_Session]:  # noqa: ANN001
    """``pretrain.encoder.sessions`` more sessions of speech for the recogniser alone, synthesized beside ``out_dir``.

    Why: the dataset's train split holds ~3,700 units with speech, and the
    recogniser still misheard half of its own training words (WER 0.55 on train,
    0.71 on held-out voices, measured): synthetic speech is cheap (~300x real
    time), so the stand-in hears more of it, as a real ASR encoder has. Training
    voices and phrasings only (every session in train), its own seed.
    """
    return _synthesized_train(encoder_corpus_config(cfg), out_dir, "corpus", unit_samples, tok, progress)


def filler_free_config(cfg, data_dir: str | Path):  # noqa: ANN001, ANN201 - LWSConfig -> LWSConfig | None
    """The data config of ``data_dir``'s sessions without the LWS data's filler words (``data.filler_rate``), from
    its card; None where it has none (a file source's questions never take any), for a lone shard of a fan-out
    (the merged dataset has the twin), or where synthesizing again would call an LLM teacher (an offline template
    teacher only: a remote one costs money and may not answer the same)."""
    path = Path(data_dir) / "card.json"
    card = json.loads(path.read_text()) if path.is_file() else {}
    data = card.get("data_config") or {}
    templates = all((data.get(k) or {}).get("kind", "template") == "template" for k in ("teacher", "source"))
    if not data.get("filler_rate") or not templates or card.get("shard"):  # one shard of a fan-out: not the whole
        return None
    sessions = card.get("requested_sessions") or data["sessions"]  # `lws data synth --sessions N` is not in the config
    try:
        return cfg.with_overrides({"data": {**data, "filler_rate": 0.0, "sessions": sessions}})
    except ConfigError:  # a card from another version's config: keep the fillers as untaught words
        return None


def _dataset_train(cfg, data_dir: Path, out_dir: Path, unit_samples: int, tok, progress: bool) -> list[_Session]:  # noqa: ANN001
    """The dataset's train split as the recogniser stand-in learns from it: the same sessions without the LWS
    data's filler words, synthesized again (about a minute for the default 4,000 sessions) where it has them.

    Why: a pretrained speech encoder does not change with the LWS data's recipe, so its stand-in should not
    either (the backbone's text corpus takes no fillers for the same reason, ``pretrain_backbone.corpus_config``).
    Each session draws its fillers from a generator of its own, so without them it is the session of a
    filler-free dataset, and the recogniser is the one that dataset gives, weight for weight
    (tests/data/test_fillers.py). Measured (stop 57, docs/training.md): the LWS stage on those stand-ins with
    edge fillers held state accuracy on held-out phrasings at 0.958 on three seeds; a recogniser that had also
    learnt the LWS data's fillers (so they were no longer speech it cannot read) gave 0.944 and answered less
    on its one seed. Without a card to synthesize from (or with an LLM teacher) the fillers stay in, as words
    the recogniser is taught to write nothing for (:func:`recogniser_targets`)."""
    twin = filler_free_config(cfg, data_dir)
    if twin is None:
        return _load_split(data_dir, "train", unit_samples, tok=tok)
    return _synthesized_train(twin, out_dir, "filler-free", unit_samples, tok, progress)


def _features(featurizer: torch.nn.Module, windows: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Log-mel features of every training window, computed once: they have no weights, so recomputing them
    at every step was waste (a sixth of a step in a profile, about 4 % of the stage's wall time as measured).
    Smaller than the audio too: 40 x 150 values for 24,000 samples."""
    with torch.no_grad():
        return torch.cat([featurizer(windows[i : i + chunk]) for i in range(0, len(windows), chunk)])


def _kept_features(featurizer: torch.nn.Module, sessions: list[_Session], keep: np.ndarray, ctx: int, chunk: int = 512) -> torch.Tensor:
    """:func:`_features` of :func:`_kept_windows`, a group of sessions at a time (``keep`` sorted).

    Why: with the 4,500-session extra corpus, every kept window held at once was 3.4 GB of float32
    audio beside the sessions' own 3.4 GB, and three such stages side by side were killed for memory;
    this holds at most about ``chunk`` windows of audio beside the features.
    """
    out: list[torch.Tensor] = []
    group: list[_Session] = []
    start = at = j = 0  # units before the group, units before the next session, first keep index of the group

    def flush() -> None:
        nonlocal j
        end = int(np.searchsorted(keep, at))
        if end > j:
            out.append(_features(featurizer, _kept_windows(group, keep[j:end] - start, ctx)))
        j = end

    for s in sessions:
        group.append(s)
        at += len(s.units)
        if int(np.searchsorted(keep, at)) - j >= chunk:
            flush()
            group, start = [], at
    flush()
    return torch.cat(out) if out else torch.empty(0)


def _has_rows(data_dir: Path, split: str) -> bool:
    from datasets import load_from_disk

    dd = load_from_disk(str(data_dir))
    return split in dd and len(dd[split]) > 0


def dataset_tokenizer(data_dir: Path):  # noqa: ANN201 - SchemaTokenizer
    """The tokenizer the dataset's budgets were counted with (saved beside it), else the budget tokenizer."""
    from lws_core.schema import SchemaTokenizer

    if (Path(data_dir) / "tokenizer").is_dir():
        return SchemaTokenizer.load(Path(data_dir) / "tokenizer")
    from lws_core.data.budget import budget_tokenizer

    return budget_tokenizer()


def build_recognizer(
    preset: str, n_mels: int | None, unit_samples: int, context_samples: int, sample_rate: int, vocab: CTCVocab | None = None
) -> CTCRecognizer:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    kw = dict(PRESETS[preset].encoder)
    if n_mels is not None:
        kw["num_mel_bins"] = n_mels
    cfg = WhisperConfig(max_source_positions=window_positions(unit_samples, context_samples), **kw)
    enc = WhisperEncoder(cfg)
    return CTCRecognizer(UnitSpeechEncoder(enc, cfg.num_mel_bins, unit_samples, context_samples, sample_rate), vocab)


def set_dropout(encoder: torch.nn.Module, p: float) -> None:
    """Set every dropout rate of a Whisper encoder (residual, activation, attention) and its config to ``p``.

    The rates are plain floats on the modules, read at each forward, so they can change after construction.
    """
    for m in encoder.modules():
        for name in ("dropout", "activation_dropout"):
            if isinstance(getattr(m, name, None), float):
                setattr(m, name, p)
    for name in ("dropout", "activation_dropout", "attention_dropout"):
        setattr(encoder.config, name, p)


def transcribe_sessions(rec: CTCRecognizer, sessions: list[_Session]) -> list[str]:
    """One transcript per session: the unit hypotheses joined in order."""
    rec.eval()
    return [" ".join(h for h in transcribe_units(rec, s.units) if h) for s in sessions]


def word_error_rate(refs: list[str], hyps: list[str]) -> float | None:
    import jiwer

    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r.strip()]
    if not pairs:
        return None  # nothing was said in the evaluated sessions
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


def session_errors(refs: list[str], hyps: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per session that said something: its word errors (substitutions + deletions + insertions) and its reference
    words, the two sums jiwer's pooled WER divides."""
    import jiwer

    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r.strip()]
    errors = [(o := jiwer.process_words(r, h)).substitutions + o.deletions + o.insertions for r, h in pairs]
    return np.array(errors, dtype=float), np.array([len(r.split()) for r, _ in pairs], dtype=float)


def _pooled_bootstrap(errors: list[np.ndarray], words: np.ndarray, sign: tuple[float, ...], confidence: float,
                      seed: int) -> tuple[float, float] | None:
    """BCa bootstrap interval, resampling sessions, of ``sum(sign[k] * errors[k]) / sum(words)``."""
    from scipy.stats import bootstrap

    if len(words) < 2:
        return None
    rates = sum(k * e for k, e in zip(sign, errors, strict=True)) / words
    if np.all(rates == rates[0]):  # a degenerate sample (e.g. every session perfect): the interval is the point
        w = float(rates[0])
        return w, w

    def pooled(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
        *es, n = arrays
        return sum(k * e.sum(axis=axis) for k, e in zip(sign, es, strict=True)) / n.sum(axis=axis)

    res = bootstrap((*errors, words), pooled, paired=True, vectorized=True, confidence_level=confidence,
                    n_resamples=2000, random_state=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    return float(lo), float(hi)


def wer_breakdown(refs: list[str], hyps: list[str], voices: list[str]) -> dict[str, float]:
    """Where a recogniser's errors are: the WER per accent (``wer_accent.<espeak language>``), and the share of the
    reference's numbers and of its other words not heard right (``missed_numbers``, ``missed_words``: substituted or
    deleted; an insertion belongs to no reference word, so it counts in the accents' WERs only).

    Why: one WER says whether the goal is met, not what would meet it. Stop 61's recogniser read 0.115 on held-out
    voices: the held-out accent ``en-gb-x-gbcwmd`` 0.167 on half the words, every training accent (in a held-out
    timbre) 0.04-0.09; numbers missed 17 % of the time, other words 7 % (benchmarks/results/pipeline.md, stop 62).
    """
    import jiwer

    from lws_core.audio.tts import label_language

    by_accent: dict[str, list[tuple[str, str]]] = {}
    for r, h, v in zip(refs, hyps, voices, strict=True):
        if r.strip():
            by_accent.setdefault(label_language(v) if v else "unknown", []).append((r, h))
    out = {f"wer_accent.{a}": float(jiwer.wer([r for r, _ in p], [h for _, h in p])) for a, p in sorted(by_accent.items())}
    said = {"numbers": [0, 0], "words": [0, 0]}  # kind -> [missed, said]
    pairs = [(r, h) for p in by_accent.values() for r, h in p]
    if pairs:
        o = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
        for ref, chunks in zip(o.references, o.alignments, strict=True):
            for c in chunks:
                for w in ref[c.ref_start_idx : c.ref_end_idx]:
                    tally = said["numbers" if w.isdigit() else "words"]
                    tally[0] += c.type != "equal"
                    tally[1] += 1
    out.update({f"missed_{k}": m / n for k, (m, n) in said.items() if n})
    return out


def wer_interval(refs: list[str], hyps: list[str], confidence: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """A bootstrap interval for :func:`word_error_rate`, resampling whole sessions (scipy's BCa bootstrap).

    Why: the WER goal (<= 0.10) sits inside the noise of one draw of sessions. On 60 sessions the stop-53 recogniser
    read 0.097; on all 400 of the split, 0.101 (0.090-0.113). A figure without its interval cannot say whether the
    goal is met. The statistic is the pooled rate (errors over reference words), as jiwer computes it, so sessions
    weigh by their words. None where fewer than two sessions said something.
    """
    errors, words = session_errors(refs, hyps)
    return _pooled_bootstrap([errors], words, (1.0,), confidence, seed)


def wer_difference_interval(refs: list[str], hyps: list[str], base_hyps: list[str], confidence: float = 0.95,
                            seed: int = 0) -> tuple[float, float] | None:
    """A bootstrap interval for WER(hyps) - WER(base_hyps) on the same sessions, resampled in pairs: two recognisers
    compared on one draw of sessions, so the draw's own difficulty cancels out (their separate intervals overlap far
    more than their difference is uncertain)."""
    errors, words = session_errors(refs, hyps)
    base, _ = session_errors(refs, base_hyps)
    return _pooled_bootstrap([errors, base], words, (1.0, -1.0), confidence, seed)


def pretrain_encoder(
    cfg,  # noqa: ANN001 - LWSConfig
    data_dir: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    on_log: Any = None,
    eval_split: str = "test_seen",
) -> EncoderReport:
    """Train the CTC recogniser on the train split (``pretrain.encoder``), report WER on held-out voices, save.

    WER is measured on ``eval_split`` (default ``test_seen``: held-out voices saying
    training phrasings, so the figure is about hearing, not about words never seen).
    """
    t0 = time.time()
    sc, ac = cfg.schema_, cfg.pretrain.encoder
    steps, batch_size, learning_rate, seed, eval_sessions = ac.max_steps, ac.batch_size, ac.learning_rate, ac.seed, ac.eval_sessions
    unit_samples = int(round(sc.unit_s * sc.sample_rate))
    ctx = int(round(cfg.model.audio_context_s * sc.sample_rate))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data_dir = Path(data_dir)
    tok = dataset_tokenizer(data_dir)
    train = _dataset_train(cfg, data_dir, Path(out_dir), unit_samples, tok, progress)
    if ac.sessions:
        train += _extra_corpus(cfg, Path(out_dir), unit_samples, tok, progress)
    if ac.general_utterances:
        from lws_core.train.general_speech import general_sessions

        train += general_sessions(ac.general_utterances, ac.general_vocab, ac.corpus_seed, sc.unit_s, unit_samples, tok, progress)
    targets = [t for s in train for t in s.targets]
    tokens = [t for s in train for t in s.tokens]
    items = [it for s in train for it in s.items]
    if ac.targets == "tokens":
        vocab = CTCVocab.from_token_targets(tokens, tok)
        ids = [vocab.ids_for_tokens(t) for t in tokens]
    else:
        vocab = CTCVocab.letters() if ac.targets == "letters" else CTCVocab.from_texts(targets)
        ids = [vocab.to_ids(t) for t in targets]
    # units where nothing ends are most of a session; keep a quarter of them so blanks are still learnt
    speech = np.array([bool(t) for t in ids])
    keep = np.flatnonzero(speech | (rng.random(len(ids)) < 0.25))
    rec = build_recognizer(cfg.model.preset, None, unit_samples, ctx, sc.sample_rate, vocab)
    set_dropout(rec.speech.encoder, ac.dropout)
    feats = _kept_features(rec.speech.featurizer, train, keep, ctx)
    del train
    ids = [ids[i] for i in keep]
    paths = None
    if ac.aligned_weight > 0 and ac.targets == "tokens":
        positions = unit_positions(unit_samples)
        spread = ac.align == "spread"
        paths = torch.tensor([aligned_path([(vocab.ids_for_tokens(t), *rest) for t, *rest in items[i]], positions, spread) for i in keep])
    del items
    keep = np.arange(len(keep))
    opt = torch.optim.AdamW(rec.parameters(), lr=learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=max(steps, 1), pct_start=0.1)
    log = LossLog("ctc_loss", steps, "pretrain encoder", progress, on_log)
    rec.train()
    rec.speech.spec_augment, rec.speech.freq_warp = ac.spec_augment, ac.freq_warp
    with fast_dropout(rec.speech.encoder, ac.dropout):  # 5x cheaper than torch's CPU dropout (module doc)
        for step in range(1, steps + 1):
            pick = rng.choice(keep, size=min(batch_size, len(keep)), replace=False)
            with bf16_autocast(cfg.pretrain.bf16):
                log_probs = rec.from_features(feats[pick])
            loss = ctc_loss(log_probs.float(), [ids[i] for i in pick])
            if paths is not None:
                loss = loss + ac.aligned_weight * F.nll_loss(log_probs.float().flatten(0, 1), paths[pick].flatten())
            optimizer_step(loss, rec.parameters(), opt, sched)
            log.update(step, loss)
    rec.speech.spec_augment, rec.speech.freq_warp = False, 0.0
    set_dropout(rec.speech.encoder, 0.0)  # the saved recogniser (and any LWS stage training beside it) has none
    log.close()
    evals = _load_split(data_dir, eval_split, unit_samples, limit=eval_sessions, tok=tok) if eval_sessions and _has_rows(data_dir, eval_split) else []
    wer, interval, examples, breakdown = None, None, [], {}
    if evals:
        hyps = transcribe_sessions(rec, evals)
        refs = [" ".join(t for t in s.targets if t) for s in evals]
        wer, interval = word_error_rate(refs, hyps), wer_interval(refs, hyps)
        breakdown = {k: round(v, 4) for k, v in wer_breakdown(refs, hyps, [s.voice for s in evals]).items()}
        examples = [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps, strict=True))[:3]]
    out = save_encoder(rec, out_dir, EncoderMeta(sc.sample_rate, sc.unit_s, cfg.model.audio_context_s, rec.speech.featurizer.n_mels, wer))
    report = EncoderReport(str(out), steps, int(len(keep)), round(time.time() - t0, 1), round(log.ema or float("nan"), 4),
                           None if wer is None else round(wer, 4), len(evals), log.losses, examples,
                           None if interval is None else (round(interval[0], 4), round(interval[1], 4)), breakdown)
    (out / "pretrain_report.json").write_text(json.dumps(asdict(report), indent=2))
    return report


def save_encoder(rec: CTCRecognizer, out_dir: str | Path, meta: EncoderMeta) -> Path:
    """Whisper encoder (``save_pretrained``) + CTC head + ``lws_encoder.json``, written atomically."""
    import shutil

    from safetensors.torch import save_file

    out = Path(out_dir)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rec.speech.encoder.save_pretrained(str(tmp), safe_serialization=True)
    save_file({k: v.contiguous() for k, v in rec.head.state_dict().items()}, str(tmp / "ctc_head.safetensors"))
    (tmp / "ctc_vocab.json").write_text(json.dumps(rec.vocab.to_json()))
    meta.save(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out

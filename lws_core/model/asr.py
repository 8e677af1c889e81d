"""The speech-encoder stand-in: a Whisper-style encoder pretrained as a CTC speech recogniser.

The real LWS recipe starts from a pretrained speech encoder (Whisper-class). On
a laptop none exists, and a random-init encoder trained only through the LM
learns *when* the user talks, not *what* was said. So the encoder is first
trained to transcribe: a CTC head over letters on the synthesized user speech,
with targets from the word timings the synthesizer already has.

Per unit, the encoder sees ``context_s`` seconds of the previous unit's audio
before the unit itself (left context across the boundary, so a word that a
boundary splits is still heard whole) and emits, on the unit's own positions
only, the letters of the words that *end* in the unit — the words the data
pipeline counts as heard by the end of that unit. Those same positions are what
the LWS projector turns into the unit's K audio embeddings.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lws_core.audio.align import spoken_form
from lws_core.model.features import HOP, LogMel

# CTC output alphabet; index 0 is the blank.
ALPHABET = " abcdefghijklmnopqrstuvwxyz'"
BLANK = 0
ENCODER_META = "lws_encoder.json"


UNK = "<unk>"


class CTCVocab:
    """The recogniser's output symbols: spoken words (default) or letters; id 0 is the CTC blank.

    Words, because a tiny encoder trained for a minute learns to tell ~200 spoken
    words apart far sooner than it learns English spelling (measured: WER 0.97
    with letters after 600 steps); the LM downstream needs *which word*, not its
    spelling. Words never seen in training map to ``<unk>``.
    """

    def __init__(self, kind: str, symbols: list[str]) -> None:
        self.kind = kind
        self.symbols = symbols
        self.index = {s: i + 1 for i, s in enumerate(symbols)}
        self.token_ids: list[int] = []  # kind "tokens": the LM token id of each symbol

    @classmethod
    def letters(cls) -> CTCVocab:
        return cls("letters", list(ALPHABET))

    @classmethod
    def from_token_targets(cls, targets: list[list[int]], tok) -> CTCVocab:  # noqa: ANN001 - SchemaTokenizer
        """Symbols = the LM tokenizer's tokens that the targets use (saved as token strings)."""
        used = sorted({t for tg in targets for t in tg})
        v = cls("tokens", [str(x) for x in tok.token_strings(used)])
        v.token_ids = used
        return v

    @classmethod
    def from_texts(cls, texts: list[str]) -> CTCVocab:
        words = sorted({w for t in texts for w in t.split()})
        return cls("words", [UNK, *words])

    def __len__(self) -> int:
        return len(self.symbols) + 1

    def ids_for_tokens(self, token_ids: list[int]) -> list[int]:
        """LM token ids -> CTC symbol ids (kind "tokens"); unseen tokens are skipped."""
        pos = {t: i + 1 for i, t in enumerate(self.token_ids)}
        return [pos[t] for t in token_ids if t in pos]

    def to_ids(self, text: str) -> list[int]:
        if self.kind == "letters":
            return [self.index[c] for c in text if c in self.index]
        return [self.index.get(w, self.index[UNK]) for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        if self.kind == "tokens":  # byte-level BPE strings: Ġ marks a space
            return " ".join("".join(self.symbols[i - 1] for i in ids).replace("\u0120", " ").split())
        if self.kind == "letters":
            return " ".join("".join(self.symbols[i - 1] for i in ids).split())
        return " ".join(self.symbols[i - 1] for i in ids)

    def to_json(self) -> dict:
        return {"kind": self.kind, "symbols": self.symbols, "token_ids": self.token_ids}

    @classmethod
    def from_json(cls, d: dict) -> CTCVocab:
        v = cls(d["kind"], list(d["symbols"]))
        v.token_ids = [int(t) for t in d.get("token_ids", [])]
        return v


def greedy_path(log_probs: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Best path per row as (symbol id, position) of each emission (repeats collapsed, blanks dropped)."""
    out = []
    for row in log_probs.argmax(-1).tolist():
        em, prev = [], BLANK
        for pos, i in enumerate(row):
            if i != prev and i != BLANK:
                em.append((i, pos))
            prev = i
        out.append(em)
    return out


def greedy_decode(log_probs: torch.Tensor, vocab: CTCVocab | None = None) -> list[str]:
    """Best path per row: collapse repeats, drop blanks. [N, T, V] -> N strings."""
    vocab = vocab or CTCVocab.letters()
    best = log_probs.argmax(-1).tolist()
    out = []
    for row in best:
        ids, prev = [], BLANK
        for i in row:
            if i != prev and i != BLANK:
                ids.append(i)
            prev = i
        out.append(vocab.decode(ids))
    return out


def unit_positions(unit_samples: int) -> int:
    """Encoder positions that cover one unit (Whisper's conv stack halves the mel frames)."""
    frames = unit_samples // HOP
    return (frames - 1) // 2 + 1


def window_positions(unit_samples: int, context_samples: int) -> int:
    return unit_positions(unit_samples + context_samples)


def context_windows(units: np.ndarray | torch.Tensor, first: np.ndarray | torch.Tensor, context_samples: int):  # noqa: ANN201
    """[N, unit] unit audio (in session order) -> [N, context + unit] windows.

    ``first[i]`` is true where unit i starts a session. A window's context is the
    audio just before the unit in the same session (several units back when the
    context is longer than a unit), and silence before the session's start.
    """
    t = torch.as_tensor(units)
    if context_samples <= 0:
        return t
    n, u = t.shape
    f = torch.as_tensor(first, dtype=torch.bool, device=t.device)
    back = -(-context_samples // u)  # units of history a window can reach into
    hist = torch.zeros(n, back * u, dtype=t.dtype, device=t.device)
    start = 0  # index of the current session's first unit
    for i in range(n):
        if bool(f[i]):
            start = i
        for j in range(1, back + 1):
            if i - j < start:
                break
            hist[i, (back - j) * u : (back - j + 1) * u] = t[i - j]
    return torch.cat([hist[:, back * u - context_samples :], t], dim=1)


class UnitSpeechEncoder(nn.Module):
    """Log-mel + Whisper encoder over [context | unit]; returns hidden states of the unit's positions only."""

    def __init__(self, whisper_encoder: nn.Module, n_mels: int, unit_samples: int, context_samples: int, sample_rate: int = 16000) -> None:
        super().__init__()
        self.featurizer = LogMel(n_mels, sample_rate)
        self.encoder = whisper_encoder
        self.unit_samples = unit_samples
        self.context_samples = context_samples
        self.positions = unit_positions(unit_samples)
        self.spec_augment = False  # on while the recogniser pretrains (its speakers are few)
        self.freq_warp = 0.0  # likewise: the largest relative warp of the mel axis (0: off)

    @property
    def window_samples(self) -> int:
        return self.unit_samples + self.context_samples

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        if windows.shape[-1] != self.window_samples:
            raise ValueError(f"audio window has {windows.shape[-1]} samples, expected {self.window_samples}")
        return self.from_features(self.featurizer(windows))

    def from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """The same as ``forward`` on log-mel features the featurizer already made (they have no weights, so
        pretraining computes them once for every window instead of at every step)."""
        augment = None
        if self.training and (self.spec_augment or self.freq_warp > 0):
            augment = partial(_augment, masks=self.spec_augment, warp=self.freq_warp)
        total = window_positions(self.unit_samples, self.context_samples)
        return hidden_from_features(self.encoder, feats, total - self.positions, total, augment)


def unit_hidden(featurizer: nn.Module, encoder: nn.Module, windows: torch.Tensor, start: int, stop: int, augment=None) -> torch.Tensor:  # noqa: ANN001
    """Log-mel features of [context | unit] windows through a Whisper encoder; hidden states of positions
    ``start:stop`` (the unit's own). Shared by the recogniser and the LWS audio encoder, so both hear alike."""
    return hidden_from_features(encoder, featurizer(windows), start, stop, augment)


def hidden_from_features(encoder: nn.Module, feats: torch.Tensor, start: int, stop: int, augment=None) -> torch.Tensor:  # noqa: ANN001
    """:func:`unit_hidden` from the windows' log-mel features."""
    feats = feats.to(next(encoder.parameters()).dtype)
    if augment is not None:
        feats = augment(feats)
    need = 2 * encoder.config.max_source_positions  # Whisper's conv stack wants exactly this many frames
    if feats.shape[-1] < need:  # e.g. 0.25 s units: 25 frames for 13 positions
        feats = F.pad(feats, (0, need - feats.shape[-1]))
    return encoder(input_features=feats).last_hidden_state[:, start:stop]


def _augment(feats: torch.Tensor, masks: bool, warp: float) -> torch.Tensor:
    if warp > 0:
        feats = freq_warp(feats, warp)
    return spec_augment(feats) if masks else feats


def freq_warp(feats: torch.Tensor, max_warp: float) -> torch.Tensor:
    """Stretch or squeeze each example's mel axis by a random factor in [1 - max_warp, 1 + max_warp].

    Why: a vocal-tract-length-style perturbation (VTLP, Jaitly & Hinton 2013) on
    the mel bins. A held-out voice differs from the training voices mostly in its
    formant positions, which is what this moves; unlike SpecAugment's masks it
    hides nothing, so every frame still carries its word. Linear interpolation
    between bins; bins warped past the top repeat the top bin.
    """
    n, m, t = feats.shape
    alpha = 1 + (torch.rand(n, device=feats.device) * 2 - 1) * max_warp
    src = (torch.arange(m, device=feats.device)[None] * alpha[:, None]).clamp(max=m - 1)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    w = (src - lo).to(feats.dtype)[:, :, None]
    take = lambda idx: feats.gather(1, idx[:, :, None].expand(n, m, t))  # noqa: E731
    return take(lo) * (1 - w) + take(hi) * w


def spec_augment(feats: torch.Tensor, freq_masks: int = 1, freq_width: int = 4, time_masks: int = 1, time_width: int = 4) -> torch.Tensor:
    """SpecAugment (Park et al., 2019): zero random mel bands and time spans, per example.

    The synthesizer has a few dozen voices; without it the recogniser learns the
    training voices and misses held-out ones.
    """
    n, m, t = feats.shape
    out = feats.clone()
    floor = feats.amin(dim=(1, 2), keepdim=True)
    mask = torch.zeros_like(feats, dtype=torch.bool)
    for _ in range(freq_masks):
        w = torch.randint(0, freq_width + 1, (n,))
        f0 = (torch.rand(n) * (m - w)).long()
        idx = torch.arange(m)
        mask |= ((idx[None] >= f0[:, None]) & (idx[None] < (f0 + w)[:, None]))[:, :, None]
    for _ in range(time_masks):
        w = torch.randint(0, time_width + 1, (n,))
        t0 = (torch.rand(n) * (t - w)).long()
        idx = torch.arange(t)
        mask |= ((idx[None] >= t0[:, None]) & (idx[None] < (t0 + w)[:, None]))[:, None, :]
    return torch.where(mask, floor.expand_as(out), out)


class CTCRecognizer(nn.Module):
    """UnitSpeechEncoder + a linear CTC head over ``ALPHABET`` (+ blank)."""

    def __init__(self, speech: UnitSpeechEncoder, vocab: CTCVocab | None = None) -> None:
        super().__init__()
        self.speech = speech
        self.vocab = vocab or CTCVocab.letters()
        self.head = nn.Linear(speech.encoder.config.d_model, len(self.vocab))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.head(self.speech(windows)).log_softmax(-1)

    def from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """``forward`` on the windows' log-mel features (:meth:`UnitSpeechEncoder.from_features`)."""
        return self.head(self.speech.from_features(feats)).log_softmax(-1)


@dataclass(frozen=True)
class EncoderMeta:
    """What a pretrained encoder directory was made for; the LWS stage checks it before training."""

    sample_rate: int
    unit_s: float
    context_s: float
    n_mels: int
    wer: float | None = None
    source: str = "lws-ctc"

    def save(self, directory: Path) -> None:
        (directory / ENCODER_META).write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, directory: Path) -> EncoderMeta | None:
        p = Path(directory) / ENCODER_META
        if not p.is_file():
            return None
        raw = json.loads(p.read_text())
        return cls(**{k: raw[k] for k in ("sample_rate", "unit_s", "context_s", "n_mels") if k in raw},
                   wer=raw.get("wer"), source=raw.get("source", "lws-ctc"))


def ctc_loss(log_probs: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
    """Mean CTC loss per unit (units with no word end train towards all-blank)."""
    n, t, _ = log_probs.shape
    flat = torch.tensor([i for tg in targets for i in tg], dtype=torch.long)
    lengths = torch.tensor([len(tg) for tg in targets], dtype=torch.long)
    return F.ctc_loss(
        log_probs.transpose(0, 1).float(), flat, torch.full((n,), t, dtype=torch.long), lengths,
        blank=BLANK, reduction="mean", zero_infinity=True,
    )


_NUMERAL = re.compile(r"^[-\u2212]?(\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(st|nd|rd|th)?$")
_EDGE_PUNCT = ".,;:!?\"'()[]{}<>\u201c\u201d\u2026"


def heard_form(words: list[str]) -> str:
    """What a recogniser writes for spoken words: lower case, no punctuation, numbers as digits.

    "What is 42 + 7?" -> "what is 42 plus 7". This is the normalised transcript a
    Whisper-class ASR emits (it writes "42", not "forty two"), and it is the text
    the LLM reads in the audio slots: spelling numbers out would make a small
    backbone learn number words -> digits before it can compute anything (the
    measured stand-in copied "ninety or fifty nine" as "97 vs 59"). Everything
    but numerals keeps :func:`spoken_form`'s spelling (symbols said as words).
    """
    out: list[str] = []
    for token in " ".join(words).split():
        t = unicodedata.normalize("NFKC", token).lower().strip(_EDGE_PUNCT)
        m = _NUMERAL.match(t)
        if m:
            sign = "minus " if t[0] in "-\u2212" else ""
            out.append(sign + t.lstrip("-\u2212").replace(",", ""))
        elif t.endswith("%") and _NUMERAL.match(t[:-1]):
            out.append(t[:-1].replace(",", "") + " percent")
        else:
            spelled = spoken_form([token])
            if spelled:
                out.append(spelled)
    return " ".join(out)


def heard_speech(session) -> list[str]:  # noqa: ANN001 - schema.Session
    """Per unit, the transcript of the user words heard in it ("what is 42")."""
    from lws_core.schema import heard_words

    return [heard_form(ws) for ws in heard_words(session)]


def place_in_slots(items: list[tuple[list[int], float]], k: int, filler: int) -> list[int]:
    """K slots for one unit: each item (token ids, where its end falls in the unit, 0..1) ends near its
    time, after the previous item; nothing else fills the slots. Tokens past slot K are dropped (rare:
    a unit of fast speech holds ~5 tokens)."""
    slots = [filler] * k
    nxt = 0
    for ids, frac, *_ in items:
        if not ids:
            continue
        end_slot = min(k - 1, max(0, int(frac * k)))
        start = max(nxt, min(end_slot - len(ids) + 1, k - len(ids)))
        for j, t in enumerate(ids):
            if start + j < k:
                slots[start + j] = t
        nxt = min(k, start + len(ids))
    return slots


def heard_items(session, tok, mishear: Callable[[str], str] | None = None) -> list[list[tuple[list[int], float, float]]]:  # noqa: ANN001 - schema.Session, SchemaTokenizer
    """Per unit, each heard word as (its transcript's token ids, where its end falls in the unit, 0..1,
    where its start falls, in unit lengths from the unit's start: negative when it began earlier).

    A word belongs to the unit by whose end it has ended (the data pipeline's
    "heard" rule); its transcript is :func:`heard_form` (digits as digits), passed through ``mishear``
    when given (a recogniser's errors, simulated: ``""`` drops the word).
    """
    n, u_s = len(session.units), session.unit_s
    per_unit: list[list[tuple[list[int], float]]] = [[] for _ in range(n)]
    for w in session.user_words:
        u = max(0, int(np.ceil(w.end / u_s - 1e-9)) - 1)
        text = heard_form([w.text])
        if mishear is not None and text:
            text = mishear(text)
        if u >= n or not text:
            continue
        per_unit[u].append((tok.encode_text(" " + text), (w.end - u * u_s) / u_s - 1e-6, (w.start - u * u_s) / u_s))
    return per_unit


def heard_slots(session, tok, k: int, mishear: Callable[[str], str] | None = None) -> list[list[int]]:  # noqa: ANN001 - schema.Session, SchemaTokenizer
    """The text view of what the user said: per unit, K token ids laid out like the audio slots.

    Each heard word's transcript tokens (:func:`heard_items`) sit near its end
    time within the unit; ``<|audio|>`` fills the silent slots. The LWS audio
    path fills the same K slots from the speech encoder's CTC posteriors, so the
    backbone sees one interface from text and from speech.
    """
    return [place_in_slots(items, k, tok.special.audio) for items in heard_items(session, tok, mishear)]


def aligned_path(items: list[tuple], positions: int, spread: bool = False) -> list[int]:
    """A unit's CTC path fixed by the synthesizer's word timings: each word's symbols end at the word's
    end position, a blank between two equal symbols, blank everywhere else (what a recogniser that
    emits each word as it ends would output; ``items`` hold (CTC symbol ids, end in unit[, start in unit])).

    Why: the synthesizer knows when every word ends, so the recogniser can be told *where* to emit, not
    only *what* (dense, per-position supervision: cross-entropy against this path). CTC alone had to find
    the alignment itself and, after 1,000 steps, still misheard half of its own training words.

    ``spread=True`` (with a start in the item) puts symbol i of n at (i+1)/n of the word's span instead,
    clipped to the unit: "35" said as "thirty-five" emits ``Ġ3`` about where "thirty" ends and ``5`` at
    the end. Why: with both digits at the end, the recogniser had to remember "thirty" until "five" was
    over, and mostly did not (held-out voices: "35" -> "5", "24" -> "4"; half the two-digit numbers wrong).
    """
    path = [BLANK] * positions
    nxt = 0
    for ids, frac, *rest in items:
        if not ids:
            continue
        if spread and rest and len(ids) > 1 and (after := _place_spread(path, ids, frac, rest[0], positions, nxt)):
            nxt = after
            continue
        spaced: list[int] = []
        for t in ids:
            if spaced and spaced[-1] == t:
                spaced.append(BLANK)
            spaced.append(t)
        end = min(positions - 1, max(0, int(frac * positions)))
        start = max(nxt, min(end - len(spaced) + 1, positions - len(spaced)))
        if start == nxt and nxt > 0 and path[nxt - 1] == spaced[0]:  # right after an equal symbol: a blank first
            start += 1
        for j, t in enumerate(spaced):
            if 0 <= start + j < positions:
                path[start + j] = t
        nxt = min(positions, start + len(spaced))
    return path


def _place_spread(path: list[int], ids: list[int], end: float, start: float, positions: int, nxt: int) -> int | None:
    """Write ``ids`` into ``path`` at (i+1)/n of the span [start, end] (unit fractions), each after the last
    symbol and a blank after an equal one; the position after the last, or None (path untouched) when they
    do not fit before the unit ends."""
    n, lo = len(ids), max(0.0, start)
    want = [min(positions - 1, max(0, int((lo + (end - lo) * (i + 1) / n) * positions))) for i in range(n)]
    at, prev, spots = nxt, (path[nxt - 1] if nxt > 0 else BLANK), []
    for t, w in zip(ids, want, strict=True):
        p = max(w, at)
        if p == at and prev == t:  # right after an equal symbol: a blank between
            p += 1
        if p >= positions:
            return None
        spots.append(p)
        at, prev = p + 1, t
    for t, p in zip(ids, spots, strict=True):
        path[p] = t
    return at


def slots_from_path(path: list[tuple[int, int]], vocab: CTCVocab, positions: int, k: int, filler: int) -> list[int]:
    """A greedy CTC path over LM tokens (one unit) -> K slots laid out as the text view lays out heard words
    (the cascade): the tokens are grouped into words (a byte-level BPE token that opens with ``Ġ`` opens a
    word) and each word's tokens end in the slot where its last token was emitted.

    Why words: a recogniser may emit a word's tokens apart (the spread alignment emits ``Ġ3`` of "35" where
    "thirty" ends); the backbone read every heard number with its digits side by side."""
    if vocab.kind != "tokens":
        return [filler] * k
    words: list[tuple[list[int], float]] = []
    for i, pos in path:
        sym, frac = vocab.symbols[i - 1], (pos + 0.5) / positions
        if words and not sym.startswith("\u0120"):
            words[-1] = ([*words[-1][0], vocab.token_ids[i - 1]], frac)
        else:
            words.append(([vocab.token_ids[i - 1]], frac))
    return place_in_slots(words, k, filler)


def load_recognizer(path: str | Path) -> CTCRecognizer:
    """The CTC recogniser saved by ``lws pretrain encoder`` (the cascade baseline's ASR)."""
    from safetensors.torch import load_file
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from lws_core.errors import InputError

    path = Path(path)
    meta = EncoderMeta.load(path)
    if meta is None or not (path / "ctc_head.safetensors").is_file():
        raise InputError(f"{path}: not an encoder made by `lws pretrain encoder` (no CTC head)")
    enc = WhisperEncoder.from_pretrained(str(path), local_files_only=True)
    unit = int(round(meta.unit_s * meta.sample_rate))
    speech = UnitSpeechEncoder(enc, meta.n_mels, unit, int(round(meta.context_s * meta.sample_rate)), meta.sample_rate)
    vocab_file = path / "ctc_vocab.json"
    vocab = CTCVocab.from_json(json.loads(vocab_file.read_text())) if vocab_file.is_file() else CTCVocab.letters()
    rec = CTCRecognizer(speech, vocab)
    rec.head.load_state_dict(load_file(str(path / "ctc_head.safetensors")))
    return rec.eval()


@torch.inference_mode()
def unit_log_probs(rec: CTCRecognizer, units: np.ndarray, batch: int = 64) -> torch.Tensor:
    """[n, P, V] CTC log-posteriors for the units of one session (each unit hears the previous one's tail)."""
    first = np.zeros(len(units), dtype=bool)
    first[:1] = True
    win = context_windows(torch.from_numpy(np.ascontiguousarray(units, dtype=np.float32)), first, rec.speech.context_samples)
    return torch.cat([rec(win[i : i + batch]) for i in range(0, win.shape[0], batch)]) if len(win) else torch.zeros(0)


def transcribe_units(rec: CTCRecognizer, units: np.ndarray, batch: int = 64) -> list[str]:
    """One hypothesis per unit of one session, as text."""
    return greedy_decode(unit_log_probs(rec, units, batch), rec.vocab) if len(units) else []

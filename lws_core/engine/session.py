"""A streaming full-duplex session: one ``step()`` per unit of user audio, state kept in the object.

In the spirit of Moshi's ``streaming()`` + ``step()``: the KV cache, the written
document, the speech queue and the clock live here, and each step costs the same
whatever the session's length (the cache is extended, never recomputed).

Per unit: prefill ``<|unit|>`` + K audio embeddings onto the cache (together with
the previous unit's closing ``<|end|>``, saving one forward), then decode
state → write → say under the schema grammar (``UnitParser``) and the budgets.
A budget hit force-closes the segment, so every unit parses.

Speech policy: a unit's spoken text is rendered by the TTS and queued; the queue
plays continuously, one unit of audio per step, starting in the next unit. Speech
longer than a unit spills into the following units. When the model returns to
``<|listen|>`` while speech is queued (barge-in), the queue is dropped at once and
never spoken later.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from lws_core.engine.types import EngineConfig, UnitOutput
from lws_core.schema import Phase, UnitParser, Word


@dataclass
class _UnitRecord:
    audio_emb: torch.Tensor  # [K, H]
    gen_ids: list[int] = field(default_factory=list)


class StreamingSession:
    """Owns one conversation's state. Create with ``Engine.session()``."""

    def __init__(self, engine, system: str | None = None, naive: bool = False) -> None:  # noqa: ANN001 - Engine
        self.engine = engine
        self.model = engine.model
        self.cfg: EngineConfig = engine.config
        self.tok = self.model.tokenizer
        self.ids = self.tok.special
        self.spec = self.model.spec
        self.system = system
        self.naive = naive
        self.index = 0
        self.document = ""
        self.rebuilds = 0
        self._cache = None
        self._naive_embeds: list[torch.Tensor] = []
        self._pending: list[int] = []
        self._history: deque[_UnitRecord] = deque(maxlen=self.cfg.keep_units)
        self._queue = np.zeros(0, dtype=np.float32)
        self._queue_words: list[Word] = []  # times relative to the queue's start
        self._gen = torch.Generator().manual_seed(self.cfg.seed)
        self._device = next(self.model.parameters()).device
        self._dtype = self.model.lm.get_input_embeddings().weight.dtype
        self._per_unit_max = 1 + self.spec.audio_tokens_per_unit + 4 + self.spec.max_write_tokens + self.spec.max_say_tokens + 2
        self.tokens_fed_last_step = 0
        self._reset_cache(self._prefix_ids(""))

    # -- context -------------------------------------------------------------------------
    def __enter__(self) -> StreamingSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._cache = None
        self._naive_embeds.clear()
        self._history.clear()

    @property
    def context_tokens(self) -> int:
        if self.naive:
            return sum(e.shape[1] for e in self._naive_embeds)
        return 0 if self._cache is None else int(self._cache.get_seq_length())

    def _prefix_ids(self, document_tail: str) -> list[int]:
        text = self.system or ""
        if document_tail:
            text = (text + "\n\n" if text else "") + document_tail
        if not text:
            return []
        return [self.ids.session, *self.tok.encode_text(text, where="session prompt"), self.ids.end]

    def _reset_cache(self, prefix: list[int]) -> None:
        from transformers import DynamicCache

        self._cache = None if self.naive else DynamicCache()
        self._naive_embeds = []
        if prefix:
            self._forward(self._embed_ids(prefix))

    # -- model calls ---------------------------------------------------------------------
    def _embed_ids(self, ids: list[int]) -> torch.Tensor:
        t = torch.tensor([ids], dtype=torch.long, device=self._device)
        return self.model.lm.get_input_embeddings()(t)

    def _forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """Feed embeddings [1, n, H]; return the next-token logits."""
        self.tokens_fed_last_step += embeds.shape[1]
        if self.naive:  # baseline: recompute the whole history every call
            self._naive_embeds.append(embeds)
            full = torch.cat(self._naive_embeds, dim=1)
            out = self.model.lm(inputs_embeds=full, use_cache=False, logits_to_keep=1)
        else:
            out = self.model.lm(inputs_embeds=embeds, cache=self._cache, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float()

    def _choose(self, logits: torch.Tensor, allowed: frozenset[int], text_ok: bool) -> int:
        mask = self.engine.text_mask.clone() if text_ok else torch.zeros_like(self.engine.text_mask)
        for a in allowed:
            mask[a] = True
        logits = logits[: mask.shape[0]].masked_fill(~mask[: logits.shape[0]], float("-inf"))
        if self.cfg.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / self.cfg.temperature, dim=-1)
        if self.cfg.top_p < 1.0:
            sorted_p, idx = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, 0) - sorted_p < self.cfg.top_p
            probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
        return int(torch.multinomial(probs / probs.sum(), 1, generator=self._gen))

    # -- sliding window --------------------------------------------------------------------
    def _maybe_slide(self) -> None:
        if self.context_tokens + self._per_unit_max <= self.cfg.max_context_tokens:
            return
        doc_tail = ""
        if self.cfg.keep_document_tokens and self.document:
            ids = self.tok.encode_text(self.document.replace("<|", "< |"))
            doc_tail = self.tok.decode_text(ids[-self.cfg.keep_document_tokens :])
        self._reset_cache(self._prefix_ids(doc_tail))
        self._pending = []
        kept = list(self._history)
        while kept:
            need = sum(1 + r.audio_emb.shape[0] + len(r.gen_ids) for r in kept)
            if self.context_tokens + need + self._per_unit_max <= self.cfg.max_context_tokens:
                break
            kept.pop(0)
        if kept:
            parts = []
            for r in kept:
                parts += [self._embed_ids([self.ids.unit]), r.audio_emb.unsqueeze(0), self._embed_ids(r.gen_ids)]
            self._forward(torch.cat(parts, dim=1))
        self._history = deque(kept, maxlen=self.cfg.keep_units)
        self.rebuilds += 1

    # -- the step ------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, audio_unit: np.ndarray) -> UnitOutput:
        """Consume one unit of user audio (float32, 16 kHz, exactly ``spec.unit_samples``)."""
        t0 = time.perf_counter()
        self.tokens_fed_last_step = 0
        n = self.spec.unit_samples
        audio = np.asarray(audio_unit, dtype=np.float32).reshape(-1)
        if audio.shape[0] != n:
            audio = np.pad(audio[:n], (0, max(0, n - audio.shape[0])))
        if not np.isfinite(audio).all():
            audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
        self._maybe_slide()
        audio_emb = self.model.audio(torch.from_numpy(audio).to(self._device).unsqueeze(0)).to(self._dtype)[0]
        prefill = torch.cat([self._embed_ids([*self._pending, self.ids.unit]), audio_emb.unsqueeze(0)], dim=1)
        logits = self._forward(prefill)
        t_prefill = time.perf_counter()

        parser = UnitParser(self.tok, start=Phase.STATE)
        gen: list[int] = []
        n_write = n_say = 0
        forced = False
        while True:
            allowed, text_ok = parser.allowed_special(), parser.text_allowed()
            token = self._choose(logits, allowed, text_ok)
            over = (parser.phase == Phase.WRITE and n_write >= self.spec.max_write_tokens) or (
                parser.phase == Phase.SAY and n_say >= self.spec.max_say_tokens
            )
            if over and token not in self.tok.special_set:
                # budget hit while the model wanted more text: force-close the segment
                token = self.ids.say if parser.phase == Phase.WRITE else self.ids.end
                forced = True
            phase = parser.phase
            done = parser.feed(token)
            gen.append(token)
            if token not in self.tok.special_set:
                n_write += phase == Phase.WRITE
                n_say += phase == Phase.SAY
            if done is not None:
                break
            logits = self._forward(self._embed_ids([token]))
        self._pending = [gen[-1]]  # the closing <|end|> enters the cache with the next unit's prefill
        self._history.append(_UnitRecord(audio_emb.detach(), gen))
        t_decode = time.perf_counter()

        unit = done
        barge_in = unit.state == "listen" and self._queue.shape[0] > 0
        if barge_in:
            self._queue = np.zeros(0, dtype=np.float32)
            self._queue_words = []
        if unit.say.strip() and self.cfg.speak:
            speech = self._speak(unit.say.strip(), unit.issues)
            if speech is not None:
                offset = self._queue.shape[0] / self.spec.sample_rate
                self._queue_words += [Word(text=w.text, start=w.start + offset, end=w.end + offset) for w in speech.words]
                self._queue = np.concatenate([self._queue, speech.audio.astype(np.float32)])
        t_tts = time.perf_counter()

        chunk, words = self._pop_speech()
        self.document += unit.write
        out = UnitOutput(
            index=self.index,
            state=unit.state,
            write=unit.write,
            say=unit.say,
            eot=unit.eot,
            forced=forced or unit.forced,
            speech=chunk,
            speech_words=words,
            barge_in=barge_in,
            timings={
                "prefill_ms": (t_prefill - t0) * 1000,
                "decode_ms": (t_decode - t_prefill) * 1000,
                "tts_ms": (t_tts - t_decode) * 1000,
                "total_ms": (time.perf_counter() - t0) * 1000,
                "tokens_fed": float(self.tokens_fed_last_step),
                "write_tokens": float(n_write),
                "say_tokens": float(n_say),
                "context_tokens": float(self.context_tokens),
            },
            issues=list(unit.issues),
        )
        self.index += 1
        return out

    def _speak(self, text: str, issues: list[str]):  # noqa: ANN202
        """Render speech; symbols the TTS cannot say are dropped (and noted) instead of failing the session."""
        from lws_core.audio.tts import UnspeakableError

        try:
            return self.engine.tts.synthesize(text)
        except UnspeakableError:
            cleaned = "".join(c if (c.isalnum() or c in " .,;:!?'-%") and c.isprintable() and c != "\ufffd" else " " for c in text)
            cleaned = " ".join(cleaned.split())
            issues.append(f"unspeakable symbols dropped from {text!r}")
            if not any(c.isalnum() for c in cleaned):
                return None
            try:
                return self.engine.tts.synthesize(cleaned)
            except UnspeakableError:
                issues.append(f"nothing speakable in {text!r}")
                return None

    def _pop_speech(self) -> tuple[np.ndarray, list[Word]]:
        """Take one unit of queued speech to play during the next unit; word times in the output stream."""
        n = self.spec.unit_samples
        if self._queue.shape[0] == 0:
            return np.zeros(0, dtype=np.float32), []
        chunk = self._queue[:n]
        if chunk.shape[0] < n:
            chunk = np.pad(chunk, (0, n - chunk.shape[0]))
        self._queue = self._queue[n:]
        t_out = (self.index + 1) * self.spec.unit_s  # this chunk plays during the next unit
        unit_s = n / self.spec.sample_rate
        words = [Word(text=w.text, start=w.start + t_out, end=w.end + t_out) for w in self._queue_words if w.start < unit_s]
        self._queue_words = [
            Word(text=w.text, start=w.start - unit_s, end=max(w.end - unit_s, w.start - unit_s))
            for w in self._queue_words
            if w.start >= unit_s
        ]
        return chunk, words

"""A streaming full-duplex session: one ``step()`` per unit of user audio, state kept in the object.

In the spirit of Moshi's ``streaming()`` + ``step()``: the KV cache, the written
document, the speech queue and the clock live here, and each step costs the same
whatever the session's length (the cache is extended, never recomputed).

Per unit: prefill ``<|unit|>`` + K audio embeddings onto the kept cache, then
decode state → write → say under the schema grammar (``UnitParser``) and the
budgets. Tokens the grammar forces (``<|write|>`` after the state, ``<|end|>``
after ``<|eot|>`` or closing a listen unit) are not worth a model call of their
own: they are queued and enter the cache together with the next token that
needs logits, or with the next unit's prefill. A budget hit closes the segment
(the closing tokens go into the cache), so every unit parses.

Speech policy: a unit's spoken text is rendered by the TTS and appended to a
queue; the queue plays continuously, one unit of audio per step, starting in the
next unit. Speech longer than a unit spills into the following units (and new
speech waits behind it). When the model returns to ``<|listen|>`` while speech is
queued (barge-in), the queue is dropped at once and never spoken later.

Context policy: see :meth:`StreamingSession._maybe_slide`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lws_core.engine.activity import SpeechActivity
from lws_core.engine.types import EngineConfig, SessionHost, UnitOutput
from lws_core.errors import InputError
from lws_core.schema import Phase, UnitParser, Word


@dataclass(frozen=True)
class DecodeContext:
    """What a decoding policy sees before each token of a unit."""

    unit: int
    phase: Phase
    state: str | None  # the state chosen so far in this unit (None before the state token)
    allowed: frozenset[int]  # schema tokens the grammar accepts now
    text_allowed: bool  # whether plain text may come (False at a budget)
    n_write: int
    n_say: int


Policy = Callable[[DecodeContext], "int | None"]
"""Returns the next token id, or None to let the model choose. Lets tests script states
(barge-in) through the real decoding loop; the choice must obey the grammar."""


@dataclass
class FeedRequest:
    """A session asks its engine to feed ``embeds`` [1, n, H] at ``start``; the answer is the
    last position's logits (or None when ``want_logits`` is False)."""

    session: StreamingSession
    embeds: torch.Tensor
    start: int
    want_logits: bool


@dataclass
class AudioRequest:
    """A session asks its engine to encode one unit's audio ``window`` (with its left context);
    the answer is the unit's [K, H] audio embeddings."""

    window: np.ndarray


Request = FeedRequest | AudioRequest
StepGen = Generator[Request, Any, Any]
"""A unit's work as a coroutine: it yields the model calls it needs and receives their answers,
so an engine can answer one session's calls alone (``step``) or many sessions' calls in shared
batched forwards (``Engine.step_many``). The session's logic is the same either way."""


@dataclass
class _UnitRecord:
    audio_emb: torch.Tensor  # [K, H]
    gen_ids: list[int] = field(default_factory=list)


class StreamingSession:
    """Owns one conversation's state. Create with ``Engine.session()``; use as a context manager.

    ``naive=True`` is the benchmark baseline: every unit rebuilds the cache from the
    whole history (what a plain ``generate`` over the transcript does). ``trace=True``
    records every embedding fed and every logits vector used, so tests can compare the
    kept cache against one full recompute of the same prefix.
    """

    def __init__(
        self,
        engine: SessionHost,
        system: str | None = None,
        naive: bool = False,
        policy: Policy | None = None,
        trace: bool = False,
    ) -> None:
        self.engine = engine
        self.model = engine.model
        self.cfg: EngineConfig = engine.config
        self.tok = self.model.tokenizer
        self.ids = self.tok.special
        self.spec = self.model.spec
        self.system = system
        self.naive = naive
        self.policy = policy
        # a policy may ask for its tokens to be fed one forward each, as sampled ones are (the server's
        # warm-up times scripted units, which must cost what decoded ones do); by default scripted tokens
        # wait for the next model call, as the grammar's forced ones do
        self._feed_scripted = bool(getattr(policy, "feed_each_token", False))
        self.trace = trace
        self.index = 0
        self.document = ""
        self.rebuilds = 0
        self.tokens_fed_last_step = 0
        self.trace_logits: list[tuple[int, torch.Tensor]] = []  # (position in the context, logits)
        self._cache = None
        self._n_ctx = 0  # tokens in the context (cache length, or the naive history's length)
        self._fed: list[
            torch.Tensor
        ] = []  # every embedding chunk fed since the last rebuild (naive/trace only)
        self._pending: list[int] = []  # chosen tokens not yet fed (they go with the next forward)
        self._last_state = "listen"  # the previous unit's state: a session starts listening
        self._new_unit = False  # naive baseline: the next forward starts a unit (recompute everything)
        self._lock = threading.Lock()  # one step at a time; close() waits for it
        self._history: deque[_UnitRecord] = deque(maxlen=self.cfg.keep_units)
        self._queue = np.zeros(0, dtype=np.float32)
        self._queue_words: list[Word] = []  # times relative to the queue's start
        self._audio_tail = np.zeros(self.spec.context_samples, dtype=np.float32)  # the encoder's left context
        # the endpoint fallback's view of the user: a causal energy gate over the input (engine.endpoint_timeout_s)
        self._activity = SpeechActivity(self.spec.sample_rate) if self.cfg.endpoint_timeout_s else None
        self._spoke_until = 0.0  # input time by which the model's last speaking unit ended
        self._endpointed = False  # this unit's turn was taken by the endpoint fallback
        self._device = next(self.model.parameters()).device
        self._dtype = self.model.lm.get_input_embeddings().weight.dtype
        self._gen = torch.Generator(device=self._device).manual_seed(self.cfg.seed)
        # the most one unit can add to the context: pending (≤3) + <|unit|> + K + state + <|write|>
        # + write + <|say|> + say + <|eot|> + <|end|>
        self.per_unit_max = (
            3
            + 1
            + self.spec.audio_tokens_per_unit
            + 2
            + self.spec.max_write_tokens
            + 1
            + self.spec.max_say_tokens
            + 2
        )
        need = 2 * (
            self._prefix_len_bound() + self.per_unit_max
        )  # the kept half must hold the prompt, the rest a unit
        if self.cfg.max_context_tokens < need:
            from lws_core.errors import ConfigError

            raise ConfigError(
                f"engine.max_context_tokens={self.cfg.max_context_tokens} is too small: the session prompt, the kept "
                f"document and a unit need twice {need // 2}"
            )
        with torch.inference_mode():
            self._drive(self._reset_cache(self._prefix_ids([])))

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> StreamingSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the cache and queues (the session cannot step afterwards). Waits for a step in flight:
        a server may close a session from another worker thread than the one stepping it."""
        with self._lock:
            if self._cache is not None and hasattr(self._cache, "free_slot"):
                self._cache.free_slot()  # its pool slot goes to the next session at once, not at garbage collection
            self._cache = None
            self._fed.clear()
            self._history.clear()
            self._queue = np.zeros(0, dtype=np.float32)
            self._queue_words = []

    @property
    def closed(self) -> bool:
        return self._cache is None

    @property
    def context_tokens(self) -> int:
        """Tokens the model attends to now (cache length; the naive history's length)."""
        return self._n_ctx

    @property
    def time_s(self) -> float:
        """The session clock: seconds of user audio consumed."""
        return self.index * self.spec.unit_s

    @property
    def queued_speech_s(self) -> float:
        return self._queue.shape[0] / self.spec.sample_rate

    # -- context -------------------------------------------------------------------------
    def _prefix_len_bound(self) -> int:
        return len(self._prefix_ids([0] * self.cfg.keep_document_tokens))

    def _prefix_ids(self, document_tail: list[int]) -> list[int]:
        """``<|session|> system [\n\n document tail] <|end|>`` — the training format of the session prompt."""
        ids = self.tok.encode_text(self.system, where="session prompt") if self.system else []
        if document_tail:
            ids = [*ids, *(self.tok.encode_text("\n\n") if ids else []), *document_tail]
        if not ids and self.system is None:
            return []
        return [self.ids.session, *ids, self.ids.end]

    def _new_cache(self):  # noqa: ANN202 - StaticKV (fused path) or DynamicCache (HF forward)
        """An empty cache, reusing this session's buffer when there is one (window slides, naive rebuilds)."""
        fast = self.engine.fast_path
        if fast is None:
            # transformers' cache classes: imported only for the HF forward
            from lws_core.engine.cache import kept_cache

            return kept_cache()
        if self._cache is not None:
            self._cache.reset()
            return self._cache
        kv_dtype = self._dtype if self.cfg.kv_dtype == "model" else getattr(torch, self.cfg.kv_dtype)
        # a compiled single-token step (engine.compile_decode) is guarded on its cache's layout, compiled on a
        # buffer of its own: such sessions keep one (a pool slot's view would recompile it)
        return fast.new_kv(self.cfg.max_context_tokens, self._device, kv_dtype, pooled=not self.cfg.compile_decode)

    def _reset_cache(self, prefix: list[int]) -> StepGen:
        self._cache = self._new_cache()
        self.prefix_ids = prefix
        self._n_ctx = 0
        self._fed = []
        self.trace_logits = []
        if prefix:
            yield from self._forward(self._embed_ids(prefix), want_logits=False)

    def _drive(self, gen: StepGen) -> Any:
        """Run a coroutine to its end, answering its calls one at a time with the engine."""
        try:
            req = next(gen)
            while True:
                req = gen.send(self.engine.execute([req])[0])
        except StopIteration as stop:
            return stop.value

    def _maybe_slide(self) -> StepGen:
        """Sliding window: keep the cache under ``max_context_tokens``.

        When the next unit could overflow, the cache is rebuilt **once** from the
        session prompt, a compact copy of the written document (its last
        ``keep_document_tokens`` tokens, re-prefilled inside the prompt) and the
        most recent units verbatim (audio embeddings + generated tokens, at most
        ``keep_units``, and no more than fill half the window). The rebuild is one
        prefill; the following units extend the rebuilt cache again until it fills
        up, so rebuilds are rare (at least ``max_context_tokens / 2`` tokens apart).
        Memory is therefore bounded by ``max_context_tokens`` whatever the session length.
        """
        if self._n_ctx + self.per_unit_max <= self.cfg.max_context_tokens:
            return
        doc_tail: list[int] = []
        if self.cfg.keep_document_tokens and self.document.strip():
            doc_tail = self.tok.encode_text(self.document.replace("<|", "< |"))[
                -self.cfg.keep_document_tokens :
            ]
        yield from self._reset_cache(self._prefix_ids(doc_tail))
        self._pending = []  # the last kept unit carries its own closing tokens
        kept = list(self._history)
        budget = self.cfg.max_context_tokens // 2 - self._n_ctx  # leave half the window free: rebuild rarely
        while kept and sum(1 + r.audio_emb.shape[0] + len(r.gen_ids) for r in kept) > budget:
            kept.pop(0)
        if kept:
            parts = []
            for r in kept:
                parts += [
                    self._embed_ids([self.ids.unit]),
                    r.audio_emb.unsqueeze(0),
                    self._embed_ids(r.gen_ids),
                ]
            yield from self._forward(torch.cat(parts, dim=1), want_logits=False)
        self._history = deque(kept, maxlen=self.cfg.keep_units)
        self.rebuilds += 1

    # -- model calls ---------------------------------------------------------------------
    def _embed_ids(self, ids: list[int]) -> torch.Tensor:
        t = torch.tensor([ids], dtype=torch.long, device=self._device)
        return self.model.lm.get_input_embeddings()(t)

    def _forward(self, embeds: torch.Tensor, want_logits: bool = True) -> StepGen:
        """Feed embeddings [1, n, H] onto the context; return the next-token logits (a coroutine)."""
        self.tokens_fed_last_step += embeds.shape[1]
        if self.naive or self.trace:
            self._fed.append(embeds)
        start = self._n_ctx
        if self.naive and want_logits and self._n_ctx > 0 and self._new_unit:
            # baseline: the first call of each unit recomputes the whole history (like generate()
            # over the transcript), then decodes within the unit on that fresh cache.
            self._new_unit = False
            self._cache = self._new_cache()
            self.tokens_fed_last_step += self._n_ctx
            embeds_in, start = torch.cat(self._fed, dim=1), 0
        else:
            embeds_in = embeds
        logits = yield FeedRequest(self, embeds_in, start, want_logits)
        self._n_ctx += embeds.shape[1]
        if logits is None:
            return None
        logits = logits.float()
        if self.trace:
            self.trace_logits.append((self._n_ctx - 1, logits.detach().clone()))
        return logits

    def _choose(
        self, logits: torch.Tensor, allowed: frozenset[int], text_ok: bool, greedy: bool = False, spoken: bool = False
    ) -> int:
        mask = self.engine.allowed_mask(allowed, text_ok, spoken)
        logits = logits[: mask.shape[0]].masked_fill(~mask[: logits.shape[0]], float("-inf"))
        if greedy or self.cfg.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / self.cfg.temperature, dim=-1)
        if self.cfg.top_p < 1.0:
            sorted_p, idx = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, 0) - sorted_p < self.cfg.top_p
            probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
        return int(torch.multinomial(probs / probs.sum(), 1, generator=self._gen))

    def _sync(self) -> float:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        return time.perf_counter()

    # -- the step ------------------------------------------------------------------------
    def step(self, audio_unit: np.ndarray, heard: list[int] | None = None) -> UnitOutput:
        """Consume one unit of user audio (float32, 16 kHz, ``spec.unit_samples`` long; a shorter
        final block is zero-padded). Returns the unit's output; its ``speech`` plays during the next unit.

        ``heard`` (K token ids) replaces the unit's audio by the text of what was said
        in it, laid out in the K slots as in the text view a backbone is pretrained
        on: the text ceiling and the ASR→LLM cascade run through this same loop.
        """
        with self._lock:
            if self._cache is None:
                raise RuntimeError("session is closed")
            with torch.inference_mode():
                return self._drive(self._step(audio_unit, heard))

    def _audio_embeddings(self, audio: np.ndarray) -> StepGen:
        """[K, H] for one unit, the encoder hearing the previous unit's tail first (left context)."""
        ctx = self.spec.context_samples
        window = np.concatenate([self._audio_tail, audio]) if ctx else audio
        if ctx:
            self._audio_tail = window[-ctx:].copy()  # a context longer than a unit reaches several units back
        return (yield AudioRequest(window))

    def _step(self, audio_unit: np.ndarray, heard: list[int] | None = None) -> StepGen:
        """One unit's work as a coroutine (see :data:`StepGen`); ``step`` and ``Engine.step_many`` drive it."""
        t0 = self._sync()
        c0 = time.process_time()
        self.tokens_fed_last_step = 0
        self._decode_forwards = 0
        n = self.spec.unit_samples
        audio = np.asarray(audio_unit, dtype=np.float32).reshape(-1)
        if audio.shape[0] > n:
            raise InputError(f"step() takes one unit of audio ({n} samples at 16 kHz), got {audio.shape[0]}")
        issues: list[str] = []
        if not np.isfinite(audio).all():
            audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
            issues.append("non-finite input samples replaced by silence")
        if audio.shape[0] < n:
            audio = np.pad(audio, (0, n - audio.shape[0]))
        yield from self._maybe_slide()
        if heard is None:
            if self._activity is not None:
                self._activity.feed(audio)
            audio_emb = yield from self._audio_embeddings(audio)
        else:
            if len(heard) != self.spec.audio_tokens_per_unit:
                raise InputError(f"heard text must fill {self.spec.audio_tokens_per_unit} slots, got {len(heard)}")
            audio_emb = self._embed_ids(list(heard))[0]
        prefill = torch.cat([self._embed_ids([*self._pending, self.ids.unit]), audio_emb.unsqueeze(0)], dim=1)
        self._pending = []
        self._new_unit = True
        logits = yield from self._forward(prefill)
        t_prefill = self._sync()

        self._endpointed = False
        unit, gen, n_write, n_say, forced = yield from self._decode_unit(logits)
        self._last_state = unit.state
        if unit.state == "speak":
            self._spoke_until = (self.index + 1) * self.spec.unit_s
        self._history.append(_UnitRecord(audio_emb.detach(), gen))
        t_decode = self._sync()

        barge_in = unit.state == "listen" and self._queue.shape[0] > 0
        if barge_in:  # the user holds the floor again: what was still to be said is gone for good
            self._queue = np.zeros(0, dtype=np.float32)
            self._queue_words = []
        if unit.say.strip() and self.engine.speaks:
            speech = self._speak(unit.say.strip(), issues)
            if speech is not None:
                offset = self._queue.shape[0] / self.spec.sample_rate
                self._queue_words += [
                    Word(text=w.text, start=w.start + offset, end=w.end + offset) for w in speech.words
                ]
                self._queue = np.concatenate([self._queue, np.asarray(speech.audio, dtype=np.float32)])
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
            endpointed=self._endpointed,
            timings={
                "prefill_ms": (t_prefill - t0) * 1000,
                "decode_ms": (t_decode - t_prefill) * 1000,
                "tts_ms": (t_tts - t_decode) * 1000,
                "total_ms": (time.perf_counter() - t0) * 1000,
                "cpu_ms": (time.process_time() - c0)
                * 1000,  # CPU time: what a shared machine's load does not inflate
                "tokens_fed": float(self.tokens_fed_last_step),
                "decode_forwards": float(self._decode_forwards),  # model calls after the prefill
                # tokens the unit decoded (state, markers, text, end): a grammar-forced one needs no call of its
                # own but is fed with the next (a two-row forward), so decode_ms / decode_tokens is the time per token
                "decode_tokens": float(len(gen)),
                "write_tokens": float(n_write),
                "say_tokens": float(n_say),
                "context_tokens": float(self._n_ctx),
            },
            issues=issues + list(unit.issues),
        )
        self.index += 1
        return out

    def _endpoint_due(self) -> bool:
        """The endpoint fallback: unanswered user speech followed by ``endpoint_timeout_s`` of silence.

        Only at an onset (the previous unit listened), only for speech said after the model last
        spoke, and only when there is enough of it to be a turn (``endpoint_min_speech_s``)."""
        act = self._activity
        if act is None or self._last_state == "speak":
            return False
        segs = act.segments()
        if not segs or segs[-1][1] <= self._spoke_until:
            return False
        silence = act.fed_s - segs[-1][1]
        return silence >= self.cfg.endpoint_timeout_s and act.voiced_since(self._spoke_until) >= self.cfg.endpoint_min_speech_s

    def _decode_unit(self, logits: torch.Tensor) -> StepGen:  # returns (ParsedUnit, ids, n_write, n_say, forced)
        """Grammar-constrained decoding of one unit: state → write → say → end, within the budgets."""
        special = self.tok.special_set
        parser = UnitParser(self.tok, start=Phase.STATE)
        gen: list[int] = []
        n_write = n_say = 0
        forced = False
        stale = False  # logits do not yet reflect self._pending
        while True:
            phase = parser.phase
            allowed, text_ok = parser.allowed_special(), parser.text_allowed()
            at_budget = text_ok and (
                (phase == Phase.WRITE and n_write >= self.spec.max_write_tokens)
                or (phase == Phase.SAY and n_say >= self.spec.max_say_tokens)
            )
            token = None
            if self.policy is not None:
                ctx = DecodeContext(
                    self.index,
                    phase,
                    parser.current.state if phase != Phase.STATE else None,
                    allowed,
                    text_ok and not at_budget,
                    n_write,
                    n_say,
                )
                token = self.policy(ctx)
                if (
                    token is not None
                    and token not in allowed
                    and not (ctx.text_allowed and token not in special)
                ):
                    raise ValueError(
                        f"policy chose token {token}, which the grammar does not allow in phase {phase.value}"
                    )
            if token is None and phase == Phase.STATE and self._endpoint_due() and self.ids.speak in allowed:
                token = self.ids.speak  # the endpoint fallback (engine.endpoint_timeout_s) takes the turn
                self._endpointed = True
            if token is None and len(allowed) == 1 and not text_ok:
                token = next(iter(allowed))  # the grammar forces it: no model call needed
            if token is not None and stale and self._feed_scripted:
                yield from self._forward(self._embed_ids(self._pending))
                self._decode_forwards += 1
                self._pending, stale = [], False
            if token is None:
                if stale:
                    logits = yield from self._forward(self._embed_ids(self._pending))
                    self._decode_forwards += 1
                    self._pending, stale = [], False
                if phase == Phase.STATE and self.cfg.speak_onset_margin and self._last_state != "speak":
                    # taking the turn needs speak to beat listen by the margin (engine.speak_onset_margin)
                    logits = logits.clone()
                    logits[self.ids.speak] -= self.cfg.speak_onset_margin
                if at_budget:
                    # budget hit: close the segment; `forced` says the model still wanted text
                    forced |= self._choose(logits, allowed, True, greedy=True, spoken=phase == Phase.SAY) not in special
                    token = self._choose(logits, allowed, False)
                else:
                    token = self._choose(logits, allowed, text_ok, spoken=phase == Phase.SAY)
            done = parser.feed(token)
            gen.append(token)
            self._pending.append(token)
            stale = True
            if token not in special:
                n_write += phase == Phase.WRITE
                n_say += phase == Phase.SAY
            if done is not None:
                return done, gen, n_write, n_say, forced

    # -- speech --------------------------------------------------------------------------
    def _speak(self, text: str, issues: list[str]):  # noqa: ANN202 - Speech | None
        """Render speech; symbols the TTS cannot say are dropped (and noted) instead of failing the session."""
        from lws_core.audio.tts import UnspeakableError

        try:
            return self.engine.tts.synthesize(text)
        except UnspeakableError:
            cleaned = "".join(
                c if (c.isalnum() or c in " .,;:!?'-%") and c.isprintable() and c != "\ufffd" else " "
                for c in text
            )
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
        words = [
            Word(text=w.text, start=w.start + t_out, end=w.end + t_out)
            for w in self._queue_words
            if w.start < unit_s
        ]
        self._queue_words = [
            Word(text=w.text, start=w.start - unit_s, end=max(w.end - unit_s, w.start - unit_s))
            for w in self._queue_words
            if w.start >= unit_s
        ]
        return chunk, words

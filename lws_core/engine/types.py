"""The engine's shared types: its config, what a session needs from the engine (:class:`SessionHost`),
and what it returns (one UnitOutput per step, a SimulationResult for a whole recording).

Both ``engine.py`` and ``session.py`` import from here and never from each other's
types: the engine creates sessions, a session only sees the :class:`SessionHost` interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import ConfigDict

from lws_core.config.engine import EngineSection
from lws_core.schema import Session, Word

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from lws_core.audio.tts import TTS
    from lws_core.engine.fastpath import FastPath
    from lws_core.model import LWSModel


class EngineConfig(EngineSection):
    """Decoding and context settings of a streaming session: the project config's ``engine``
    section (its fields, defaults and checks: one definition, ``lws_core.config.engine``), as a
    mutable object the engine owns.

    ``max_context_tokens`` bounds the KV cache: when a unit would overflow it, the
    cache is rebuilt once from the session prompt, a tail of the written document
    and the most recent ``keep_units`` units (sliding window), so a 30-minute
    session runs in bounded memory.
    """

    model_config = ConfigDict(extra="forbid", frozen=False)

    def with_overrides(self, overrides: dict) -> EngineConfig:
        """A copy with ``{field: value}`` applied; bad keys or values fail with one line (ConfigError)."""
        from pydantic import ValidationError

        from lws_core.errors import ConfigError

        try:
            return EngineConfig.model_validate({**self.model_dump(), **overrides})
        except ValidationError as e:
            msg = "; ".join(
                f"engine.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            raise ConfigError(f"invalid config: {msg}") from None


class SessionHost(Protocol):
    """What a :class:`~lws_core.engine.session.StreamingSession` uses of the engine that made it:
    the shared model and its settings, the fused fast path (it owns the sessions' cache layout),
    the grammar masks (cached across sessions), the speech synthesizer, and ``execute``, which
    answers the model calls a session's step yields. :class:`~lws_core.engine.engine.Engine` is the one."""

    model: LWSModel
    config: EngineConfig
    fast_path: FastPath | None

    @property
    def speaks(self) -> bool: ...

    @property
    def tts(self) -> TTS: ...

    def allowed_mask(self, allowed: frozenset[int], text_ok: bool) -> torch.Tensor: ...

    def execute(self, requests: Sequence[Any]) -> list[Any]: ...


@dataclass
class UnitOutput:
    """One unit's result. ``speech`` is the audio to play during the next unit (may be empty)."""

    index: int
    state: str
    write: str
    say: str
    eot: bool
    forced: bool
    speech: np.ndarray
    speech_words: list[Word] = field(default_factory=list)
    barge_in: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)
    endpointed: bool = False  # the endpoint fallback (engine.endpoint_timeout_s) took the turn, not the model

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "state": self.state,
            "write": self.write,
            "say": self.say,
            "eot": self.eot,
            "forced": self.forced,
            "barge_in": self.barge_in,
            "endpointed": self.endpointed,
            "speech_s": round(len(self.speech) / 16000, 3),
            "speech_words": [w.model_dump() for w in self.speech_words],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "issues": self.issues,
        }


@dataclass
class SimulationResult:
    """A whole simulated recording. ``spoken_words`` are in output-stream time (as played);
    ``user_speech`` holds the input's speech-activity segments ``(start_s, end_s)`` (the
    recording has no transcript, so the user's words are unknown)."""

    units: list[UnitOutput]
    output_audio: np.ndarray
    spoken_words: list[Word]
    written: str
    session: Session
    unit_s: float
    input_samples: int
    user_speech: list[tuple[float, float]] = field(default_factory=list)

    def _rtf(self, q: float) -> float:
        if not self.units:
            return 0.0
        per = np.array([u.timings.get("total_ms", 0.0) / 1000.0 / self.unit_s for u in self.units])
        return float(np.percentile(per, q))

    @property
    def rtf_p50(self) -> float:
        return self._rtf(50)

    @property
    def rtf_p95(self) -> float:
        return self._rtf(95)

    def fdb_json(self) -> dict:
        """Full-Duplex-Bench's output.json format, from the TTS's own word events."""
        return {
            "text": " ".join(w.text for w in self.spoken_words),
            "chunks": [
                {"text": w.text, "timestamp": [round(w.start, 3), round(w.end, 3)]} for w in self.spoken_words
            ],
        }

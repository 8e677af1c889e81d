"""Iteration-level batching: sessions' units join and leave one shared batch between model calls.

A unit is a coroutine of model calls (:data:`~lws_core.engine.session.StepGen`): an audio
window for the encoder, a prefill, then one forward per decoded position. ``UnitBatch``
keeps every unit under way and answers all their next calls in one
:meth:`Engine.execute <lws_core.engine.engine.Engine.execute>` per :meth:`UnitBatch.tick`.
A unit added between ticks joins at the next call instead of waiting for a whole round
to end (Orca-style continuous batching: a listening unit needs 2-4 calls, a speaking one
up to ~40, so in round-by-round batching a listener arriving just after a speaker's
round began waited for all of it). Sessions stay isolated exactly as in
``Engine.step_many``, which runs on this class: own cache, document, speech queue,
clock and sampling generator; a session's lock is held from ``add`` until its unit ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from lws_core.engine.engine import Engine
    from lws_core.engine.session import Request, StepGen, StreamingSession
    from lws_core.engine.types import UnitOutput

Done = Callable[["UnitOutput | BaseException"], None]


class UnitBatch:
    """Units under way in one engine; drive it from one thread (``add`` and ``tick``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._live: dict[int, tuple[StreamingSession, StepGen, Request, Done]] = {}
        self.ticks = 0
        self.units_done = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, session: object) -> bool:
        return id(session) in self._live

    def add(self, session: StreamingSession, audio: np.ndarray, done: Done) -> None:
        """Start ``session``'s next unit; ``done(result)`` is called (from ``add`` or a later ``tick``)
        with its :class:`UnitOutput`, or with the exception that ended it."""
        if id(session) in self._live:
            raise ValueError("UnitBatch: a session already has a unit under way (one unit per session at a time)")
        session._lock.acquire()
        try:
            if session._cache is None:
                raise RuntimeError("session is closed")
            with torch.inference_mode():
                gen = session._step(audio)
                request = next(gen)
        except StopIteration as stop:
            self._finish(session, done, stop.value)
        except Exception as e:  # noqa: BLE001 - handed to the caller's callback
            self._finish(session, done, e)
        else:
            self._live[id(session)] = (session, gen, request, done)

    def tick(self) -> int:
        """Answer every live unit's next model call in one batched call; returns how many units ended."""
        if not self._live:
            return 0
        order = list(self._live)
        self.ticks += 1
        with torch.inference_mode():
            try:
                answers = self.engine.execute([self._live[k][2] for k in order])
            except Exception as e:  # noqa: BLE001 - a shared forward failed: every unit in it fails
                for k in order:
                    session, _, _, done = self._live.pop(k)
                    self._finish(session, done, e)
                return len(order)
            ended = 0
            for k, answer in zip(order, answers, strict=True):
                session, gen, _, done = self._live[k]
                try:
                    self._live[k] = (session, gen, gen.send(answer), done)
                except StopIteration as stop:
                    del self._live[k]
                    self._finish(session, done, stop.value)
                    ended += 1
                except Exception as e:  # noqa: BLE001
                    del self._live[k]
                    self._finish(session, done, e)
                    ended += 1
        return ended

    def _finish(self, session: StreamingSession, done: Done, result: Any) -> None:
        session._lock.release()
        self.units_done += 1
        done(result)

"""Engine scheduling, admission control and metrics.

Engine steps are CPU/GPU bound and release the GIL inside torch, so they run on
engine threads while the event loop keeps every socket responsive.

Units are *batched across sessions* (:class:`Batcher`): one engine thread takes
every session whose unit is ready and advances them together with
``Engine.step_many``, so the model's weights are read once per decoded position
for all of them, not once per session. Each session submits at most one unit at
a time (its next unit waits for the previous one), so a round holds each ready
session once: no session can starve another by sending audio faster, and one
that arrives while a round runs joins the next. The rest (creating, resetting,
closing sessions; the warm-up) runs on a small thread pool.

Admission uses *measured* capacity. With batching, a unit's cost depends on how many
others share its round: a round of b units takes about ``c0 + c1 * b`` (``c0``: what
every round pays — weight reads, per-op overhead; ``c1``: what each session adds —
its attention, its rows, its grammar). The warm-up times a round of 1 and a round of
``warmup_batch`` and fits both, on units that cost the most a unit can (``warmup_speak_share``,
:class:`~lws_core.engine.policies.BusiestUnit`), because clients that arrive together are all
admitted on it; live rounds then scale the fit by a measured slowdown
factor ``k`` (observed / predicted wall time, an exponential moving average), which
tracks the real mix of listening and speaking units and whatever else the machine is
doing. N real-time sessions keep the engine busy ``k * c1 * N / unit_s`` of the time,
and their rounds settle at ``k * c0 / (1 - k * c1 * N / unit_s)`` (units arriving during a
round join the next). So a unit waits up to two rounds: one that came due just after a round
started waits for it, then runs in the next; the latency bound takes those two as slow rounds (the 95th
percentile of recent rounds' slowdown, :attr:`Scheduler.tail_k`), since the p95 unit waits for the slow ones. A new session is refused (close 1013) when either
would pass its bound (``target_utilization``; half a unit of latency for those two rounds), when it
would take the server past the range the model is trusted for (:meth:`Scheduler.trusted`: the
warm-up's estimate, or a step past a load held within the latency bound: :meth:`Scheduler._growth`), or when ``max_sessions`` is reached. (Bounding one round by half a unit, as before stop 38, let a
champion that speaks in many units reach p95 0.8 s at 64 sessions: benchmarks/results/serve.md.) Fitting one cost per unit instead (round time / units) would judge the server
by its small rounds at light load and refuse the very load that makes rounds, and so
batching, pay.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Container
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from lws_core.engine import Engine, StreamingSession, UnitOutput

T = TypeVar("T")
TAIL_WINDOW = 200  # rounds whose slowdown the latency bound's tail is taken over
SERVED_WINDOW = 256  # the newest served units whose latency is compared with the model's prediction (Scheduler.latency_excess)
SERVED_MAX_AGE_S = 10.0  # ... of those served in the last this many seconds
SERVED_MIN_UNITS = 64  # fewer such units than this (a light load): no correction
TAIL_MIN_ROUNDS = 20  # fewer live rounds than this: the tail is not estimated yet (the mean is used)
# admission goes at most this far past the most sessions shown to hold (units served within the latency bound; or
# the warm-up's estimate). Stop 48 tried 1.5 over the most sessions served: two of four ramps to 224 clients admitted
# all 224 at p95 1.4-2.0 s, since the most sessions served included a level that had itself run over the bound; 1.25
# over-admitted less (168-175 at p95 0.76-0.82 s) at the price of refusals below capacity on the way up
# (benchmarks/results/serve.md, stop 48). Stop 49 counts only loads served within the bound (Scheduler.proven) and
# goes as far past one as its measured latency leaves room for (Scheduler._growth), at most this far.
GROWTH = 1.5
PROVEN_EVERY = 16  # served units between two checks of the load shown to hold (a percentile over its window)
# a load counts as shown to hold (or to break the bound) only once it has been served this long: every unit of a session
# then weighs in, not only its first, cheap ones (stop 49: counted from the units of a level's first second, p95
# 0.1-0.2 s, trust let the next burst in at p95 1.1 s)
HOLD_S = 8.0
HOLD_WINDOW = 4096  # served units kept for it (SERVED_WINDOW covers only ~1.6 s at 160 sessions)


class Metrics:
    """Counters and recent per-unit figures; read by /metrics and /healthz. Thread-safe."""

    def __init__(self, window: int = 2000) -> None:
        from lws_core.serve.prom import PromMetrics

        self._lock = threading.Lock()
        self.started = time.time()
        self.prom = PromMetrics()
        self._active = 0
        self._connections = 0
        self._sessions = 0
        self._quantiles_at = 0.0  # when the shared quantile gauges were last set (see unit)
        self.gauges: Callable[[], dict[str, float]] | None = None  # the server's own gauges (capacity, costs, queues)
        self.units_total = 0
        self.audio_in_s = 0.0
        self.audio_out_s = 0.0
        self.refusals: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._rtf: deque[float] = deque(maxlen=window)
        self._latency: deque[float] = deque(maxlen=window)

    # the session gauges: plain attributes for the server (``m.active_sessions += 1``), mirrored to Prometheus
    @property
    def active_sessions(self) -> int:
        return self._active

    @active_sessions.setter
    def active_sessions(self, n: int) -> None:
        self._active = n
        self.prom.active.set(n)

    @property
    def open_connections(self) -> int:
        return self._connections

    @open_connections.setter
    def open_connections(self, n: int) -> None:
        self._connections = n
        self.prom.connections.set(n)

    @property
    def sessions_total(self) -> int:
        return self._sessions

    @sessions_total.setter
    def sessions_total(self, n: int) -> None:
        if n > self._sessions:
            self.prom.sessions.inc(n - self._sessions)
        self._sessions = n

    def unit(self, compute_s: float, unit_s: float, latency_s: float, speech_s: float) -> None:
        with self._lock:
            self.units_total += 1
            self.audio_in_s += unit_s
            self.audio_out_s += speech_s
            self._rtf.append(compute_s / unit_s)
            self._latency.append(latency_s)
        self.prom.units.inc()
        self.prom.audio_in.inc(unit_s)
        self.prom.audio_out.inc(speech_s)
        now = time.monotonic()
        if self.prom.shared and now - self._quantiles_at >= 1.0:
            # another process may answer the scrape: this one's recent quantiles and server gauges go to the shared
            # files about once a second (a percentile over the window costs ~20 us; not worth paying at every unit)
            self._quantiles_at = now
            self.refresh()

    def refresh(self) -> None:
        """Set the gauges computed on demand (recent-unit quantiles, the server's ``gauges`` callback)."""
        self._set_quantiles()
        if self.gauges is not None:
            self.prom.extras(self.gauges())

    def _set_quantiles(self) -> None:
        with self._lock:
            rtf = {q: self._pct(self._rtf, p) for q, p in (("0.5", 50), ("0.95", 95))}
            lat = {q: self._pct(self._latency, p) for q, p in (("0.5", 50), ("0.95", 95))}
        self.prom.quantiles(rtf, lat)

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refusals[reason] += 1
        self.prom.refusals.inc()
        self.prom.refusals_by.labels(reason=reason).inc()

    def error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1
        self.prom.errors.labels(code=code).inc()

    @staticmethod
    def _pct(values: deque[float], q: float) -> float | None:
        return float(np.percentile(np.fromiter(values, float), q)) if values else None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "uptime_s": round(time.time() - self.started, 1),
                "active_sessions": self.active_sessions,
                "open_connections": self.open_connections,
                "sessions_total": self.sessions_total,
                "units_total": self.units_total,
                "audio_in_s": round(self.audio_in_s, 2),
                "audio_out_s": round(self.audio_out_s, 2),
                "rtf_p50": self._pct(self._rtf, 50),
                "rtf_p95": self._pct(self._rtf, 95),
                "unit_latency_ms_p50": _ms(self._pct(self._latency, 50)),
                "unit_latency_ms_p95": _ms(self._pct(self._latency, 95)),
                "refusals": dict(self.refusals),
                "refusals_total": sum(self.refusals.values()),
                "errors": dict(self.errors),
            }

    def prometheus(self) -> str:
        """Prometheus text exposition format (version 0.0.4), by prometheus_client (:mod:`lws_core.serve.prom`):
        this server's figures, or every process's of ``lws serve --processes N``."""
        self.refresh()
        return self.prom.exposition().decode()


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


class Scheduler:
    """A worker pool for engine calls plus the capacity estimate used for admission."""

    def __init__(self, workers: int, unit_s: float, target_utilization: float, alpha: float = 0.1) -> None:
        self.workers = workers
        self.unit_s = unit_s
        self.target = target_utilization
        self.alpha = alpha
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lws-engine")
        self._rtf_ema: float | None = None
        self._c0 = 0.0
        self._c1: float | None = None
        self._k = 1.0
        self._ratios: deque[float] = deque(maxlen=TAIL_WINDOW)  # recent rounds' observed / predicted
        # (when, unit latency s, sessions open) of the units served last: the latency excess reads its newest
        # SERVED_WINDOW, Scheduler.proven all of it
        self._held: deque[tuple[float, float, int]] = deque(maxlen=HOLD_WINDOW)
        self._proven = 0  # the most sessions at which served units kept the latency bound (Scheduler.proven)
        self._trust = 0  # the warm-up's estimate, then as far as held loads' latency leaves room (Scheduler._growth)
        self._floor_s = math.inf  # the latency with no queue: the warm-up's lone unit, or a window of served units' p95
        self._unchecked = 0  # units served since the last check of it
        self._queued = 0
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:
            self._queued += 1
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        finally:
            with self._lock:
                self._queued -= 1

    def submit(self, fn: Callable[[], object]) -> None:
        """Fire and forget on the pool (FIFO: after anything already queued); ignored after shutdown."""
        with contextlib.suppress(RuntimeError):
            self._pool.submit(fn)

    def observe(self, compute_s: float) -> None:
        """Feed the compute time of one unit (measured inside the worker, so queueing is excluded)."""
        rtf = compute_s / self.unit_s
        with self._lock:
            self._rtf_ema = rtf if self._rtf_ema is None else (1 - self.alpha) * self._rtf_ema + self.alpha * rtf

    @property
    def rtf(self) -> float | None:
        return self._rtf_ema

    @property
    def queued(self) -> int:
        return self._queued

    def set_cost_model(self, one_s: float, batch_s: float, batch: int) -> None:
        """Fit ``c0 + c1 * b`` from a timed round of 1 unit and one of ``batch`` units (the warm-up)."""
        if batch > 1 and batch_s > one_s:
            c1 = (batch_s - one_s) / (batch - 1)
            c0 = max(0.0, one_s - c1)
        else:  # no batching (or no measurable growth): every unit pays the lone unit's cost
            c0, c1 = 0.0, max(one_s, batch_s / max(batch, 1), 1e-6)
        with self._lock:
            self._c0, self._c1, self._k = c0, c1, 1.0
            self._ratios.clear()
        self.observe(one_s)
        self._trust = self.capacity() or 0  # the warm-up's estimate: trusted until loads served move it
        self._floor_s = min(self._floor_s, one_s)

    @property
    def proven(self) -> int:
        """The most sessions shown to hold: the median load of the units served over ``HOLD_S`` (at least
        ``SERVED_MIN_UNITS`` of them, the load held the whole time) whose p95 latency kept the bound (half a unit)."""
        return self._proven

    def trusted(self) -> int:
        """Sessions the cost model may be trusted for: the warm-up's estimate, or up to ``GROWTH`` times a load
        shown to hold (:attr:`proven`), as far as its measured latency leaves room (:meth:`_growth`); lowered, below
        the warm-up's estimate too, by a load held over the bound. (Until stop 50 the warm-up's estimate stayed
        trusted whatever was served: with the warm-up sized to the model's own units (``serve.warmup_spoken``) it
        is close to capacity, and a process kept trusting 105 sessions after 89 had run at p95 715 ms.) Why: costs
        grow faster than linearly past the load the model was fitted at (longer contexts, more sockets for the event
        loop); a burst admitted on an extrapolation from half its size ran at p95 1.3-1.6 s (benchmarks/results/serve.md, stop 39). Past it, sessions are refused until
        units served at the higher load have shown the model holds there. Why only loads served *within* the bound,
        not the most sessions served (as before stop 49): a level that itself ran over the bound then let the next
        burst in at 1.5 x its size, p95 1.4-2.0 s (stop 48)."""
        return self._trust

    def observe_round(self, wall_s: float, units: int) -> None:
        """Feed one live round: its wall time against the cost model's prediction (and each unit's share)."""
        if units <= 0:
            return
        self.observe(wall_s / units)
        with self._lock:
            if self._c1 is None:
                return
            ratio = wall_s / (self._c0 + self._c1 * units)
            self._k = (1 - self.alpha) * self._k + self.alpha * ratio
            self._ratios.append(ratio)

    @property
    def cost_model(self) -> tuple[float, float, float] | None:
        """``(c0, c1, k)`` in seconds (None before the warm-up)."""
        return None if self._c1 is None else (self._c0, self._c1, self._k)

    def utilization(self, sessions: int) -> float:
        """Predicted share of the engine thread that ``sessions`` real-time sessions need."""
        if self._c1 is not None:
            return self._k * self._c1 * sessions / self.unit_s
        if self._rtf_ema is None:
            return 0.0
        return sessions * self._rtf_ema

    def round_s(self, sessions: int) -> float:
        """Predicted steady-state round time for ``sessions`` real-time sessions (inf past saturation)."""
        if self._c1 is None:
            return 0.0
        free = 1.0 - self.utilization(sessions)
        return math.inf if free <= 0 else self._k * self._c0 / free

    @property
    def tail_k(self) -> float:
        """The slowdown of slow rounds: the 95th percentile of recent rounds' observed / predicted time (at
        least the mean ``k``; the mean alone until ``TAIL_MIN_ROUNDS`` rounds were seen).

        Why: the latency bound is on the p95 unit, and the rounds a unit waits for are the slow ones (a speaking
        unit's ~40 model calls); a mean slowdown let admission take sessions whose p95 latency was 1.2 x the
        bound (benchmarks/results/serve.md, stop 39)."""
        with self._lock:
            if len(self._ratios) < TAIL_MIN_ROUNDS:
                return self._k
            return max(self._k, float(np.percentile(np.fromiter(self._ratios, float), 95)))

    def _model_latency_s(self, sessions: int, tail: float | None = None) -> float:
        """The cost model's p95 unit latency for ``sessions`` real-time sessions: two slow rounds (module doc).
        ``tail``: :attr:`tail_k` when the caller has it already (a percentile over the recent rounds)."""
        if self._c1 is None:
            return 0.0
        free = 1.0 - self.utilization(sessions)
        return math.inf if free <= 0 else 2.0 * (self.tail_k if tail is None else tail) * self._c0 / free

    def observe_latency(self, latency_s: float, sessions: int) -> None:
        """A unit was served ``latency_s`` after its last sample arrived, with ``sessions`` sessions open."""
        with self._lock:
            self._held.append((time.monotonic(), latency_s, sessions))
            self._unchecked += 1
            if self._unchecked < PROVEN_EVERY:
                return
            self._unchecked = 0
        self._check_proven()

    def _since(self, age_s: float, newest: int = HOLD_WINDOW) -> list[tuple[float, float, int]]:
        """(when, latency, sessions) of the ``newest`` units served, those of them served in the last ``age_s``."""
        since = time.monotonic() - age_s
        with self._lock:
            return [u for u in itertools.islice(reversed(self._held), newest) if u[0] >= since]

    def _recent(self) -> list[tuple[float, int]]:
        """(latency, sessions) of the newest ``SERVED_WINDOW`` units, those served in the last ``SERVED_MAX_AGE_S``."""
        return [(x, n) for _, x, n in self._since(SERVED_MAX_AGE_S, SERVED_WINDOW)]

    def _check_proven(self) -> None:
        """Judge the load served for the last ``HOLD_S``, once it has been that load the whole time: raise
        :attr:`proven` to it when its units' p95 latency kept the bound, and move the trust to as far past it as that
        latency leaves room for (:meth:`_growth`): up when it kept the bound, down when it did not."""
        now = time.monotonic()
        held = self._since(HOLD_S)
        if len(held) < SERVED_MIN_UNITS or now - held[-1][0] < 0.9 * HOLD_S:  # newest first: [-1] is the oldest
            return
        load = int(np.median([n for _, _, n in held]))
        early = [n for t, _, n in held if t < now - 0.75 * HOLD_S]
        if load <= 0 or not early or np.median(early) < 0.9 * load:  # the load has not held for the whole window
            return
        p95 = float(np.percentile([x for _, x, _ in held], 95))
        self._floor_s = min(self._floor_s, p95)
        room = math.floor(load * self._growth(p95, load))
        if p95 <= self.unit_s / 2:
            self._proven = max(self._proven, load)
            self._trust = max(self._trust, room)
        else:  # over the bound at this load: trust no more than the queue says would have kept it
            self._trust = min(self._trust, room)

    def _growth(self, p95: float, load: int) -> float:
        """How far past ``load`` sessions whose units were served at ``p95`` latency the latency bound still holds, at
        most ``GROWTH`` (below 1 when that load broke the bound; at least 0.5).

        Latency grows with the queue as ``1 / (1 - u)``, ``u`` the engine's busy share (module doc). The busy share
        comes from the cost model's *throughput* figures, its per-session cost ``c1`` scaled by the live slowdown
        ``k`` (:meth:`utilization`), and the latency's scale from the p95 just measured at ``load``: the bound ``B``
        is reached at the busy share ``u' = 1 - (p95 / B) (1 - u)``, so at ``load * u' / u`` sessions.

        Why not a queue's ``L0 / (1 - N / C)`` with ``L0`` the latency with no queue and ``C`` fitted from one load
        (stops 49-64): a light load's p95 is not a queue's, it rises early and then slowly (15 ms at 64 sessions, 71
        at 128, 483 at 192 on the Zen 4 VM), so that fit put the bound at ~157 sessions where 192 held, and a ramp
        refused 5 of 160 and 27 of 192 below capacity (benchmarks/results/serve.md, stop 60). Why the cost model's
        busy share and not its latency, as :meth:`capacity` does: its per-round base ``c0`` comes from two warm-up
        rounds, while the p95 is measured at the load in question. Falls back to the ``L0`` form when the model puts
        the load at or past saturation while it held (a per-session cost overestimated)."""
        bound = self.unit_s / 2
        u = self.utilization(load) if self._c1 is not None else 0.0
        if 0.0 < u < 1.0:
            return max(0.5, min(GROWTH, (1 - p95 / bound * (1 - u)) / u))
        floor = min(self._floor_s, p95)
        if p95 <= floor:  # nothing queued yet at this load: no measure of the room left, only the cap
            return GROWTH
        return max(0.5, min(GROWTH, (1 - floor / bound) / (1 - floor / p95)))

    def _excess_at(self) -> tuple[float, int]:
        """(what the served units' p95 latency exceeded the model's prediction by, the load they were served at);
        (0, 0) when they were faster, or when fewer than ``SERVED_MIN_UNITS`` units were served in the last
        ``SERVED_MAX_AGE_S`` (at a light load there is nothing to correct, and a past overload must not keep
        refusing sessions once it has gone).

        Why: costs grow faster than linearly with the sessions (longer contexts, more sockets for the event loop,
        the model's own spread of slow rounds), so a model fitted at the warm-up's load predicts too little
        further on; past capacity a ramp was admitted to p95 756 ms (benchmarks/results/serve.md, stop 43)."""
        recent = self._recent()
        if len(recent) < SERVED_MIN_UNITS:
            return 0.0, 0
        lat = np.array([x for x, _ in recent])
        load = max(int(np.median([n for _, n in recent])), 1)
        predicted = self._model_latency_s(load)
        return (max(0.0, float(np.percentile(lat, 95)) - predicted) if math.isfinite(predicted) else 0.0), load

    @property
    def latency_excess(self) -> float:
        """What served units' p95 latency exceeded the model by, at the load they were served at (:meth:`_excess_at`)."""
        return self._excess_at()[0]

    @staticmethod
    def _scaled(excess: float, at: int, sessions: int) -> float:
        """The excess measured at ``at`` sessions, for ``sessions``: as measured from that load up (at light load the
        excess is the event loop's fixed cost, which does not grow with the load), and in proportion below it (with no
        sessions there is no queue to exceed the model). Why not the same at every load, as before stop 48: the excess
        of a busy spell stays in the window for ``SERVED_MAX_AGE_S`` after its sessions have gone, and added whole to
        an empty server's first sessions it refused nearly all of the next burst (42 of 224 admitted, where 130 had
        just been served within bounds; benchmarks/results/serve.md, stop 48)."""
        return excess if sessions >= at else excess * sessions / at

    def latency_s(self, sessions: int, excess: tuple[float, int] | None = None, tail: float | None = None) -> float:
        """Predicted p95 unit latency for ``sessions`` real-time sessions: the model's (two slow rounds, module
        doc) plus what served units have shown it misses (:meth:`_excess_at`, scaled by :meth:`_scaled`)."""
        if self._c1 is None:
            return self._model_latency_s(sessions)
        e, at = self._excess_at() if excess is None else excess
        return self._model_latency_s(sessions, tail) + (self._scaled(e, at, sessions) if e else 0.0)

    def capacity(self) -> int | None:
        """Sessions that fit under the target utilization and half a unit of latency (None before any measurement)."""
        if self._c1 is not None:
            per = self._k * self._c1 / self.unit_s  # utilization per session
            by_load = int(self.target / per)
            # the most N with latency_s(N) <= unit_s / 2: latency grows with N, so a bisection (the excess taken once)
            excess, tail = self._excess_at(), self.tail_k  # each a percentile: once per call, not per step
            lo, hi = 0, by_load
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.latency_s(mid, excess, tail) <= self.unit_s / 2 + 1e-9:  # rounding: the bound itself fits
                    lo = mid
                else:
                    hi = mid - 1
            return max(0, lo)
        if not self._rtf_ema:
            return None
        return int(self.target / self._rtf_ema)

    def limit(self) -> int | None:
        """The most sessions :meth:`admits` would hold now (None: nothing measured yet, so no limit of its own)."""
        cap = self.capacity()
        return cap if cap is None or self._c1 is None else min(cap, self.trusted())

    def admits(self, active: int) -> bool:
        """The first session is always admitted (a slow machine still serves one user, just late)."""
        if active == 0:
            return True
        if self._c1 is not None:
            return (
                active + 1 <= self.trusted()
                and self.utilization(active + 1) <= self.target
                and self.latency_s(active + 1) <= self.unit_s / 2
            )
        return self._rtf_ema is None or self.utilization(active + 1) <= self.target

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Batcher:
    """One engine thread that advances every ready session's unit in one ``Engine.step_many``.

    ``await step(session, audio)`` queues the unit and resolves when its round is done. A
    round takes everything queued (at most ``max_batch``, one unit per session), so under
    light load a unit runs alone at once, and under heavy load rounds grow and each weight
    read serves more sessions. ``batch=False`` runs each queued unit on its own, in arrival
    order (the pre-batching server; kept so benchmarks can compare the two).
    """

    def __init__(
        self, engine: Engine, scheduler: Scheduler, max_batch: int = 256, batch: bool = True, continuous: bool = False
    ) -> None:
        self.engine = engine
        self.scheduler = scheduler
        self.max_batch = max_batch if batch else 1
        self.continuous = continuous and batch
        self._items: deque[tuple[StreamingSession, Any, asyncio.Future, asyncio.AbstractEventLoop]] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self.round_sizes: deque[int] = deque(maxlen=2000)

    async def step(self, session: StreamingSession, audio: Any) -> UnitOutput:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        with self._cond:
            if self._stopped:
                raise RuntimeError("server is shutting down")
            if self._thread is None:
                loop_fn = self._loop_continuous if self.continuous else self._loop
                self._thread = threading.Thread(target=loop_fn, name="lws-batcher", daemon=True)
                self._thread.start()
            self._items.append((session, audio, fut, loop))
            self._cond.notify()
        return await fut

    @property
    def queued(self) -> int:
        return len(self._items)

    def _take(self) -> list[tuple[StreamingSession, Any, asyncio.Future, asyncio.AbstractEventLoop]] | None:
        with self._cond:
            while not self._items and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            return self._pick(self.max_batch)

    def _pick(
        self, room: int, busy: Container[StreamingSession] = ()
    ) -> list[tuple[StreamingSession, Any, asyncio.Future, asyncio.AbstractEventLoop]]:
        """Pop up to ``room`` queued units, one per session, none of a session in ``busy``; the lock is held.

        A session's later unit stays queued, in order, until its earlier one is done.
        """
        taken, seen, keep = [], set(), deque()
        while self._items and len(taken) < room:
            item = self._items.popleft()
            if item[0] in busy or id(item[0]) in seen:
                keep.append(item)
            else:
                seen.add(id(item[0]))
                taken.append(item)
        self._items.extendleft(reversed(keep))
        return taken

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            t0 = time.perf_counter()
            try:
                results: list[Any] = self.engine.step_many([(s, a) for s, a, _, _ in taken], return_exceptions=True)
            except Exception as e:  # noqa: BLE001 - e.g. a session listed twice: fail the round, keep serving
                results = [e] * len(taken)
            self.scheduler.observe_round(time.perf_counter() - t0, len(taken))
            self.rounds += 1
            self.round_sizes.append(len(taken))
            for (_, _, fut, loop), r in zip(taken, results, strict=True):
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(_settle, fut, r)

    def _loop_continuous(self) -> None:
        """Iteration-level batching (``serve.continuous_batching``): units join the shared batch at
        the next model call and leave when they end (:class:`~lws_core.engine.batch.UnitBatch`).

        A "round" in the metrics is then one batched model call. The admission model is fed
        equivalent rounds: ``U`` units finished in ``B`` s of engine time at a mean of ``m``
        units per call are ``U / m`` rounds of ``m`` units, each ``B * m / U`` s long.
        """
        from lws_core.engine.batch import UnitBatch

        batch = UnitBatch(self.engine)
        busy = live_sum = 0.0
        calls = done = 0
        while True:
            with self._cond:
                while not self._items and not len(batch) and not self._stopped:
                    self._cond.wait()
                if self._stopped and not len(batch):
                    return
                taken = [] if self._stopped else self._pick(self.max_batch - len(batch), batch)
            t0 = time.perf_counter()
            for sess, audio, fut, loop in taken:
                batch.add(sess, audio, functools.partial(_deliver, fut, loop))
            live = len(batch)
            done += batch.tick()
            busy += time.perf_counter() - t0
            live_sum += live
            calls += 1
            self.rounds += 1
            self.round_sizes.append(live)
            if done >= 8 or (done and busy >= 0.5):
                m = live_sum / calls
                self.scheduler.observe_round(busy * m / done, max(1, round(m)))
                busy = live_sum = 0.0
                calls = done = 0

    def shutdown(self) -> None:
        with self._cond:
            self._stopped = True
            pending = list(self._items)
            self._items.clear()
            self._cond.notify_all()
        for _, _, fut, loop in pending:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, fut, RuntimeError("server is shutting down"))


def _deliver(fut: asyncio.Future, loop: asyncio.AbstractEventLoop, result: Any) -> None:
    """Hand a unit's result to the event loop that waits for it (from the engine thread)."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, fut, result)


def _settle(fut: asyncio.Future, result: Any) -> None:
    if fut.done():  # the connection went away and cancelled its wait
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)

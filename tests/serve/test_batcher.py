"""The server's batching engine thread: ready sessions share rounds, one unit per session per round,
results reach the right session, a failing session fails alone, and shutdown releases the waiters."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from lws_core.serve.scheduler import Batcher, Scheduler


def _units(speech16k: np.ndarray, n: int) -> list[np.ndarray]:
    a = np.tile(speech16k, 2)
    return [a[i * 8000 : i * 8000 + 16000] for i in range(n)]


def test_queued_units_share_a_round_and_match_each_session_alone(engine, speech16k):
    blocks = _units(speech16k, 4)
    solo = []
    for b in blocks:
        with engine.session() as s:
            solo.append(s.step(b))
    sched = Scheduler(1, 1.0, 0.85)
    batcher = Batcher(engine, sched)
    sessions = [engine.session() for _ in blocks]

    async def main() -> list:
        # hold the engine thread back until every unit is queued (the lock is re-entrant: the
        # tasks run on this thread and queue under it), so they make one round
        with batcher._cond:
            tasks = [asyncio.ensure_future(batcher.step(s, b)) for s, b in zip(sessions, blocks, strict=True)]
            while batcher.queued < len(blocks):
                await asyncio.sleep(0)
        return await asyncio.gather(*tasks)

    try:
        outs = asyncio.run(main())
    finally:
        batcher.shutdown()
    assert list(batcher.round_sizes) == [4]
    assert [(o.state, o.write, o.say) for o in outs] == [(o.state, o.write, o.say) for o in solo]
    assert all(s.index == 1 for s in sessions)
    assert sched.rtf is not None and sched.capacity() is not None


def test_a_session_appears_once_per_round_and_max_batch_holds(engine):
    sched = Scheduler(1, 1.0, 0.85)
    batcher = Batcher(engine, sched, max_batch=2)
    a, b, c = object(), object(), object()
    batcher._items.extend((s, None, None, None) for s in (a, a, b, c))
    first = batcher._take()
    assert [x[0] for x in first] == [a, b]  # a's second unit waits; max_batch=2
    assert [x[0] for x in batcher._items] == [a, c]  # order kept for the next round
    assert Batcher(engine, sched, batch=False).max_batch == 1


def test_one_failing_session_fails_alone_and_shutdown_releases_waiters(engine, speech16k):
    from lws_core.errors import InputError

    batcher = Batcher(engine, Scheduler(1, 1.0, 0.85))
    good, bad = engine.session(), engine.session()

    async def main() -> list:
        return await asyncio.gather(
            batcher.step(good, speech16k[:16000]),
            batcher.step(bad, np.zeros(engine.unit_samples + 1, dtype=np.float32)),
            return_exceptions=True,
        )

    res = asyncio.run(main())
    assert res[0].index == 0 and isinstance(res[1], InputError)
    batcher.shutdown()

    async def after() -> None:
        await batcher.step(good, speech16k[:16000])

    with pytest.raises(RuntimeError, match="shutting down"):
        asyncio.run(after())


def test_admission_cost_model_from_round_sizes_and_live_slowdown():
    """Rounds cost c0 + c1*b: capacity follows c1 (what a session adds), not a lone unit's cost; live rounds
    slower than predicted shrink it; without batching every unit pays the lone unit's cost."""
    s = Scheduler(1, 1.0, 0.85)
    assert s.capacity() is None and s.admits(5)
    s.set_cost_model(0.010, 0.010 + 31 * 0.002, 32)  # c0 = 8 ms, c1 = 2 ms
    c0, c1, k = s.cost_model
    assert abs(c0 - 0.008) < 1e-9 and abs(c1 - 0.002) < 1e-9 and k == 1.0
    assert s.capacity() == 425  # min(0.85 / 0.002, (1 - 4 * 0.008) / 0.002): the load binds
    assert s.admits(400) and not s.admits(425)
    for _ in range(200):  # live rounds of 64 units take twice the prediction
        s.observe_round(2 * (0.008 + 0.002 * 64), 64)
    assert 1.9 < s.cost_model[2] <= 2.0 and s.capacity() in (212, 213)
    assert not s.admits(300)
    # a large fixed round cost: latency binds. A unit waits up to two rounds (one under way, then its own),
    # so capacity keeps two rounds within half a unit: (1 - 4 * 0.1) / 0.002 = 300, not (1 - 2 * 0.1) / 0.002 = 400
    slow = Scheduler(1, 1.0, 0.85)
    slow.set_cost_model(0.102, 0.102 + 31 * 0.002, 32)  # c0 = 100 ms, c1 = 2 ms
    assert slow.capacity() == 300
    assert slow.latency_s(300) <= 0.5 + 1e-9 < slow.latency_s(301)
    assert slow.admits(299) and not slow.admits(300)
    lone = Scheduler(1, 1.0, 0.85)
    lone.set_cost_model(0.02, 0.02, 1)
    assert lone.capacity() == 42


def test_continuous_batcher_streams_units_that_match_each_session_alone(engine, speech16k):
    """``serve.continuous_batching``: sessions streaming units at their own pace share model calls as
    they come; each unit's result equals the session run alone; the admission model gets its
    equivalent rounds; a failing unit fails alone."""
    from lws_core.errors import InputError

    blocks = _units(speech16k, 6)
    per = [blocks[0:3], blocks[2:5], blocks[3:6]]
    solo = []
    for bs in per:
        with engine.session() as s:
            solo.append([s.step(b) for b in bs])
    sched = Scheduler(1, 1.0, 0.85)
    sched.set_cost_model(0.01, 0.05, 8)
    batcher = Batcher(engine, sched, continuous=True)
    sessions = [engine.session() for _ in per]

    async def client(k: int) -> list:
        await asyncio.sleep(0.05 * k)  # staggered: later sessions join units under way
        return [await batcher.step(sessions[k], b) for b in per[k]]

    async def main() -> list:
        return await asyncio.gather(*(client(k) for k in range(len(per))))

    try:
        outs = asyncio.run(main())
        bad = engine.session()

        async def failing() -> list:
            return await asyncio.gather(
                batcher.step(sessions[0], blocks[5]),
                batcher.step(bad, np.zeros(engine.unit_samples + 1, dtype=np.float32)),
                return_exceptions=True,
            )

        res = asyncio.run(failing())
    finally:
        batcher.shutdown()
    for got, want in zip(outs, solo, strict=True):
        assert [(o.state, o.write, o.say) for o in got] == [(o.state, o.write, o.say) for o in want]
    assert max(batcher.round_sizes) >= 2  # units of different sessions shared model calls
    assert batcher.rounds == len(batcher.round_sizes) and batcher.rounds > 9  # a "round" is one model call
    assert sched.cost_model[2] != 1.0  # live calls fed the slowdown estimate
    assert res[0].index == 3 and isinstance(res[1], InputError) and bad.index == 0


@pytest.mark.parametrize("share, speakers", [(1.0, 8), (0.5, 4), (0.0, 0)])
def test_warmup_times_rounds_of_the_busiest_units(engine, monkeypatch, share, speakers):
    """The start-up estimate is timed on ``warmup_speak_share`` of the round's sessions decoding the busiest
    unit (speak, a forward per token: both budgets full, or with ``warmup_spoken`` as much as the model itself wrote
    and said on a spoken question) and the rest listening to silence; the lone round is a busiest unit whenever the
    share is above 0."""
    from lws_core.engine.policies import BusiestUnit
    from lws_core.serve.server import LWSServer
    from lws_core.serve.settings import ServeSettings

    rounds: list[list[bool]] = []
    real = engine.step_many
    sizes: set[tuple[int, int]] = set()

    def spy(pairs, return_exceptions=False):  # noqa: ANN001, ANN202
        rounds.append([isinstance(s.policy, BusiestUnit) for s, _ in pairs])
        sizes.update((s.policy.max_write, s.policy.max_say) for s, _ in pairs if isinstance(s.policy, BusiestUnit))
        return real(pairs, return_exceptions)

    monkeypatch.setattr(engine, "step_many", spy)
    spec = engine.model.spec
    for spoken in (False, True):
        rounds.clear()
        sizes.clear()
        server = LWSServer(engine, ServeSettings(warmup_batch=8, warmup_speak_share=share, warmup_spoken=spoken))
        server._warmup()
        lone = [share > 0]
        assert rounds == [lone, [True] * speakers + [False] * (8 - speakers)]  # each timed once
        # sized to what the model wrote and said on a spoken question (policies.busiest_spoken_unit), or both
        # budgets full: when asked to, when nothing is spoken in the round, or when the model said nothing
        full = (spec.max_write_tokens, spec.max_say_tokens)
        assert server.warmup_tokens is None or (spoken and share > 0)
        assert sizes == (set() if share == 0 else {server.warmup_tokens or full})
    c0, c1, k = server.scheduler.cost_model
    # a fitted model (how many sessions it admits depends on this machine's speed and load: benchmarks, not tests)
    assert c1 > 0 and k == 1.0 and server.scheduler.capacity() is not None


def test_latency_bound_takes_the_slow_rounds_not_the_mean():
    """A unit waits for the rounds under way, and the p95 unit for slow ones: one round in ten five times slower
    than predicted (a speaking unit's) barely moves the mean slowdown but sets the latency bound's."""
    s = Scheduler(1, 1.0, 0.85)
    s.set_cost_model(0.102, 0.102 + 31 * 0.002, 32)  # c0 = 100 ms, c1 = 2 ms: latency binds, 300 sessions
    assert s.capacity() == 300 and s.tail_k == 1.0
    for i in range(19):  # too few rounds for a tail: the mean is used
        s.observe_round(5 * (0.1 + 0.002 * 10) if i == 0 else 0.1 + 0.002 * 10, 10)
    assert s.tail_k == s.cost_model[2]
    for i in range(181):
        s.observe_round(5 * (0.1 + 0.002 * 10) if i % 10 == 0 else 0.1 + 0.002 * 10, 10)
    k = s.cost_model[2]
    assert k < 2.0 and 4.5 < s.tail_k < 5.01
    # two slow rounds must fit in half a unit: 1 - 4 * tail_k * c0 < 0, so none beyond the first session
    assert s.capacity() == 0 and s.admits(0) and not s.admits(1)
    assert s.latency_s(1) > 0.5


def test_admission_goes_only_a_step_past_the_load_shown_to_hold(monkeypatch):
    """Live rounds lighter than the warm-up's busiest units raise the capacity estimate, but admission trusts it only
    up to the warm-up's estimate or a step past a load held for HOLD_S whose served units kept the latency bound: as
    far as the queue leaves room, its busy share from the cost model and its latency's scale from the p95 measured at
    that load (``u' = 1 - p95 / B * (1 - u)``), at most GROWTH x. A load served over the bound does not count (stop 48:
    counting it let the next burst in at p95 1.4-2.0 s), and lowers the trust."""
    import lws_core.serve.scheduler as sched_mod
    from lws_core.serve.scheduler import GROWTH, HOLD_S

    clock = [1000.0]
    monkeypatch.setattr(sched_mod.time, "monotonic", lambda: clock[0])

    def serve(latency: float, load: int, units: int = 400, seconds: float = HOLD_S) -> None:
        clock[0] += HOLD_S + 1  # a new load: the last one's units have aged out
        for _ in range(units):
            clock[0] += seconds / units
            s.observe_latency(latency, load)

    s = Scheduler(1, 1.0, 0.85)
    s.set_cost_model(0.05, 0.05 + 31 * 0.02, 32)  # a lone unit 50 ms (the latency with no queue); the estimate 42
    assert s.capacity() == 42 == s.trusted()
    for _ in range(200):  # real rounds cost a quarter of the busiest units': 5 ms a session, a busy share 0.005 N
        s.observe_round(0.25 * (0.03 + 0.02 * 8), 8)
    assert s.capacity() > 150 and abs(s.utilization(100) - 0.5) < 1e-6
    assert s.admits(41) and not s.admits(42)  # nothing served yet beyond the warm-up's estimate
    serve(0.06, 50, units=sched_mod.SERVED_MIN_UNITS - 1)  # too few units to show anything
    assert s.proven == 0 and s.trusted() == 42
    serve(0.06, 50, seconds=HOLD_S / 2)  # served for too short a time: its first units are not all a load costs
    assert s.proven == 0 and s.trusted() == 42
    serve(0.06, 50)  # held, barely a queue: room for the most a step may take
    assert s.proven == 50 and s.trusted() == math.floor(GROWTH * 50) == 75
    assert s.admits(74) and not s.admits(75)
    serve(0.04, 40)  # a lighter moment does not lower what has been shown
    assert s.proven == 50 and s.trusted() == 75
    serve(0.42, 70)  # near the bound at a busy share of 0.35: the bound comes at u' = 1 - 0.84 * 0.65 = 0.454,
    assert s.proven == 70 and s.trusted() == 90  # 90.8 sessions (a queue L0 / (1 - N / C) from L0 = 40 ms: 71)
    serve(0.49, 70)  # within the bound but at its edge: little room past it, and what was shown stays
    assert s.proven == 70 and s.trusted() == 90
    serve(0.8, 74)  # a heavier load served over the bound shows nothing and lowers the trust: a p95 this far over at a
    assert s.proven == 70 and s.trusted() == 37  # busy share of 0.37 is no queue's, so at most halved (74 / 2)
    serve(0.2, 37)  # a load held again raises it again, a step at a time
    assert s.proven == 70 and s.trusted() == math.floor(GROWTH * 37) == 55
    fresh = Scheduler(1, 1.0, 0.85)
    fresh.set_cost_model(0.05, 0.05 + 31 * 0.02, 32)
    s = fresh
    serve(0.8, 40)  # a load under the warm-up's estimate served over the bound lowers the trust below that estimate:
    assert fresh.proven == 0 and fresh.trusted() == 34 < 42  # u = 0.8, u' = 1 - 1.6 * 0.2 = 0.68: 34 sessions
    past = Scheduler(1, 1.0, 0.85)
    past.set_cost_model(0.05, 0.05 + 31 * 0.02, 32)
    s = past
    serve(0.3, 60)  # held where the model puts the busy share past 1 (its per-session cost too high): the room is
    assert past.proven == 60 and past.trusted() == math.floor(60 * 0.9 / (1 - 0.05 / 0.3)) == 64  # L0 = 50 ms's queue


def test_latency_bound_adds_what_served_units_exceeded_the_model_by(monkeypatch):
    """Units served slower than the model predicts at their load (costs that grow faster than linearly) lower the
    capacity by that excess; faster ones change nothing; the correction lapses once the load is gone."""
    import lws_core.serve.scheduler as sched_mod

    clock = [1000.0]
    monkeypatch.setattr(sched_mod.time, "monotonic", lambda: clock[0])
    s = Scheduler(1, 1.0, 0.85)
    s.set_cost_model(0.052, 0.052 + 31 * 0.003, 32)  # c0 = 49 ms, c1 = 3 ms
    base = s.capacity()
    assert base is not None and s.admits(base - 5) and s.latency_excess == 0.0
    predicted = s.latency_s(100)
    for _ in range(sched_mod.SERVED_MIN_UNITS - 1):  # too few units: no correction yet
        s.observe_latency(predicted + 0.2, 100)
    assert s.latency_excess == 0.0
    for _ in range(100):
        s.observe_latency(predicted + 0.2, 100)
    assert abs(s.latency_excess - 0.2) < 1e-6
    cap = s.capacity()
    assert cap < base - 5 and not s.admits(base - 5) and s.admits(cap - 5)
    assert s.latency_s(101) > s._model_latency_s(101) + 0.19
    clock[0] += sched_mod.SERVED_MAX_AGE_S + 1  # the load has gone: the past overload does not keep refusing
    assert s.latency_excess == 0.0 and s.capacity() == base
    for _ in range(200):  # faster than predicted: nothing to correct
        s.observe_latency(predicted / 2, 100)
    assert s.latency_excess == 0.0 and s.capacity() == base


def test_a_busy_spells_excess_counts_in_proportion_below_its_load(monkeypatch):
    """Units served over the bound at 60 sessions: from 60 up their excess counts whole, below it in proportion, so
    the next burst on an emptied server is admitted up to about the load that was shown to hold, not refused whole
    (with the excess added whole at every load, as before stop 48, nothing past the first session would be)."""
    import lws_core.serve.scheduler as sched_mod

    clock = [1000.0]
    monkeypatch.setattr(sched_mod.time, "monotonic", lambda: clock[0])
    s = Scheduler(1, 1.0, 0.85)
    s.set_cost_model(0.052, 0.052 + 31 * 0.003, 32)  # c0 = 49 ms, c1 = 3 ms: 268 sessions by the model alone
    assert s.capacity() == 268
    for _ in range(100):
        s.observe_latency(s._model_latency_s(60) + 0.45, 60)
    excess, at = s._excess_at()
    assert at == 60 and abs(excess - 0.45) < 1e-6
    assert s.latency_s(30) == pytest.approx(s._model_latency_s(30) + 0.225)
    assert s.latency_s(90) == pytest.approx(s._model_latency_s(90) + 0.45)
    assert s.latency_s(60) > 0.5  # the load it was measured at broke the bound: capacity falls below it
    cap = s.capacity()
    assert 40 < cap < 60 and s.latency_s(cap) <= 0.5 < s.latency_s(cap + 1)
    assert s.admits(cap - 1) and not s.admits(cap)
    assert 2 * s.tail_k * s.cost_model[0] > 0.5 - 0.45  # the old, additive bound: no room for even one session

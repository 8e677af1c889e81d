"""Batched decoding across sessions: the fused forward equals the HF forward for every supported
architecture, alone and batched with other sessions at other positions; ``Engine.step_many`` gives
each session exactly what it would get alone; the per-session cache is allocated once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lws_core.engine import Engine, EngineConfig
from lws_core.engine.fastpath import FastPath, Feed
from lws_core.errors import InputError


def _tiny_lm(arch: str) -> torch.nn.Module:
    """A random-init backbone of the named family with grouped-query attention (2 kv heads for 4)."""
    import transformers as tf

    common = dict(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )
    cfg = {
        "llama": lambda: tf.LlamaConfig(**common),
        "qwen2": lambda: tf.Qwen2Config(**common),
        "qwen3": lambda: tf.Qwen3Config(**common, head_dim=16),
    }[arch]()
    torch.manual_seed(1)
    return tf.AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_fused_batched_forward_equals_hf_full_forward(arch):
    """Two sessions fed ragged chunks in shared forwards; each one's logits == HF over its own stream."""
    lm = _tiny_lm(arch)
    assert FastPath.supports(lm)
    fast = FastPath(lm)
    gen = torch.Generator().manual_seed(0)
    streams = [torch.randn(40, 64, generator=gen), torch.randn(40, 64, generator=gen)]
    kvs = [fast.new_kv(64, torch.device("cpu"), torch.float32) for _ in streams]
    with torch.inference_mode():
        refs = [lm(inputs_embeds=s.unsqueeze(0), use_cache=False).logits[0] for s in streams]
        pos = [0, 0]
        # ragged rounds: a prefill next to decode steps, a row without logits, one session alone
        for sizes, want in [((7, 3), (True, True)), ((1, 5), (True, False)), ((1, 1), (True, True)),
                            ((4, 0), (True, None)), ((1, 0), (True, None)), ((1, 1), (False, True)),
                            ((2, 9), (True, True))]:
            feeds, who = [], []
            for j, (n, w) in enumerate(zip(sizes, want, strict=True)):
                if n:
                    feeds.append(Feed(streams[j][pos[j] : pos[j] + n], kvs[j], pos[j], bool(w)))
                    who.append((j, n, w))
            out = fast.forward(feeds)
            for (j, n, w), logits in zip(who, out, strict=True):
                pos[j] += n
                if w:
                    torch.testing.assert_close(logits, refs[j][pos[j] - 1], atol=2e-5, rtol=1e-5)
                else:
                    assert logits is None
                assert kvs[j].length == pos[j]


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_pool_block_rounds_equal_the_hf_forward_and_keep_sessions_apart(arch):
    """Caches are slots of a shared pool block; a round of single tokens attends for all of them in one call
    over the block. Each session's logits still equal HF over its own stream, at its own position (sessions
    started at different times), with a prefill in the same forward, and with a sparse round (four of nine
    slots). Closing a cache gives its slot back; a new session there is not poisoned by what it held."""
    lm = _tiny_lm(arch)
    fast = FastPath(lm)
    gen = torch.Generator().manual_seed(0)
    n_s = 9
    streams = [torch.randn(48, 64, generator=gen) for _ in range(n_s)]
    kvs = [fast.new_kv(64, torch.device("cpu"), torch.float32) for _ in streams]
    assert len({kv.slot for kv in kvs}) == n_s and len({id(kv.block) for kv in kvs}) == 1
    with torch.inference_mode():
        refs = [lm(inputs_embeds=s.unsqueeze(0), use_cache=False).logits[0] for s in streams]
        pos = [0] * n_s
        for j in range(n_s):  # different context lengths: 3 .. 11 positions
            fast.forward([Feed(streams[j][: 3 + j], kvs[j], 0)])
            pos[j] = 3 + j
        rounds = fast.pooled_rounds
        plan = [list(range(n_s))] * 4 + [[0, 3, 6, 8]] + [list(range(1, n_s))] * 2
        for r, who in enumerate(plan):
            sizes = {j: (4 if (r == 1 and j == 2) else 1) for j in who}  # session 2 prefills in round 1
            out = fast.forward([Feed(streams[j][pos[j] : pos[j] + sizes[j]], kvs[j], pos[j]) for j in who])
            for j, logits in zip(who, out, strict=True):
                pos[j] += sizes[j]
                torch.testing.assert_close(logits, refs[j][pos[j] - 1], atol=2e-5, rtol=1e-5)
                assert kvs[j].length == pos[j]
        assert fast.pooled_rounds == rounds + len(plan)  # short contexts: even the sparse round is a block call
    pool = next(iter(fast._pools.values()))
    assert pool.in_use == n_s
    slot = kvs[4].slot
    kvs[4].buf.fill_(float("nan"))  # what a slot may hold when handed out again: anything
    kvs[4].free_slot()
    assert pool.in_use == n_s - 1 and kvs[4].block is None
    kvs[4] = fast.new_kv(64, torch.device("cpu"), torch.float32)
    assert kvs[4].slot == slot and pool.in_use == n_s
    with torch.inference_mode():  # a new session in that slot, in a block round with longer contexts: unpoisoned
        fast.forward([Feed(streams[4][:2], kvs[4], 0)])
        pos[4] = 2
        rounds = fast.pooled_rounds
        out = fast.forward([Feed(streams[j][pos[j] : pos[j] + 1], kvs[j], pos[j]) for j in range(n_s)])
        assert fast.pooled_rounds == rounds + 1
        for j, logits in enumerate(out):
            torch.testing.assert_close(logits, refs[j][pos[j]], atol=2e-5, rtol=1e-5)


def test_block_attention_only_where_predicted_cheaper():
    """A block call reads its whole slot range up to the longest context: chosen for a full range at any
    length and a sparse one at short contexts; a sparse range at long contexts, fewer than BLOCK_MIN_FEEDS
    feeds, prefills and caches of their own attend one session at a time."""
    from lws_core.engine.fastpath import BLOCK_MIN_FEEDS, _block_groups

    fast = FastPath(_tiny_lm("llama"))
    kvs = [fast.new_kv(2048, torch.device("cpu"), torch.float32) for _ in range(16)]
    own = fast.new_kv(2048, torch.device("cpu"), torch.float32, pooled=False)
    x = torch.zeros(1, 64)

    def plan(who: list[int], start: int, extra: list[Feed] = ()) -> tuple[int, int]:  # (block groups, feeds left)
        feeds = [Feed(x, kvs[j], start) for j in who] + list(extra)
        sizes = [f.embeds.shape[0] for f in feeds]
        rows = [(f.kv, f.start, i, i + n, None) for i, (f, n) in enumerate(zip(feeds, sizes, strict=True))]
        groups, loose = _block_groups(feeds, sizes, rows, torch.device("cpu"))
        return len(groups), len(loose)

    assert plan(list(range(16)), 1500) == (1, 0)  # every slot of the range: a block at any length
    assert plan(list(range(0, 16, 3)), 50) == (1, 0)  # one slot in three, short contexts: still a block
    assert plan(list(range(0, 16, 3)), 1500) == (0, 6)  # ... long contexts: one by one
    assert plan(list(range(BLOCK_MIN_FEEDS - 1)), 50) == (0, BLOCK_MIN_FEEDS - 1)
    prefill = Feed(torch.zeros(5, 64), kvs[15], 10)
    assert plan(list(range(8)), 100, [prefill, Feed(x, own, 100)]) == (1, 2)


def test_compiled_decode_step_equals_the_hf_forward_without_recompiling():
    """engine.compile_decode: inductor's single-token step (Qwen3: q/k norms, grouped-query attention)
    gives the HF forward's logits at every position, across the cache growing, with no new compile."""
    from torch._dynamo.utils import counters

    lm = _tiny_lm("qwen3")
    fast = FastPath(lm)
    assert fast.compile_decode() > 0 and fast._compiled is not None
    compiled = counters["stats"]["unique_graphs"]
    kv = fast.new_kv(100_000, torch.device("cpu"), torch.float32)  # growable: 1,024 positions, then reallocates
    first_capacity = kv.capacity
    with torch.inference_mode():  # as the engine feeds it
        stream = torch.randn(1100, 64, generator=torch.Generator().manual_seed(3))
        ref = lm(inputs_embeds=stream.unsqueeze(0), use_cache=False).logits[0]
        fast.forward([Feed(stream[:10], kv, 0)])  # a prefill: the general path
        for p in range(10, 1100):
            out = fast.forward([Feed(stream[p : p + 1], kv, p)])[0]
            torch.testing.assert_close(out, ref[p], atol=2e-5, rtol=1e-5)
    assert kv.capacity > first_capacity and kv.length == 1100
    assert counters["stats"]["unique_graphs"] == compiled  # positions and capacity are symbolic


def _units(audio: np.ndarray, n: int, offset: int) -> list[np.ndarray]:
    a = np.roll(np.tile(audio, 3), -offset)
    return [a[i * 16000 : (i + 1) * 16000] for i in range(n)]


def test_step_many_gives_each_session_what_it_gets_alone(engine, speech):
    """Three sessions (different prompts and audio) stepped together == each stepped alone, logit by logit."""
    eng = Engine(engine.model, EngineConfig(temperature=1.0, seed=5, weight_dtype="model", batch_dtype="model"), engine.tts)
    prompts = [None, "Take notes.", "You are terse."]
    offsets = [0, 8000, 24000]

    def run(batched: bool) -> list:  # noqa: ANN001
        sessions = [eng.session(system=p, trace=True) for p in prompts]
        outs = [[] for _ in sessions]
        for u in range(4):
            blocks = [_units(speech, 4, off)[u] for off in offsets]
            if batched:
                res = eng.step_many(list(zip(sessions, blocks, strict=True)))
            else:
                res = [s.step(b) for s, b in zip(sessions, blocks, strict=True)]
            for o, r in zip(outs, res, strict=True):
                o.append(r)
        return sessions, outs

    alone_s, alone = run(batched=False)
    batch_s, batch = run(batched=True)
    for a_sess, b_sess, a_out, b_out in zip(alone_s, batch_s, alone, batch, strict=True):
        assert [(u.state, u.write, u.say, u.eot) for u in a_out] == [(u.state, u.write, u.say, u.eot) for u in b_out]
        assert [p for p, _ in a_sess.trace_logits] == [p for p, _ in b_sess.trace_logits]
        for (_, la), (_, lb) in zip(a_sess.trace_logits, b_sess.trace_logits, strict=True):
            torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-4)
        # and the batched session's cache equals one full recompute of its own stream
        full = torch.cat(b_sess._fed, dim=1)
        with torch.inference_mode():
            ref = b_sess.model.lm(inputs_embeds=full, use_cache=False).logits[0].float()
        for pos, logits in b_sess.trace_logits:
            torch.testing.assert_close(logits, ref[pos], atol=2e-5, rtol=1e-5)


def test_step_many_returns_one_sessions_error_and_serves_the_others(engine, speech):
    from lws_core.errors import InputError

    good, bad = engine.session(), engine.session()
    res = engine.step_many(
        [(good, speech[:16000]), (bad, np.zeros(engine.unit_samples + 1, dtype=np.float32))],
        return_exceptions=True,
    )
    assert isinstance(res[1], InputError) and res[0].index == 0 and good.index == 1
    assert bad.index == 0  # nothing of the failed unit was kept
    with pytest.raises(InputError, match="one unit"):
        engine.step_many([(bad, np.zeros(engine.unit_samples + 1, dtype=np.float32))])
    with pytest.raises(ValueError, match="twice"):
        engine.step_many([(good, speech[:16000]), (good, speech[:16000])])
    good.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.step_many([(good, speech[:16000])])


def test_units_joining_a_running_batch_get_what_they_get_alone(engine, speech):
    """Continuous batching: units join the shared batch between model calls (session B starts its
    unit several calls after A, C after B) and each still gets exactly its solo decode."""
    from lws_core.engine.batch import UnitBatch

    eng = Engine(engine.model, EngineConfig(temperature=1.0, seed=3, weight_dtype="model", batch_dtype="model"), engine.tts)
    offsets = [0, 8000, 24000]
    blocks = [_units(speech, 3, off) for off in offsets]

    def alone(k: int) -> list:
        with eng.session() as s:
            return [s.step(b) for b in blocks[k]]

    solo = [alone(k) for k in range(3)]
    sessions = [eng.session() for _ in offsets]
    got: list[list] = [[] for _ in offsets]
    batch = UnitBatch(eng)
    start_at = {0: 0, 1: 3, 2: 5}  # calls after which each session first joins
    sizes = []
    for call in range(400):
        for k, s in enumerate(sessions):
            if call >= start_at[k] and s not in batch and len(got[k]) < 3:
                batch.add(s, blocks[k][len(got[k])], got[k].append)
        if not batch:
            break
        sizes.append(len(batch))
        batch.tick()
    assert not batch and [len(g) for g in got] == [3, 3, 3]
    assert 1 in sizes and max(sizes) == 3  # A ran alone first, then the others joined it mid-unit
    for k in range(3):
        assert [(u.state, u.write, u.say, u.eot) for u in got[k]] == [(u.state, u.write, u.say, u.eot) for u in solo[k]]
    with pytest.raises(ValueError, match="already"):
        batch.add(sessions[0], blocks[0][0], got[0].append)
        batch.add(sessions[0], blocks[0][0], got[0].append)
    while batch:
        batch.tick()
    sessions[1].close()
    errors: list = []
    batch.add(sessions[1], blocks[1][0], errors.append)  # a closed session fails through its callback
    assert isinstance(errors[0], RuntimeError) and not batch
    assert sessions[1]._lock.acquire(blocking=False)  # and its lock was released


def test_session_cache_is_allocated_once_and_reused_by_window_slides(engine, speech):
    """The fused path's cache is one preallocated buffer: the sliding window refills it in place."""
    eng = Engine(engine.model, EngineConfig(max_context_tokens=400, keep_units=2, temperature=1.5, seed=1), engine.tts)
    with eng.session() as sess:
        kv = sess._cache
        ptr = kv.buf.data_ptr()
        assert kv.capacity == 400
        for block in _units(speech, 12, 0):
            sess.step(block)
            assert sess.context_tokens <= 400
        assert sess.rebuilds >= 1
        assert sess._cache is kv and kv.allocations == 1 and kv.buf.data_ptr() == ptr


def _worst_against_full_forward(eng: Engine, speech: np.ndarray) -> tuple[float, torch.Tensor]:
    """Three units through ``eng``; the largest logit error, relative to the logit scale, against the HF
    model's full forward over the same embeddings (and those embeddings)."""
    with eng.session(system="Hi.", trace=True) as sess:
        for block in _units(speech, 3, 0):
            sess.step(block)
        full = torch.cat(sess._fed, dim=1)
        with torch.inference_mode():
            ref = sess.model.lm(inputs_embeds=full, use_cache=False).logits[0].float()
        worst = max(float((lg - ref[pos]).abs().max() / ref[pos].abs().max()) for pos, lg in sess.trace_logits)
    return worst, full


def test_half_precision_kv_cache_stays_close_to_the_exact_forward(engine, speech):
    """kv_dtype=bfloat16 halves what attention reads per token; its logits stay near the exact forward's."""
    eng = Engine(engine.model, EngineConfig(kv_dtype="bfloat16", weight_dtype="model", temperature=1.0, seed=2), engine.tts)
    with eng.session() as sess:
        assert sess._cache.buf.dtype == torch.bfloat16
    worst, _ = _worst_against_full_forward(eng, speech)
    assert 0 < worst < 0.05  # not exact (bf16 keys and values), but within a few percent of the logit scale


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_weights_stay_close_to_the_exact_forward(engine, speech, dtype):
    """weight_dtype halves the bytes a single-token step reads; its logits stay near the exact forward's,
    and steps of several rows (prefills, batched sessions) keep the exact weights."""
    eng = Engine(engine.model, EngineConfig(weight_dtype=dtype, temperature=1.0, seed=2), engine.tts)
    fast = eng.fast_path
    assert fast.layers[0]["low"]["qkv"][0].dtype == getattr(torch, dtype)
    assert fast.weight_rows == 1  # auto: half-precision products over more rows are slower here
    assert Engine(engine.model, EngineConfig(weight_dtype=dtype, weight_rows=4), engine.tts).fast_path.weight_rows == 4
    assert next(engine.model.lm.parameters()).dtype == torch.float32  # the model itself is untouched
    worst, full = _worst_against_full_forward(eng, speech)
    assert 0 < worst < 0.05  # not exact (half-precision weights), but within a few percent of the logit scale
    exact = FastPath(engine.model.lm)
    n = 9
    kv_a, kv_b = fast.new_kv(64, full.device, torch.float32), exact.new_kv(64, full.device, torch.float32)
    prefill = fast.forward([Feed(full[0, :n], kv_a, 0)])[0]
    torch.testing.assert_close(prefill, exact.forward([Feed(full[0, :n], kv_b, 0)])[0])  # several rows: exact
    step = fast.forward([Feed(full[0, n : n + 1], kv_a, n)])[0]
    step_exact = exact.forward([Feed(full[0, n : n + 1], kv_b, n)])[0]
    assert 0 < float((step - step_exact).abs().max()) < 0.05 * float(step_exact.abs().max())  # one row: the copies


def test_int8_weights_quantize_per_channel_and_stay_close_to_the_exact_forward(engine, speech):
    """weight_dtype=int8: a quarter of the float32 bytes per single-token step. Each copy dequantizes to
    its weight within half a step of its row's scale; the engine's logits stay near the exact forward's
    (looser than float16: 7 bits per weight). The copies also serve forwards of up to INT8_ROWS rows (a
    forced token's feed, small server rounds); longer ones (a unit's audio prefill) keep the exact weights."""
    from lws_core.engine.engine import _weight_dtype
    from lws_core.engine.fastpath import _int8_rows

    w = torch.randn(48, 32, generator=torch.Generator().manual_seed(0))
    q, scale = _int8_rows(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.bfloat16 and scale.shape == (48,)
    assert bool((q.abs().amax(dim=1) >= 125).all())  # each row's range is used (less a bf16 step of its scale)
    err = (q.float() * scale.float()[:, None] - w).abs().amax(dim=1)
    assert bool((err <= 0.5 * scale.float() * (1 + 1e-5)).all())  # against the scale the kernel multiplies by

    eng = Engine(engine.model, EngineConfig(weight_dtype="int8", temperature=1.0, seed=2), engine.tts)
    fast = eng.fast_path
    qkv_w, _, qkv_s = fast.layers[0]["low"]["qkv"]
    assert qkv_w.dtype == torch.int8 and qkv_s is not None and fast.head_low[0].dtype == torch.int8
    worst, full = _worst_against_full_forward(eng, speech)
    assert 0 < worst < 0.15  # within some percent of the logit scale
    from lws_core.engine.fastpath import INT8_ROWS

    exact = FastPath(engine.model.lm)
    assert fast.weight_rows == INT8_ROWS and fast.batch_rows > INT8_ROWS and exact.weight_rows == 1
    assert full.shape[1] > INT8_ROWS + 1

    def prefill(path: FastPath, n: int) -> torch.Tensor:
        return path.forward([Feed(full[0, :n], path.new_kv(64, full.device, torch.float32), 0)])[0]

    few, ref = prefill(fast, INT8_ROWS), prefill(exact, INT8_ROWS)
    assert 0 < float((few - ref).abs().max()) < 0.15 * float(ref.abs().max())  # a few rows: the int8 copies
    torch.testing.assert_close(prefill(fast, INT8_ROWS + 1), prefill(exact, INT8_ROWS + 1))  # more: exact
    with pytest.raises(InputError, match="CPU decode format"):
        _weight_dtype("int8", torch.empty(1, device="meta"))


def test_auto_weights_are_int8_copies_on_a_cpu_that_runs_the_kernel():
    """engine.weight_dtype=auto: int8 copies for a float32 model on a CPU whose torch runs aten's int8 product
    (float16 where it does not), the model's own weights elsewhere (a GPU, a half-precision model)."""
    from lws_core.engine.engine import _weight_dtype, int8_kernel

    assert int8_kernel()  # this project's torch (2.13, x86-64 CPU wheel) has it
    assert _weight_dtype("auto", torch.empty(1)) == torch.int8
    assert _weight_dtype("auto", torch.empty(1, dtype=torch.bfloat16)) is None
    assert _weight_dtype("auto", torch.empty(1, device="meta")) is None
    assert _weight_dtype("model", torch.empty(1)) is None and _weight_dtype("float16", torch.empty(1)) == torch.float16


def test_bfloat16_copies_serve_big_forwards_and_stay_close(engine, speech):
    """batch_dtype: forwards of batch_rows rows or more (and the encoder over many windows) use bf16 copies,
    within a few percent of the exact logits; smaller forwards keep the exact weights."""
    from lws_core.engine.engine import ENCODER_BATCH_WINDOWS
    from lws_core.engine.session import AudioRequest

    eng = Engine(engine.model, EngineConfig(weight_dtype="model", batch_dtype="bfloat16", batch_rows=8), engine.tts)
    fast, exact = eng.fast_path, FastPath(engine.model.lm)
    assert fast.layers[0]["big"]["gu"][0].dtype == torch.bfloat16 and fast.layers[0]["low"] is None
    h = engine.model.lm.config.hidden_size
    x = torch.randn(12, h, generator=torch.Generator().manual_seed(0)) * 0.05

    def run(fp: FastPath, n: int) -> torch.Tensor:
        return fp.forward([Feed(x[:n], fp.new_kv(64, x.device, torch.float32), 0)])[0]

    torch.testing.assert_close(run(fast, 7), run(exact, 7))  # 7 rows < batch_rows: exact
    big, ref = run(fast, 12), run(exact, 12)
    assert 0 < float((big - ref).abs().max()) < 0.05 * float(ref.abs().max())
    windows = [np.asarray(speech[i * 4000 : i * 4000 + eng.model.audio.window_samples]) for i in range(ENCODER_BATCH_WINDOWS)]
    got = eng.execute([AudioRequest(w.astype(np.float32)) for w in windows])
    with torch.no_grad():
        want = engine.model.audio(torch.from_numpy(np.stack(windows)))
    for g, w in zip(got, want, strict=True):
        assert 0 < float((g - w).abs().max()) < 0.05 * float(w.abs().max())

"""StreamingSession guarantees that hold for any weights (random-init model): every unit parses, budgets
hold, the kept cache equals a full recompute, per-unit work is flat, barge-in drops queued speech, and the
sliding window bounds the context while the session goes on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lws_core.engine import Engine, EngineConfig
from lws_core.schema import Phase, parse

LONG = " 9876 5432 1987"  # few tokens of the tiny BPE, about 5.7 s of speech (three ~2 s number words)


def _units(audio: np.ndarray, n: int, unit: int = 16000) -> list[np.ndarray]:
    """n unit-sized blocks, cycling through the audio."""
    reps = -(-n * unit // len(audio)) + 1
    a = np.tile(audio, reps)
    return [a[i * unit : (i + 1) * unit] for i in range(n)]


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_random_weights_always_parse_within_budgets(engine, speech, temperature):
    eng = Engine(
        engine.model, EngineConfig(temperature=temperature, top_p=0.95, seed=3, keep_units=64), engine.tts
    )
    spec, tok, ids = eng.model.spec, eng.model.tokenizer, eng.model.tokenizer.special
    with eng.session(system="You are a helpful assistant.") as sess:
        outs = [sess.step(a) for a in _units(speech, 8)]
        stream = []
        for rec in sess._history:  # the exact token stream the model produced, re-parsed strictly
            stream += [ids.unit, *[ids.audio] * spec.audio_tokens_per_unit, *rec.gen_ids]
    parsed = parse(stream, tok, strict=True)
    assert len(parsed) == 8
    for u, p in zip(outs, parsed, strict=True):
        assert (u.state, u.write, u.say, u.eot) == (p.state, p.write, p.say, p.eot)
        assert len(p.write_ids) <= spec.max_write_tokens and len(p.say_ids) <= spec.max_say_tokens
        assert u.timings["write_tokens"] == len(p.write_ids) and u.timings["say_tokens"] == len(p.say_ids)
        assert u.state == "speak" or (u.say == "" and u.speech_words == [])
    # (schema.validate re-encodes decoded text, which may count random token sequences differently:
    #  the budget is on generated tokens, checked above on the ids themselves)
    if temperature > 0:  # random weights sampled at high temperature babble: budgets must have been hit
        assert any(u.forced for u in outs)


def _full_recompute_check(sess) -> int:  # noqa: ANN001
    """Logits used at every decision == one full forward over the same embeddings (no cache)."""
    full = torch.cat(sess._fed, dim=1)
    with torch.inference_mode():
        ref = sess.model.lm(inputs_embeds=full, use_cache=False).logits[0].float()
    assert len(sess.trace_logits) > 0
    for pos, logits in sess.trace_logits:
        torch.testing.assert_close(logits, ref[pos], atol=2e-5, rtol=1e-5)  # measured: <1e-6
    return len(sess.trace_logits)


def test_kept_cache_equals_full_recompute(engine, speech):
    with engine.session(system="Take notes.", trace=True) as sess:
        for a in _units(speech, 6):
            sess.step(a)
        assert sess.context_tokens == sum(e.shape[1] for e in sess._fed)
        assert _full_recompute_check(sess) >= 6 * 2  # at least prefill + state decision per unit


def test_per_unit_cost_is_flat_and_naive_grows(engine, speech):
    """Counts tokens fed to the model per step (not wall time): flat for the kept cache, growing for the baseline."""
    fast, naive = engine.session(), engine.session(naive=True)
    fed_fast, fed_naive = [], []
    for a in _units(speech, 8):
        fed_fast.append(fast.step(a).timings["tokens_fed"])
        fed_naive.append(naive.step(a).timings["tokens_fed"])
    assert max(fed_fast) <= fast.per_unit_max
    assert fed_fast[-1] < fast.context_tokens / 4  # the last unit fed a small slice of its context
    assert (
        fed_naive[-1] >= naive.context_tokens - naive.per_unit_max
    )  # the baseline re-fed (almost) all of it
    assert fed_naive[-1] > 4 * max(fed_fast)


def _script(engine: Engine, states: list[str], say: str, say_units: int = 99):
    """A decoding policy that forces each unit's state and says ``say`` in speak units (write nothing).

    The states are scripted (random weights would not produce the scenario on demand); everything
    else is the real decoding loop, grammar, TTS and speech queue."""
    ids = engine.model.tokenizer.special
    text = engine.model.tokenizer.encode_text(say)[: engine.model.spec.max_say_tokens]

    def policy(ctx):  # noqa: ANN001, ANN202
        st = states[ctx.unit] if ctx.unit < len(states) else "listen"
        if len(ctx.allowed) == 1 and not ctx.text_allowed:
            return None  # the grammar forces this token
        if ctx.phase == Phase.STATE:
            return ids.speak if st == "speak" else ids.listen
        if ctx.phase == Phase.WRITE:
            return ids.say
        if ctx.phase == Phase.SAY and st == "speak" and ctx.unit < say_units and ctx.n_say < len(text):
            return text[ctx.n_say]
        return ids.end

    return policy


def test_barge_in_drops_queued_speech_scripted(engine):
    """Scripted states: speak a long sentence in unit 0, return to listening in unit 1."""
    sess = engine.session(policy=_script(engine, ["speak", "listen"], LONG))
    silence = np.zeros(engine.unit_samples, dtype=np.float32)
    first = sess.step(silence)
    assert first.state == "speak" and not first.barge_in
    assert first.speech.size == engine.unit_samples  # the first second plays during unit 1
    assert sess.queued_speech_s > 0.5  # the rest waits in the queue
    second = sess.step(silence)
    assert second.state == "listen" and second.barge_in
    assert second.speech.size == 0 and sess.queued_speech_s == 0  # dropped at once
    for _ in range(6):  # ... and never spoken later
        later = sess.step(silence)
        assert later.speech.size == 0 and later.speech_words == [] and not later.barge_in
    assert [w.text for w in first.speech_words] == ["9876"]  # "5432" and "1987" were never spoken


def test_barge_in_in_simulation_cuts_audio_and_words(engine):
    n = engine.unit_samples
    audio = np.zeros(5 * n, dtype=np.float32)
    res = engine.simulate(audio, policy=_script(engine, ["speak", "listen"], LONG))
    assert [u.state for u in res.units] == ["speak", "listen", "listen", "listen", "listen"]
    assert res.units[1].barge_in
    assert np.abs(res.output_audio[:n]).max() == 0  # nothing plays before the first unit has been heard
    assert np.abs(res.output_audio[n : 2 * n]).max() > 0.01  # unit 0's speech plays during unit 1
    assert np.abs(res.output_audio[2 * n :]).max() == 0  # dropped speech is never played
    assert res.spoken_words and all(w.end <= 2.0 + 1e-6 for w in res.spoken_words)


def test_speech_longer_than_a_unit_spills_over(engine):
    n = engine.unit_samples
    res = engine.simulate(
        np.zeros(5 * n, dtype=np.float32), policy=_script(engine, ["speak"] * 5, LONG, say_units=2)
    )
    assert not any(u.barge_in for u in res.units)
    voiced = [float(np.abs(res.output_audio[i * n : (i + 1) * n]).max()) > 0.01 for i in range(5)]
    assert voiced[:4] == [False, True, True, True]  # two long phrases play back to back from unit 1 on
    starts = [w.start for w in res.spoken_words]
    assert starts == sorted(starts) and starts[0] >= 1.0


def test_barge_in_invariant_with_real_decoding(engine, speech):
    """The model's own (random, sampled) decisions: whenever it listens while speech is queued, the queue goes."""
    eng = Engine(engine.model, EngineConfig(temperature=5.0, seed=11), engine.tts)  # hot: states flip often
    sess = eng.session()
    seen = 0
    for a in _units(speech, 16):
        queued = sess.queued_speech_s
        u = sess.step(a)
        assert u.barge_in == (u.state == "listen" and queued > 0)
        if u.barge_in:
            seen += 1
            assert u.speech.size == 0 and sess.queued_speech_s == 0
    assert seen >= 1


def test_sliding_window_bounds_context_and_session_goes_on(engine, speech):
    cfg = EngineConfig(max_context_tokens=300, keep_units=3, keep_document_tokens=16, temperature=1.0, seed=5, weight_dtype="model", batch_dtype="model")
    eng = Engine(engine.model, cfg, engine.tts)
    with eng.session(system="Notes.", trace=True) as sess:
        fed = []
        for a in _units(speech, 16):
            out = sess.step(a)
            fed.append(out.timings["tokens_fed"])
            assert sess.context_tokens <= cfg.max_context_tokens
        assert sess.rebuilds >= 2  # the window slid several times ...
        assert sess.rebuilds <= 16 // 2  # ... but the cache is not rebuilt every unit
        assert sess.index == 16 and len(sess._history) <= cfg.keep_units
        # after the last rebuild the cache still equals a full recompute of the rebuilt context
        _full_recompute_check(sess)
        # the rebuilt context starts with the session prompt and a compact copy of the written document
        assert sess.prefix_ids[0] == sess.ids.session and sess.prefix_ids[-1] == sess.ids.end
        prompt = sess.tok.decode_text(sess.prefix_ids[1:-1])
        assert prompt.startswith("Notes.")
        enc = sess.tok.encode_text
        assert len(sess.document) > 0
        assert len(sess.prefix_ids) == 2 + len(enc("Notes.")) + len(enc("\n\n")) + cfg.keep_document_tokens


def test_tiny_context_is_a_config_error(engine):
    from lws_core.errors import ConfigError

    eng = Engine(engine.model, EngineConfig(max_context_tokens=64), engine.tts)
    with pytest.raises(ConfigError, match="max_context_tokens"):
        eng.session()


def test_step_rejects_oversized_block(engine):
    from lws_core.errors import InputError

    with pytest.raises(InputError, match="one unit"):
        engine.session().step(np.zeros(engine.unit_samples + 1, dtype=np.float32))


@pytest.mark.parametrize("fast_path", [True, False])
def test_both_forward_paths_equal_hf_full_recompute(engine, speech, fast_path):
    """The fused CPU forward and the plain HF forward both match one HF full forward (no cache)."""
    eng = Engine(engine.model, EngineConfig(fast_path=fast_path, temperature=1.0, seed=2, weight_dtype="model", batch_dtype="model"), engine.tts)
    assert (eng.fast_path is not None) == fast_path
    with eng.session(system="Hi.", trace=True) as sess:
        for a in _units(speech, 3):
            sess.step(a)
        _full_recompute_check(sess)


def test_cache_appends_without_copying_the_context():
    """transformers' DynamicLayer re-copies the whole cache per token (torch.cat); ours grows by doubling."""
    from transformers import DynamicCache

    from lws_core.engine.cache import kept_cache

    cache = kept_cache()
    assert isinstance(cache, DynamicCache)
    ref = DynamicCache()
    for i in range(1000):
        k = torch.randn(1, 2, 1, 8)
        v = torch.randn(1, 2, 1, 8)
        ko, vo = cache.update(k, v, 0)
        kr, vr = ref.update(k, v, 0)
        if i % 97 == 0:
            torch.testing.assert_close(ko, kr, rtol=0, atol=0)
            torch.testing.assert_close(vo, vr, rtol=0, atol=0)
    assert cache.get_seq_length() == 1000
    assert cache.layers[0].allocations <= 3  # 256 -> 512 -> 1024: amortised O(1) per token


def test_close_waits_for_a_step_in_flight_and_ends_the_session(engine, speech):
    """A server may close a session from another worker thread while a step runs."""
    import threading

    sess = engine.session()
    results = []

    def run() -> None:
        try:
            results.append(sess.step(speech[:16000]).state)  # finished before close() ...
        except RuntimeError as e:
            results.append(str(e))  # ... or started after it: refused, never a half-freed cache

    t = threading.Thread(target=run)
    t.start()
    sess.close()
    t.join()
    assert sess.closed
    assert len(results) == 1 and results[0] in ("listen", "speak", "session is closed")
    with pytest.raises(RuntimeError, match="closed"):
        sess.step(speech[:16000])


def test_the_warm_up_unit_is_sized_to_what_the_model_itself_writes_and_says(engine):
    """``busiest_spoken_unit`` plays a real spoken question (espeak-ng) through a session and returns the most text
    tokens the model wrote and said in a unit; ``BusiestUnit`` then speaks exactly that much. A model that says
    nothing gives None (its cost unknown: the warm-up keeps both budgets full)."""
    from lws_core.engine.policies import BusiestUnit, busiest_spoken_unit

    spec, ids = engine.model.spec, engine.model.tokenizer.special
    short = BusiestUnit(engine, write_tokens=3, say_tokens=2)  # a scripted "model" that answers briefly
    assert busiest_spoken_unit(engine, policy=short) == (3, 2)

    def listens(ctx):  # noqa: ANN001, ANN202 - a model that never speaks
        return ids.listen if ctx.phase == Phase.STATE else None

    assert busiest_spoken_unit(engine, policy=listens) is None
    silence = np.zeros(engine.unit_samples, dtype=np.float32)
    with engine.session(policy=short) as sess:
        out = sess.step(silence)
    assert (out.timings["write_tokens"], out.timings["say_tokens"]) == (3, 2)
    assert out.timings["decode_forwards"] < spec.max_write_tokens + spec.max_say_tokens
    over = BusiestUnit(engine, write_tokens=10**6, say_tokens=10**6)  # never past the budgets
    assert (over.max_write, over.max_say) == (spec.max_write_tokens, spec.max_say_tokens)


def test_the_busiest_unit_fills_both_budgets_one_forward_per_token(engine):
    """The serve warm-up's policy: it speaks, writes and says up to both budgets, and each of its tokens is
    fed in its own forward (as a sampled one is), so a unit under it costs what a full-budget decoded unit
    costs; the same script without ``feed_each_token`` would cost one forward (its tokens wait)."""
    from lws_core.engine.policies import BusiestUnit

    spec, tok = engine.model.spec, engine.model.tokenizer
    silence = np.zeros(engine.unit_samples, dtype=np.float32)
    busy = BusiestUnit(engine)
    with engine.session(policy=busy) as sess:
        out = sess.step(silence)
    assert out.state == "speak"
    assert len(tok.encode_text(out.write)) >= spec.max_write_tokens - 2  # re-encoding may merge a token or two
    assert len(tok.encode_text(out.say)) >= spec.max_say_tokens - 2
    # every token after the prefill is its own model call: both segments' text plus the markers between them
    assert out.timings["decode_forwards"] >= spec.max_write_tokens + spec.max_say_tokens

    class Batched(BusiestUnit):
        feed_each_token = False

    with engine.session(policy=Batched(engine)) as sess:
        lazy = sess.step(silence)
    assert (lazy.write, lazy.say) == (out.write, out.say)
    assert lazy.timings["decode_forwards"] <= 1
    # the per-token figure's count: the same tokens either way, whatever the calls they took
    assert lazy.timings["decode_tokens"] == out.timings["decode_tokens"] >= out.timings["decode_forwards"] + 1

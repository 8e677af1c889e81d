"""The streaming engine: always-parseable units, cache reuse == recompute, flat per-unit cost, barge-in,
time-synchronous output, sliding window, and `lws simulate` errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from lws_core.audio import get_tts, write_wav
from lws_core.data import load_dataset_dir, row_audio
from lws_core.engine import Engine, EngineConfig
from lws_core.schema import validate


@pytest.fixture(scope="module")
def engine(tiny_model):
    return Engine.from_dir(tiny_model)


@pytest.fixture(scope="module")
def audio(tiny_dataset):
    dd = load_dataset_dir(tiny_dataset)
    split = dd["test"] if len(dd["test"]) >= 3 else dd["train"]
    return np.concatenate([row_audio(split[i]) for i in range(3)])  # real speech, at least 12 s


def test_simulation_is_time_synchronous_and_parseable(engine, audio):
    res = engine.simulate(audio[: 16000 * 6 + 1234])
    assert len(res.output_audio) == 16000 * 6 + 1234
    assert len(res.units) == 7
    spec = engine.model.spec
    assert validate(res.session, spec.max_write_tokens, spec.max_say_tokens, engine.model.tokenizer.count) == []
    for u in res.units:
        assert u.state in ("listen", "speak")
        if u.state == "listen":
            assert u.say == ""
    j = res.fdb_json()
    assert set(j) == {"text", "chunks"} and all(len(c["timestamp"]) == 2 for c in j["chunks"])


def test_sampling_with_random_weights_still_parses(tiny_cfg, audio):
    from lws_core.model import LWSModel

    m = LWSModel.build(tiny_cfg)  # random init: any weights must give parseable units
    eng = Engine(m, EngineConfig(temperature=1.5, seed=3))
    res = eng.simulate(audio[: 16000 * 5])
    assert len(res.units) == 5
    for u in res.units:
        assert u.timings["write_tokens"] <= m.spec.max_write_tokens  # generated tokens, not re-encoded text
        assert u.timings["say_tokens"] <= m.spec.max_say_tokens
        assert u.state == "speak" or u.say == ""


def test_kept_cache_matches_full_recompute_and_cost_is_flat(engine, audio):
    fast, naive = engine.session(), engine.session(naive=True)
    fed = []
    for i in range(6):
        a = audio[i * 16000 : (i + 1) * 16000]
        o1, o2 = fast.step(a), naive.step(a)
        assert (o1.state, o1.write, o1.say, o1.eot) == (o2.state, o2.write, o2.say, o2.eot)
        fed.append(o1.timings["tokens_fed"])
    assert fast.context_tokens == naive.context_tokens
    # tokens fed per unit do not grow with the session: <|end|> + <|unit|> + K audio + the unit's own decode
    per_unit_max = 2 + engine.model.spec.audio_tokens_per_unit + 4 + engine.model.spec.max_write_tokens + engine.model.spec.max_say_tokens
    assert max(fed) <= per_unit_max


def test_barge_in_drops_queued_speech(engine):
    """Scripted decoding (the test forces the states by overriding the chooser): speak a long phrase, then listen."""
    sess = engine.session()
    script = iter(["speak", "listen", "listen"])
    ids = engine.model.tokenizer.special
    long_text = engine.model.tokenizer.encode_text(" 987654321 876543219")[:12]  # spoken for several seconds
    orig = sess._choose
    state = {"unit": None}

    def choose(logits, allowed, text_ok):
        if allowed >= {ids.listen, ids.speak}:
            state["unit"] = next(script)
            state["said"] = list(long_text)
            return ids.speak if state["unit"] == "speak" else ids.listen
        if state["unit"] == "speak" and ids.say in allowed and text_ok:
            return ids.say  # write nothing
        if state["unit"] == "speak" and ids.eot in allowed and state["said"]:
            return state["said"].pop(0)
        if ids.end in allowed:
            return ids.end
        return orig(logits, allowed, text_ok)

    sess._choose = choose
    silence = np.zeros(16000, dtype=np.float32)
    first = sess.step(silence)
    assert first.state == "speak" and first.speech.size == 16000  # starts playing in the next unit
    assert sess._queue.size > 0  # more than one unit of speech queued
    second = sess.step(silence)
    assert second.state == "listen" and second.barge_in
    assert second.speech.size == 0 and sess._queue.size == 0  # dropped at once, never spoken later
    third = sess.step(silence)
    assert third.speech.size == 0 and not third.barge_in


def test_sliding_window_bounds_the_context(tiny_model, audio):
    eng = Engine.from_dir(tiny_model, config=EngineConfig(max_context_tokens=160, keep_units=3))
    sess = eng.session(system="You are a helpful assistant.")
    for i in range(12):
        sess.step(audio[(i % 5) * 16000 : (i % 5 + 1) * 16000])
        assert sess.context_tokens <= 160
    assert sess.rebuilds >= 1


def _lws(*args):
    return subprocess.run([sys.executable, "-m", "lws_core.cli.main", *args], capture_output=True, text=True, timeout=300)


def test_simulate_cli_any_input(tiny_model, tmp_path):
    speech = get_tts().synthesize("what is twelve plus thirty").audio
    stereo = np.stack([speech, speech * 0.5], axis=1)
    sf.write(tmp_path / "in.flac", stereo, 16000)
    sf.write(tmp_path / "in24.wav", np.interp(np.linspace(0, len(speech), int(len(speech) * 3)), np.arange(len(speech)), speech), 48000, subtype="PCM_24")
    for name in ("in.flac", "in24.wav"):
        out = tmp_path / f"out-{name}"
        p = _lws("simulate", str(tmp_path / name), "--model", str(tiny_model), "--out", str(out), "--quiet")
        assert p.returncode == 0, p.stderr
        assert sorted(f.name for f in out.iterdir()) == ["output.json", "output.wav", "timeline.png", "units.jsonl", "written.md"]
        data, sr = sf.read(out / "output.wav")
        n_in = sf.info(tmp_path / name).frames * 16000 // sf.info(tmp_path / name).samplerate
        assert sr == 16000 and abs(len(data) - n_in) <= 160  # same duration ±1 frame
        units = [json.loads(line) for line in (out / "units.jsonl").read_text().splitlines()]
        assert len(units) == -(-len(data) // 16000)


@pytest.mark.parametrize("kind", ["empty", "nan", "text", "truncated"])
def test_simulate_cli_bad_input(tiny_model, tmp_path, kind):
    f = tmp_path / "bad.wav"
    if kind == "empty":
        write_wav(f, np.zeros(0, dtype=np.float32))
    elif kind == "nan":
        sf.write(f, np.array([0.1, np.nan, 0.2] * 1000, dtype=np.float32), 16000, subtype="FLOAT")
    elif kind == "text":
        f.write_text("not audio at all")
    else:
        write_wav(f, np.zeros(16000, dtype=np.float32))
        f.write_bytes(f.read_bytes()[:30])
    out = tmp_path / "out"
    p = _lws("simulate", str(f), "--model", str(tiny_model), "--out", str(out))
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.startswith("error:"), p.stderr
    assert not out.exists() or not any(out.iterdir())  # nothing half-written
    p = _lws("simulate", str(tmp_path / "bad.wav"), "--model", str(tmp_path / "no-model"), "--out", str(out))
    assert p.returncode == 2 and "error:" in p.stderr

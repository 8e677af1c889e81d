"""Offline simulation and `lws simulate`: time-synchronous output of the input's length, Full-Duplex-Bench
output.json, atomic output directory, any input format, one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from lws_core.audio import load_audio, write_wav
from lws_core.engine import Engine, EngineConfig
from lws_core.engine.engine import OUTPUT_FILES
from lws_core.errors import InputError


def _lws(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The real `lws` entry point (error handling included), in-process to keep the tests fast."""
    from lws_core.cli import main

    monkeypatch.setattr(sys, "argv", ["lws", *args])
    code = 0
    try:
        main.run()
    except SystemExit as e:
        code = int(e.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_simulate_is_time_synchronous(engine, speech):
    audio = speech[: 16000 * 3 + 1234]
    res = engine.simulate(audio)
    assert len(res.output_audio) == len(audio) and res.output_audio.dtype == np.float32
    assert len(res.units) == 4 and [u.index for u in res.units] == [0, 1, 2, 3]
    assert np.abs(res.output_audio[:16000]).max() == 0  # the first unit is heard before anything can be said
    for u in res.units:  # unit u's speech is output samples [(u+1)·n, (u+2)·n)
        start = (u.index + 1) * 16000
        if u.speech.size and start < len(audio):
            seg = res.output_audio[start : start + 16000]
            np.testing.assert_array_equal(seg, u.speech[: len(seg)])
    assert res.written == res.session.written_document()
    # the user's speech activity (no transcript: words unknown) lies inside the input and covers its speech
    assert res.user_speech and res.user_speech[0][0] < 0.3 and res.user_speech[-1][1] <= len(audio) / 16000
    assert 0 < res.rtf_p50 <= res.rtf_p95
    j = res.fdb_json()
    assert set(j) == {"text", "chunks"}
    assert j["text"] == " ".join(c["text"] for c in j["chunks"])
    for c in j["chunks"]:
        s, e = c["timestamp"]
        assert 1.0 <= s <= e <= len(audio) / 16000 + 1e-6  # output-stream times, inside the output


def test_write_outputs_and_simulate_file_agree(engine, speech, tmp_path):
    audio = speech[: 16000 * 3 + 500]
    write_wav(tmp_path / "in.wav", audio)
    res = engine.simulate(load_audio(tmp_path / "in.wav"))
    engine.write_outputs(res, tmp_path / "a")
    streamed = engine.simulate_file(tmp_path / "in.wav", tmp_path / "b", progress=False)
    for d in ("a", "b"):
        assert sorted(f.name for f in (tmp_path / d).iterdir()) == sorted(OUTPUT_FILES)
        data, sr = sf.read(tmp_path / d / "output.wav", dtype="float32")
        assert sr == 16000 and len(data) == len(audio)
        j = json.loads((tmp_path / d / "output.json").read_text())
        assert set(j) == {"text", "chunks"}
        units = [json.loads(line) for line in (tmp_path / d / "units.jsonl").read_text().splitlines()]
        assert len(units) == 4 and {"state", "write", "say", "timings", "barge_in"} <= set(units[0])
    a, _ = sf.read(tmp_path / "a" / "output.wav", dtype="float32")
    b, _ = sf.read(tmp_path / "b" / "output.wav", dtype="float32")
    # streamed == in-memory: same decisions, speech in the same units (espeak carries state between calls,
    # so the waveforms themselves may differ slightly)
    assert [(u.state, u.write, u.say) for u in streamed.units] == [
        (u.state, u.write, u.say) for u in res.units
    ]
    voiced = [[bool(np.abs(x[i : i + 16000]).max() > 0) for i in range(0, len(x), 16000)] for x in (a, b)]
    assert voiced[0] == voiced[1]
    assert (tmp_path / "b" / "written.md").read_text() == res.written
    assert not list(tmp_path.glob(".*partial*"))


def _inputs(speech: np.ndarray, tmp_path):  # noqa: ANN202
    """The same speech in the formats a user may have."""
    import soxr

    a = speech[: 16000 * 2 + 300]
    stereo = np.stack([a, a * 0.5], axis=1)
    files = {
        "stereo.flac": (stereo, 16000, "PCM_16"),
        "hi.wav": (soxr.resample(a, 16000, 48000), 48000, "PCM_24"),
        "lo8.wav": (soxr.resample(a, 16000, 8000), 8000, "PCM_U8"),
        "f32.wav": (soxr.resample(a, 16000, 22050), 22050, "FLOAT"),
        "i32.wav": (a, 16000, "PCM_32"),
        "voice.ogg": (soxr.resample(a, 16000, 24000), 24000, "VORBIS"),
    }
    for name, (data, sr, subtype) in files.items():
        sf.write(tmp_path / name, data, sr, subtype=subtype)
    return list(files)


def test_cli_any_input(random_model_dir, speech, tmp_path, monkeypatch, capsys):
    for name in _inputs(speech, tmp_path):
        out = tmp_path / f"out-{name}"
        code, stdout, err = _lws(
            monkeypatch,
            capsys,
            "simulate",
            str(tmp_path / name),
            "--model",
            str(random_model_dir),
            "--out",
            str(out),
            "--quiet",
        )
        assert code == 0, err
        assert "units" in stdout and "RTF" in stdout
        assert sorted(f.name for f in out.iterdir()) == sorted(OUTPUT_FILES)
        data, sr = sf.read(out / "output.wav")
        info = sf.info(tmp_path / name)
        n_in = info.frames * 16000 / info.samplerate
        assert sr == 16000 and abs(len(data) - n_in) <= 160, name  # same duration, ±1 frame (10 ms)
        units = [json.loads(line) for line in (out / "units.jsonl").read_text().splitlines()]
        assert len(units) == -(-len(data) // 16000)


def test_cli_set_engine_options(random_model_dir, speech, tmp_path, monkeypatch, capsys):
    write_wav(tmp_path / "in.wav", speech[:16000])
    args = ["simulate", str(tmp_path / "in.wav"), "--model", str(random_model_dir), "--quiet"]
    code, _, err = _lws(
        monkeypatch,
        capsys,
        *args,
        "--out",
        str(tmp_path / "o1"),
        "--set",
        "engine.temperature=0.8",
        "--set",
        "engine.speak=false",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "o1" / "output.json").read_text())["chunks"] == []  # speak=false: text only
    code, _, err = _lws(monkeypatch, capsys, *args, "--out", str(tmp_path / "o3"), "--set", "engine.tts=none")
    assert code == 0, err  # no TTS: the say text is decided and recorded, nothing is played
    assert json.loads((tmp_path / "o3" / "output.json").read_text())["chunks"] == []
    assert np.abs(sf.read(tmp_path / "o3" / "output.wav")[0]).max() == 0
    for bad in ("engine.nope=1", "engine.temperature=-1", "model.nope=2", "engine.tts=festival"):
        code, _, err = _lws(monkeypatch, capsys, *args, "--out", str(tmp_path / "o2"), "--set", bad)
        assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    "kind",
    [
        "empty",
        "nan",
        "text",
        "binary",
        "truncated",
        "truncated-data",
        "truncated-flac",
        "missing",
        "no-model",
        "broken-model",
        "out-is-file",
    ],
)
def test_cli_bad_input_one_line_exit_2_nothing_written(random_model_dir, tmp_path, monkeypatch, capsys, kind):
    """Each bad input: one `error:` line, exit 2, no output directory. A WAV cut mid-data (its header
    promises more frames than the file holds) is refused rather than simulated on the part that is there;
    a FLAC cut mid-stream fails when the decoder loses sync, after units have run: still nothing written."""
    f = tmp_path / "in.wav"
    model = random_model_dir
    out = tmp_path / "out"
    if kind == "empty":
        write_wav(f, np.zeros(0, dtype=np.float32))
    elif kind == "nan":
        sf.write(f, np.array([0.1, np.nan, 0.2] * 8000, dtype=np.float32), 16000, subtype="FLOAT")
    elif kind == "text":
        f.write_text("not audio at all")
    elif kind == "binary":
        f.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        write_wav(f, np.zeros(16000, dtype=np.float32))
        f.write_bytes(f.read_bytes()[:30])
    elif kind == "truncated-data":  # header: 48000 frames; file: 20000
        write_wav(f, np.full(48000, 0.1, dtype=np.float32))
        f.write_bytes(f.read_bytes()[: 44 + 2 * 20000])
        assert sf.info(f).frames == 20000  # libsndfile alone would read the partial data without a word
    elif kind == "truncated-flac":
        f = tmp_path / "in.flac"
        sf.write(f, np.random.default_rng(0).uniform(-0.3, 0.3, 16000 * 4).astype(np.float32), 16000)
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    else:
        write_wav(f, np.zeros(16000, dtype=np.float32))
    if kind == "missing":
        f = tmp_path / "nope.wav"
    if kind == "no-model":
        model = tmp_path / "no-model"
    if kind == "broken-model":
        model = tmp_path / "broken"
        model.mkdir()
        (model / "lws_model.json").write_text(
            json.dumps(json.loads((random_model_dir / "lws_model.json").read_text()))
        )
    if kind == "out-is-file":
        out.write_text("keep me")
    code, _, err = _lws(
        monkeypatch, capsys, "simulate", str(f), "--model", str(model), "--out", str(out), "--quiet"
    )
    assert code == 2, err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    if kind == "truncated-data":
        assert "truncated WAV (header declares 48000 frames, file holds 20000)" in err, err
    if kind == "truncated-flac":
        assert "in.flac" in err and "truncated or corrupt" in err, err
    if kind == "out-is-file":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()  # nothing half-written
    assert not list(tmp_path.glob(".*partial*"))


def test_failure_midway_leaves_existing_outputs_untouched(engine, speech, tmp_path, monkeypatch):
    """A crash during a run (here: the TTS dies) must not replace or half-write a previous run's directory."""
    write_wav(tmp_path / "in.wav", speech[: 16000 * 3])
    out = tmp_path / "out"
    out.mkdir()
    (out / "output.json").write_text("previous")

    class DeadTTS:
        def synthesize(self, text, voice=None):  # noqa: ANN001, ANN202
            raise RuntimeError("tts crashed")

    eng = Engine(engine.model, EngineConfig(temperature=3.0, seed=1), DeadTTS())
    with pytest.raises(RuntimeError, match="tts crashed"):
        eng.simulate_file(tmp_path / "in.wav", out, progress=False)
    assert [f.name for f in out.iterdir()] == ["output.json"] and (
        out / "output.json"
    ).read_text() == "previous"
    assert not list(tmp_path.glob(".*partial*"))


def test_console_entry_point(random_model_dir, tmp_path):
    """The installed `lws` command itself (a subprocess): help text and a one-line error."""
    p = subprocess.run(
        [sys.executable, "-m", "lws_core.cli.main", "simulate", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and "--model" in p.stdout and "--set" in p.stdout
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "lws_core.cli.main",
            "simulate",
            str(tmp_path / "x.wav"),
            "--model",
            str(random_model_dir),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and p.stderr.startswith("error:") and "x.wav" in p.stderr


def test_half_second_units(engine, tiny_cfg, speech):
    """Unit length is the model's: a 0.5 s model steps every 8000 samples and stays time-synchronous."""
    from lws_core.model import LWSModel

    cfg = tiny_cfg.with_overrides({"schema.unit_s": 0.5, "schema.audio_tokens_per_unit": 5})
    eng = Engine(
        LWSModel.build(cfg, tokenizer=engine.model.tokenizer), EngineConfig(temperature=1.0), engine.tts
    )
    audio = speech[: 16000 * 2 + 77]
    res = eng.simulate(audio)
    assert eng.unit_samples == 8000 and len(res.units) == 5 and len(res.output_audio) == len(audio)
    assert np.abs(res.output_audio[:8000]).max() == 0
    assert all(w.start >= 0.5 for w in res.spoken_words)


def test_tts_none_never_loads_a_synthesizer(speaking_engine, speech):
    """engine.tts=none: units still decide and record their say text, no TTS is created, no audio is played."""
    engine = speaking_engine
    eng = Engine(engine.model, EngineConfig(tts="none"))
    res = eng.simulate(speech[: 16000 * 2])
    assert eng._tts is None and not eng.speaks
    assert any(u.say.strip() for u in res.units)  # random weights speak every unit
    assert res.spoken_words == [] and np.abs(res.output_audio).max() == 0
    with pytest.raises(InputError, match="engine.tts is 'none'"):
        _ = eng.tts
    assert Engine(engine.model, EngineConfig(tts="none"), engine.tts).speaks  # a TTS given explicitly is used


def test_wav_of_unknown_length_is_read_to_the_end(engine, tmp_path):
    """A WAV whose data size is 0xFFFFFFFF (a streaming recorder that never went back to fix the header)
    is not 'truncated': it is read to the end of the file."""
    f = tmp_path / "stream.wav"
    write_wav(f, np.full(16000 + 800, 0.05, dtype=np.float32))
    b = bytearray(f.read_bytes())
    i = b.index(b"data")
    b[i + 4 : i + 8] = b"\xff\xff\xff\xff"
    f.write_bytes(bytes(b))
    res = engine.simulate_file(f, tmp_path / "out", progress=False)
    assert res.input_samples == 16800 and len(sf.read(tmp_path / "out" / "output.wav")[0]) == 16800


def test_say_channel_never_carries_written_layout(speaking_engine, speech):
    """Speech is never offered a token with markdown or line breaks (``**Answer:**`` was once said aloud)."""
    from lws_core.engine.engine import UNSPOKEN

    eng = Engine(speaking_engine.model, EngineConfig(tts="none", temperature=2.0, seed=4))
    tok = eng.model.tokenizer
    ids = list(range(tok.vocab_size))
    texts = tok.token_texts(ids)
    layout = {i for i, t in zip(ids, texts, strict=True) if any(c in t for c in UNSPOKEN)}
    assert layout and any("*" in texts[i] for i in layout) and any("\n" in texts[i] for i in layout)
    say = eng.say_text_mask
    for i in ids:  # exactly the text tokens without layout
        assert bool(say[i]) == (bool(eng.text_mask[i]) and i not in layout)
    units = eng.simulate(speech).units  # random weights, hot sampling: markup would come up if offered
    said = "".join(u.say for u in units)
    assert said.strip() and not any(c in said for c in UNSPOKEN)


def test_speak_onset_margin_holds_the_turn_but_never_cuts_an_answer(speaking_engine, speech):
    """``engine.speak_onset_margin`` raises the bar for *taking* the turn only.

    The speaking model takes the turn at its first unit; a huge margin keeps it listening on the
    same audio, a margin of 0 is the model's own decision, and a session that is already speaking
    (an answer under way) decides exactly as without the margin.
    """
    audio = speech[: 16000 * 3]

    def states(margin: float, speaking: bool = False) -> list[str]:
        eng = Engine(speaking_engine.model, EngineConfig(tts="none", speak_onset_margin=margin))
        with eng.session() as s:
            if speaking:
                s._last_state = "speak"  # the state after a speaking unit: mid-answer
            return [s.step(audio[i * 16000 : (i + 1) * 16000]).state for i in range(3)]

    own = states(0.0)
    assert own[0] == "speak"
    assert states(1e4) == ["listen"] * 3  # never takes the turn
    assert states(1e4, speaking=True)[0] == states(0.0, speaking=True)[0] == "speak"  # an answer is never cut


def test_endpoint_fallback_answers_unanswered_speech_after_the_timeout(engine, speech):
    """``engine.endpoint_timeout_s`` takes the turn once the user's unanswered speech is followed by that much
    silence, and only then.

    A model held silent (a huge onset margin) is given real speech and then silence: without the fallback it
    never speaks; with it, exactly one unit takes the turn, the first whose audio ends at least the timeout after
    the last voiced frame of the energy gate, and nothing earlier. A click (shorter than
    ``endpoint_min_speech_s``) is not a turn to answer.
    """
    from lws_core.engine.activity import SpeechActivity

    audio = np.concatenate([speech, np.zeros(16000 * 3, dtype=np.float32)])
    n = len(audio) // 16000

    def run(audio: np.ndarray, **kw) -> list:  # noqa: ANN003
        eng = Engine(engine.model, EngineConfig(tts="none", speak_onset_margin=1e4, **kw))
        with eng.session() as s:
            return [s.step(audio[i * 16000 : (i + 1) * 16000]) for i in range(len(audio) // 16000)]

    assert [u.state for u in run(audio)] == ["listen"] * n  # the held model on its own
    units = run(audio, endpoint_timeout_s=1.5)
    gate = SpeechActivity()
    gate.feed(audio)
    speech_end = gate.segments()[-1][1]
    due = next(i for i in range(n) if (i + 1) - speech_end >= 1.5)
    assert [u.index for u in units if u.endpointed] == [due]
    assert units[due].state == "speak" and all(u.state == "listen" for u in units[:due])
    assert units[due].to_json()["endpointed"] is True
    click = np.zeros(16000 * 5, dtype=np.float32)
    click[8000:9600] = speech[16000:17600]  # 0.1 s of speech
    assert not any(u.endpointed for u in run(click, endpoint_timeout_s=1.5))

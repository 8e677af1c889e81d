"""timeline.png of `lws simulate`: the user's speech activity from the input audio, the speech where it was
played (output.json's times), the whole session drawn; checked on the returned spans and on the PNG's pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lws_core.audio import write_wav
from lws_core.engine.activity import SpeechActivity
from lws_core.engine.engine import TIMELINE_TITLE
from lws_core.schema import Session, Unit, Word
from lws_core.schema.render import render_simulation

WHITE = np.array([1.0, 1.0, 1.0])
USER_GREEN = np.array([0x74, 0xC4, 0x76]) / 255


def _voiced_bounds(x: np.ndarray, sr: int = 16000) -> tuple[float, float]:
    """First and last 10 ms frame of ``x`` above -40 dBFS: the ground truth for the detector."""
    f = sr // 100
    n = x.size // f
    rms = np.sqrt(np.mean(x[: n * f].reshape(n, f) ** 2, axis=1))
    idx = np.flatnonzero(rms > 0.01)
    return idx[0] / 100, (idx[-1] + 1) / 100


def _rgb(img: np.ndarray, col: int, row: int) -> np.ndarray:
    return img[row, col, :3]


def test_activity_detector_finds_speech_not_noise(speech):
    """1.5 s of room noise (-45 dBFS), the speech, noise again: one span per phrase, none in the noise."""
    rng = np.random.default_rng(0)
    lead = np.zeros(24000, dtype=np.float32)
    audio = np.concatenate([lead, speech]).astype(np.float32)
    audio += rng.normal(0, 10 ** (-45 / 20), audio.size).astype(np.float32)
    on, off = _voiced_bounds(np.concatenate([lead, speech]))
    det = SpeechActivity()
    for i in range(0, audio.size, 7000):  # block size unrelated to the frame size
        det.feed(audio[i : i + 7000])
    seg = det.segments()
    assert seg, "no speech found"
    assert abs(seg[0][0] - on) <= 0.06 and abs(seg[-1][1] - off) <= 0.06, (seg, on, off)
    assert all(b > a for a, b in seg) and all(seg[i][1] < seg[i + 1][0] for i in range(len(seg) - 1))
    voiced = sum(b - a for a, b in seg)
    assert 0.7 * (off - on) <= voiced <= off - on + 0.05
    silent = SpeechActivity()
    silent.feed(rng.normal(0, 10 ** (-45 / 20), 16000 * 3).astype(np.float32))
    assert silent.segments() == []


def test_simulate_timeline_lanes_and_png(speaking_engine, speech, tmp_path):
    """The PNG simulate writes: user lane green where the input has speech and white in the silence before it;
    the spoken lane drawn at output.json's chunk times (never in the first, silent unit); every unit's state."""
    engine = speaking_engine
    import matplotlib.image as mpimg

    audio = np.concatenate([np.zeros(24000, dtype=np.float32), speech])  # speech from 1.5 s
    on, off = _voiced_bounds(audio)
    write_wav(tmp_path / "in.wav", audio)
    res = engine.simulate_file(tmp_path / "in.wav", tmp_path / "out", progress=False)
    dur = len(audio) / 16000
    assert (
        res.user_speech
        and abs(res.user_speech[0][0] - on) <= 0.06
        and abs(res.user_speech[-1][1] - off) <= 0.06
    )
    assert res.session.user_words == []  # a recording has no transcript; its speech activity is drawn instead

    # the same drawing, returned as data (layout is deterministic: same inputs, same pixels)
    d = render_simulation(
        res.session, tmp_path / "again.png", res.user_speech, res.spoken_words, dur, title=TIMELINE_TITLE
    )
    written = mpimg.imread(tmp_path / "out" / "timeline.png")
    assert written.shape == mpimg.imread(d.path).shape == (d.height_px, d.width_px, 4)
    np.testing.assert_array_equal(written, mpimg.imread(d.path))

    assert [(s.start, s.end) for s in d.lanes["user"]] == [tuple(x) for x in res.user_speech]
    chunks = json.loads((tmp_path / "out" / "output.json").read_text())["chunks"]
    assert chunks, "the random model speaks: there must be words to draw"
    assert [[round(s.start, 3), round(s.end, 3)] for s in d.lanes["say"]] == [c["timestamp"] for c in chunks]
    assert [s.label for s in d.lanes["say"]] == [c["text"] for c in chunks]
    assert (
        min(s.start for s in d.lanes["say"]) >= res.unit_s
    )  # played from the next unit, not the decision unit
    st = d.lanes["state"]
    assert (
        st[0].start == 0
        and abs(st[-1].end - dur) < 1e-9
        and all(abs(a.end - b.start) < 1e-9 for a, b in zip(st, st[1:], strict=False))
    )
    assert len(d.lanes["write"]) == sum(bool(u.write.strip()) for u in res.units)

    # pixels: the user lane
    mid = (res.user_speech[0][0] + res.user_speech[0][1]) / 2
    np.testing.assert_allclose(_rgb(written, *d.pixel(mid, "user")), USER_GREEN, atol=0.02)
    np.testing.assert_allclose(_rgb(written, *d.pixel(0.7, "user")), WHITE, atol=0.01)
    lane_row = d.pixel(0, "user")[1]
    cols = range(d.pixel(0, "user")[0] + 2, d.pixel(dur, "user")[0] - 2)
    green = [bool(np.allclose(_rgb(written, c, lane_row), USER_GREEN, atol=0.02)) for c in cols]
    frac = sum(green) / len(green)
    covered = sum(b - a for a, b in res.user_speech) / dur
    assert abs(frac - covered) < 0.03, (frac, covered)
    # the spoken lane: something drawn at each played word's box, nothing during the first unit
    for s in d.lanes["say"]:
        assert not np.allclose(_rgb(written, *d.pixel((s.start + s.end) / 2, "say")), WHITE, atol=0.01)
    assert np.allclose(_rgb(written, *d.pixel(0.5 * res.unit_s, "say")), WHITE, atol=0.01)
    assert not np.allclose(_rgb(written, *d.pixel(dur - 0.1, "state")), WHITE, atol=0.01)


@pytest.mark.parametrize("minutes", [30])
def test_long_session_drawn_whole_with_thinned_labels(tmp_path, minutes):
    """A 30-minute session: every unit is drawn (no 40-unit cut), the figure's width is capped, labels thinned."""
    import matplotlib.image as mpimg

    n = minutes * 60
    units = [
        Unit(state="speak", write=f"note {i}", say="sure") if i % 10 == 9 else Unit(state="listen")
        for i in range(n)
    ]
    for i in range(0, n, 3):  # writing every third unit: denser than its labels can be drawn at 2.4 px/s
        units[i].write = f"fact {i}"
    session = Session(unit_s=1.0, units=units)
    spoken = [Word(text="sure", start=i + 0.05, end=i + 0.4) for i in range(1, n, 2)]
    user = [(float(i), i + 6.0) for i in range(0, n, 10)]
    d = render_simulation(session, tmp_path / "long.png", user, spoken, float(n))
    assert d.width_px <= 40 * 110 and d.duration_s == n
    assert d.lanes["state"][-1].end == n and len(d.lanes["state"]) == 2 * (n // 10)
    assert len(d.lanes["user"]) == n // 10 and len(d.lanes["say"]) == len(spoken)
    assert len(d.lanes["write"]) == sum(bool(u.write) for u in units)
    assert 0 < d.labels_drawn["say"] < len(spoken) and 0 < d.labels_drawn["write"] < len(
        d.lanes["write"]
    )  # thinned
    img = mpimg.imread(d.path)
    # the last user segment (1790-1796 s) is drawn at the right edge, the gap after it is not
    np.testing.assert_allclose(_rgb(img, *d.pixel(n - 7, "user")), USER_GREEN, atol=0.02)
    np.testing.assert_allclose(_rgb(img, *d.pixel(n - 2, "user")), WHITE, atol=0.01)

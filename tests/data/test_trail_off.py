"""Trailed-off questions (``data.trail_off_rate``): the user stops at the pause and never finishes; the model
waits out ``data.trail_off_wait_s`` of silence, then asks for the question again. Synthesis runs the real
espeak-ng TTS (text-only rows, to be quick)."""

from __future__ import annotations

import json
import math

import pytest

from lws_core.config import LWSConfig
from lws_core.data import load_dataset_dir, synthesize
from lws_core.data.trail_off import REPLIES, draw_trail_off
from lws_core.errors import ConfigError

PAUSES_ONLY = {"data.scenarios": {"pause": 1.0}, "data.chunk_sessions": 10,
               "data.test_fraction": 0.2, "data.test_seen_fraction": 0.2}


def test_draw_trail_off_is_reproducible_and_follows_the_rate():
    assert draw_trail_off(0, 5, 0.0) is None
    drawn = [draw_trail_off(3, i, 0.3) is not None for i in range(2000)]
    assert drawn == [draw_trail_off(3, i, 0.3) is not None for i in range(2000)]
    assert 0.25 < sum(drawn) / len(drawn) < 0.35


def test_a_wait_shorter_than_the_longest_pause_is_refused():
    with pytest.raises(ConfigError, match="trail_off_wait_s"):
        LWSConfig().with_overrides({"data.trail_off_rate": 0.5, "data.pause_max_s": 3.0, "data.trail_off_wait_s": 2.5})
    LWSConfig().with_overrides({"data.trail_off_rate": 0.0, "data.pause_max_s": 3.0, "data.trail_off_wait_s": 2.5})


def test_trailed_off_sessions_wait_out_the_silence_then_ask_again(tmp_path):
    """Every training pause session trails off: the user says a strict prefix of the question, the model
    listens until the silence at a unit's end has reached the wait (not one unit earlier), then speaks one of
    the replies, and nothing answers the unasked question. The graded splits keep their whole questions
    and pauses, as without trail-offs (the same words, voices and pause places; not to the sample: espeak-ng
    carries a little state from one utterance to the next within a worker's chunk)."""
    cfg = LWSConfig().with_overrides({**PAUSES_ONLY, "data.pause_max_s": 2.5})
    plain = load_dataset_dir(synthesize(cfg, tmp_path / "plain", sessions=40, workers=2, progress=False, text_only=True).out_dir)
    t_cfg = cfg.with_overrides({"data.trail_off_rate": 1.0, "data.trail_off_wait_s": 2.5})
    trailed = load_dataset_dir(synthesize(t_cfg, tmp_path / "trailed", sessions=40, workers=2, progress=False, text_only=True).out_dir)
    seen = 0
    for split in ("train", "validation"):
        for a, b in zip(plain[split], trailed[split], strict=True):
            if a["scenario"] != "pause":
                continue
            sa, sb = json.loads(a["session"]), json.loads(b["session"])
            heard = [w["text"] for w in sb["user_words"]]
            full = [w["text"] for w in sa["user_words"]]
            assert sb["meta"]["trail_off"]["heard_words"] == len(heard) < len(full)
            assert heard == full[: len(heard)]
            assert b["answer"] == "" and sb["meta"]["turns"][0]["answer"] == ""
            end = sb["user_words"][-1]["end"]
            states = [u["state"] for u in sb["units"]]
            r = states.index("speak")
            assert (r + 1) * cfg.schema_.unit_s - end >= 2.5 - 1e-6  # the silence heard by the reply unit's end
            assert r * cfg.schema_.unit_s - end < 2.5  # ... and one unit earlier it was still shorter
            said = " ".join(u["say"] for u in sb["units"] if u["say"])
            written = "".join(u["write"] for u in sb["units"][r:])
            assert any(said == s and written == w for w, s in REPLIES), (said, written)
            assert math.isclose(sum(u["eot"] for u in sb["units"]), 1)
            seen += 1
    assert seen > 10
    for split in ("test", "test_seen"):
        assert len(plain[split]) > 0
        for a, b in zip(plain[split], trailed[split], strict=True):
            sa, sb = json.loads(a["session"]), json.loads(b["session"])
            assert sa["meta"]["turns"] == sb["meta"]["turns"] and a["voice"] == b["voice"] and "trail_off" not in sb["meta"]
            assert [w["text"] for w in sa["user_words"]] == [w["text"] for w in sb["user_words"]]
            assert [u["state"] for u in sa["units"]] == [u["state"] for u in sb["units"]]

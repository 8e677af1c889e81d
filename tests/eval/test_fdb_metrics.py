"""Full-Duplex-Bench v1 metrics on hand-made trees whose answers are worked out by hand.

The expected numbers below follow the official scripts' rules (thresholds 1 s / 3 words,
latency clipping, backchannel segment rules, 0.2 s-bin JSD) and were computed by hand.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from lws_core.errors import InputError
from lws_core.eval.fdb_metrics import (
    derive_reference,
    evaluate_tree,
    occupancy,
    parse_relevance,
    response_latency,
    score_backchannel,
    takeover,
    words_in_segment,
)


def _chunks(*spans):
    return [{"text": f"w{i}", "timestamp": list(s)} for i, s in enumerate(spans)]


def _sample(d, chunks, **files):
    d.mkdir(parents=True)
    (d / "input.wav").write_bytes(b"")  # presence marks a sample folder; metrics never read it
    (d / "output.json").write_text(json.dumps({"text": " ".join(c["text"] for c in chunks), "chunks": chunks}))
    for name, content in files.items():
        (d / f"{name}.json").write_text(json.dumps(content))


def test_takeover_rule_edges():
    assert takeover([]) == 0
    assert takeover(_chunks((0.0, 0.3), (0.3, 0.9))) == 0  # 0.9 s, 2 words
    assert takeover(_chunks((0.0, 0.2), (0.2, 0.4), (0.4, 0.99))) == 0  # 0.99 s, 3 words
    assert takeover(_chunks((0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8))) == 1  # 4 words in 0.8 s
    assert takeover(_chunks((0.0, 1.0))) == 1  # exactly 1 s is not < 1 s
    assert takeover(_chunks((0.0, 0.2), (1.2, None))) == 1  # null end falls back to its start: 1.2 s
    assert response_latency(_chunks((1.5, 3.0)), 2.0) == 0.0  # started early: clipped
    assert response_latency(_chunks((2.5, 3.6)), 2.0) == pytest.approx(0.5)
    assert response_latency(_chunks((2.5, 2.6)), 2.0) is None  # TO = 0 has no latency


def test_pause_turn_taking_interruption_tree(tmp_path):
    root = tmp_path / "tree"
    pause = {"text": "[PAUSE]", "timestamp": [1.0, 2.0]}
    _sample(root / "pause_handling" / "0", [], pause=[pause])
    _sample(root / "pause_handling" / "1", _chunks((3.0, 3.3), (3.3, 3.5)), pause=[pause])
    _sample(root / "pause_handling" / "2", _chunks((3.0, 3.5), (3.5, 4.5)), pause=[pause])
    _sample(root / "pause_handling" / "3", _chunks(*[(3 + 0.1 * i, 3.1 + 0.1 * i) for i in range(4)]), pause=[pause])
    tt = [{"text": "[TURN-TAKING]", "timestamp": [2.0, 2.4]}]
    _sample(root / "smooth_turn_taking" / "0", _chunks((2.5, 3.0), (3.0, 4.0)), turn_taking=tt)  # latency 0.5
    _sample(root / "smooth_turn_taking" / "1", _chunks((1.5, 2.0), (2.0, 2.8)), turn_taking=tt)  # -0.5 -> 0
    _sample(root / "smooth_turn_taking" / "2", _chunks((2.2, 2.4)), turn_taking=tt)  # TO 0: no latency
    it = [{"context": "Tell me about dogs.", "interrupt": "What about cats?", "timestamp": [3.0, 4.0]}]
    _sample(root / "user_interruption" / "0", _chunks((4.6, 5.0), (5.0, 6.0)), interrupt=it)  # 0.6
    _sample(root / "user_interruption" / "1", _chunks((4.2, 4.5), (4.5, 5.4)), interrupt=it)  # 0.2

    m = evaluate_tree(root)
    assert m["fdb_pause_tor"] == pytest.approx(2 / 4)
    assert m["fdb_turn_taking_tor"] == pytest.approx(2 / 3)
    assert m["fdb_turn_taking_latency_s"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["fdb_interruption_tor"] == 1.0
    assert m["fdb_interruption_latency_s"] == pytest.approx(0.4)
    assert m["fdb_interruption_relevance"] == "not judged"
    saved = json.loads((root / "metrics.json").read_text())
    assert saved["metrics"]["fdb_pause_tor"] == 0.5 and len(saved["tasks"]["pause_handling"]["per_sample"]) == 4

    asked = []

    def judge(system: str, user: str) -> str:  # a stand-in judge: rates by whether the response mentions cats
        asked.append(user)
        return "Analysis: talks about the interrupting topic.\nI would rate the AI's response as 4."

    m = evaluate_tree(root, judge=judge, write=False)
    assert m["fdb_interruption_relevance"] == 4.0 and len(asked) == 2 and "What about cats?" in asked[0]


def test_relevance_parser():
    assert parse_relevance("Analysis: ok.\nI would rate the AI's response as 3.") == 3
    assert parse_relevance("no format here") is None


def test_missing_output_json_is_a_clear_error(tmp_path):
    d = tmp_path / "pause_handling" / "0"
    d.mkdir(parents=True)
    (d / "input.wav").write_bytes(b"")
    (d / "pause.json").write_text("[]")
    with pytest.raises(InputError, match="output.json"):
        evaluate_tree(tmp_path)
    with pytest.raises(InputError, match="no Full-Duplex-Bench sample"):
        evaluate_tree(tmp_path / "pause_handling" / "0")


def test_backchannel_rules_and_jsd_by_hand():
    words = _chunks((2.0, 2.3), (2.3, 2.5))
    ref = [0.25, 0.25, 0.25, 0.25]
    sc = score_backchannel([(2.0, 2.5)], words, 4.0, ref)
    assert sc.takeover == 0 and sc.frequency == pytest.approx(1 / 4.0)
    # occupancy by hand: 21 bins of 0.2 s over 4 s; bins 10..12 hold the segment
    occ = np.full(21, 1e-10)
    occ[10:13] += 1
    occ /= occ.sum()
    assert np.allclose(occupancy([(2.0, 2.5)], 4.0), occ)
    assert sc.jsd == pytest.approx(float(jensenshannon(occ, np.full(21, 0.25))))
    # a segment > 3 s is a takeover and stops the scan (not counted as a backchannel)
    assert score_backchannel([(0.0, 3.5)], [], 10.0, ref).takeover == 1
    assert score_backchannel([(0.0, 3.5)], [], 10.0, ref).jsd == 1.0  # no backchannel predicted
    # 4 words in a short segment -> TO 1; 1.2 s with 2 words -> TO 1
    assert score_backchannel([(0.0, 0.8)], _chunks(*[(0.1 * i, 0.1 * i + 0.1) for i in range(4)]), 5.0, ref).takeover == 1
    assert score_backchannel([(0.0, 1.2)], _chunks((0.0, 0.5), (0.5, 1.1)), 5.0, ref).takeover == 1
    # official quirk: the last scored segment's verdict stands, and every scored segment counts
    sc = score_backchannel([(0.0, 1.2), (2.0, 2.4)], _chunks((0.0, 0.5), (0.5, 1.1), (2.0, 2.3)), 5.0, ref)
    assert sc.takeover == 0 and len(sc.backchannels) == 2


def test_words_in_segment_overlap_rule():
    words = _chunks((0.5, 0.9), (0.9, 1.3), (1.6, 1.8), (2.5, 3.0), (None, 1.0))
    assert words_in_segment(words, 1.0, 2.0) == ["w1", "w2"]  # straddling the start, inside
    assert words_in_segment(words, 0.0, 1.0) == ["w0", "w1"]  # inside, straddling the end


def test_derived_reference_marks_user_pauses():
    ref = derive_reference([(0.0, 1.0), (2.0, 3.0)], 3.0)
    assert len(ref) == 16 and math.isclose(sum(ref), 1.0)
    assert ref[5] > 0.1 and ref[0] < 1e-6  # the pause starting at 1.0 s, not the speech before it
    assert derive_reference([(0.0, 3.0)], 1.0) == [1 / 6] * 6


def test_backchannel_tree_with_real_vad(tmp_path):
    """Real espeak speech through Silero VAD: a short 'yeah' is a backchannel, a long answer a takeover."""
    from lws_core.audio.io import write_wav
    from lws_core.audio.tts import get_tts

    tts = get_tts()
    root = tmp_path / "backchannel"
    for name, text, at in (("0", "yeah", 2.0), ("1", "well let me tell you what I think about all of that in great detail now", 1.0)):
        sp = tts.synthesize(text)
        out = np.zeros(16000 * 8, dtype=np.float32)
        out[int(at * 16000) : int(at * 16000) + len(sp.audio)] = sp.audio[: len(out) - int(at * 16000)]
        chunks = [{"text": w.text, "timestamp": [w.start + at, w.end + at]} for w in sp.words]
        _sample(root / name, chunks)
        write_wav(root / name / "output.wav", out)
        (root / name / "transcription.json").write_text(json.dumps([{"speaker": 0, "item": [{"text": "a", "timestamp": [0.0, 1.5]}, {"text": "b", "timestamp": [2.0, 6.0]}]}]))
    m = evaluate_tree(root)
    assert m["fdb_backchannel_tor"] == pytest.approx(0.5)
    per = {s["id"]: s for s in json.loads((root / "metrics.json").read_text())["tasks"]["backchannel"]["per_sample"]}
    assert per["0"]["to"] == 0 and per["0"]["backchannels"] == 1 and per["0"]["frequency"] == pytest.approx(1 / 8)
    assert per["1"]["to"] == 1
    assert 0.0 < per["0"]["jsd"] < 1.0 and per["0"]["reference"] == "derived from input pauses"


def _interruption_tree(root):
    meta = [{"context": "What is six times seven?", "interrupt": "Wait, what about six times eight?", "timestamp": [2.0, 3.0]}]
    _sample(root / "user_interruption" / "0", _chunks((3.4, 3.8), (3.8, 4.2), (4.3, 4.9)), interrupt=meta)
    _sample(root / "user_interruption" / "1", [], interrupt=meta)  # TO = 0: never judged


def test_relevance_reasks_an_unparsable_judge_and_counts_its_cost(endpoint, tmp_path):
    """The official script re-asks until the rating parses; ours re-asks at most RELEVANCE_MAX_ASKS times."""
    from lws_core.eval.fdb_metrics import RELEVANCE_MAX_ASKS
    from lws_core.eval.judge import JudgeClient

    _interruption_tree(tmp_path / "t")
    answers = iter(["I think it is fine.", "Analysis: it answers six times eight.\nI would rate the AI's response as 4"])
    endpoint.reply = lambda body: next(answers)
    judge = JudgeClient(endpoint.url, "judge-1", cache_dir=tmp_path / "cache", usd_per_1k_input=1.0, usd_per_1k_output=2.0)
    m = evaluate_tree(tmp_path / "t", judge=judge)
    assert m["fdb_interruption_relevance"] == 4.0 and m["fdb_interruption_relevance_unparsed"] == 0
    assert len(endpoint.calls) == 2 and [c["body"]["seed"] for c in endpoint.calls] == [0, 1]  # a new draw, not the cache
    saved = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert saved["tasks"]["user_interruption"]["per_sample"][0]["relevance_asks"] == 2
    js = saved["metrics"]
    assert js["fdb_judge_requests"] == 2 and js["fdb_judge_cost_usd"] == pytest.approx(2 * (0.1 + 0.04))
    assert js["fdb_judge_mean_latency_s"] > 0 and js["fdb_judge_failures"] == 0
    # a judge that never follows the format: bounded, and the sample is left unrated (not a made-up score)
    endpoint.calls.clear()
    endpoint.reply = lambda body: "no idea"
    m = evaluate_tree(tmp_path / "t", judge=JudgeClient(endpoint.url, "judge-2"), write=False)
    assert len(endpoint.calls) == RELEVANCE_MAX_ASKS and m["fdb_interruption_relevance_unparsed"] == 1
    assert m["fdb_interruption_relevance"] is None
    assert "fdb_judge_requests" not in evaluate_tree(tmp_path / "t", write=False)  # no judge, no counts

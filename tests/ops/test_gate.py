"""The promotion gate's statistics on planted per-session scores (no model is trained here: the
scores are drawn, see ``tests/ops/planted.py``, so each rule is checked across ten seeds in seconds).

Every assertion can fail: a gate that compared aggregates with a point tolerance, or ignored the
floor, the pause TOR or the pairing, fails one of these.
"""

from __future__ import annotations

import pytest

from lws_core.config.registry import GateRule, RegistryConfig
from lws_core.eval.sessions import SessionScores
from lws_core.ops.gate import decide, paired_bootstrap
from tests.ops.planted import planted

RULES = RegistryConfig().gate
CHAMPION = planted(0)  # state 0.88, task 0.30


def test_planted_worse_is_refused_ten_times_out_of_ten_with_the_reason():
    for seed in range(10):  # 4 points of state accuracy and 10 of task accuracy worse
        d = decide(planted(100 + seed, state=0.84, task=0.20), CHAMPION, RULES, champion_version="1")
        assert not d.promote, d.table()
        state = next(r for r in d.rows if r.metric == "state_accuracy")
        assert state.verdict == "worse" and state.high < 0
        assert any("state_accuracy" in x and "worse" in x for x in d.reasons)


def test_planted_better_is_promoted_at_least_nine_times_out_of_ten():
    promoted = sum(decide(planted(200 + seed, state=0.92, task=0.40), CHAMPION, RULES).promote for seed in range(10))
    assert promoted >= 9


def test_a_tie_within_noise_keeps_the_champion():
    for seed in range(10):  # the same skill, another model's noise
        d = decide(planted(300 + seed, state=0.88, task=0.30), CHAMPION, RULES, champion_version="1")
        assert not d.promote
    # the very same scores (a cached rerun): a tie, reported as such
    d = decide(CHAMPION, CHAMPION, RULES, champion_version="1")
    assert not d.promote and {r.verdict for r in d.rows if r.metric in ("state_accuracy", "task_accuracy")} == {"tie"}
    assert "champion stays" in d.reasons[-1]


def test_a_regression_below_the_floor_is_refused_even_within_tolerance():
    rules = [GateRule(metric="state_accuracy", tolerance=0.05, floor=0.85)]
    champ = planted(0, state=0.855)
    chall = planted(1, state=0.845)  # within the 0.05 tolerance of the champion, but under the floor
    d = decide(chall, champ, rules)
    assert not d.promote and d.rows[0].verdict == "below floor" and "floor 0.85" in d.reasons[0]
    # with no champion the floor still holds
    assert not decide(chall, None, rules).promote
    assert decide(planted(1, state=0.9), None, rules).promote


def test_both_zero_is_not_a_promotion():
    rules = [GateRule(metric="task_accuracy", tolerance=0.0)]
    zero = SessionScores("e")
    for i in range(20):
        zero.add("task_accuracy", f"s{i}", 0.0)
    d = decide(zero, zero, rules)
    assert not d.promote and d.rows[0].verdict == "tie"


def test_pause_tor_is_gated_lower_is_better():
    rules = [GateRule(metric="state_accuracy", tolerance=0.02),
             GateRule(metric="fdb_pause_tor", direction="lower", tolerance=0.25, required=False)]
    champ = planted(0, state=0.88, pause_tor=0.0)
    talks_over = planted(5, state=0.95, pause_tor=1.0)  # better states, but takes over every pause
    d = decide(talks_over, champ, rules)
    pause = d.rows[1]
    assert not d.promote and pause.verdict == "worse" and pause.low > 0  # challenger - champion > 0: more takeovers
    assert decide(planted(5, state=0.95, pause_tor=0.0), champ, rules).promote


def test_missing_metrics_and_optional_rules():
    rules = [GateRule(metric="state_accuracy"), GateRule(metric="fdb_pause_tor", direction="lower", required=False)]
    chall = planted(1, state=0.95)
    assert decide(chall, None, rules).promote  # neither reports the optional metric: skipped
    champ = planted(0, pause_tor=0.0)
    d = decide(chall, champ, rules)  # the champion reports it, the challenger does not
    assert not d.promote and d.rows[1].verdict == "missing"
    assert not decide(SessionScores(chall.eval_set), None, rules).promote  # a required metric missing


def test_scores_on_different_sets_are_not_compared():
    with pytest.raises(ValueError, match="different evaluation sets"):
        decide(planted(1, eval_set="sha256:a"), planted(0, eval_set="sha256:b"), RULES)


def test_interval_is_paired_and_matches_the_aggregate():
    a, b = planted(1, state=0.90), planted(2, state=0.86)
    lo, hi, _, n = paired_bootstrap(a.metrics["state_accuracy"], b.metrics["state_accuracy"], 0.95, 2000)
    diff = a.value("state_accuracy") - b.value("state_accuracy")
    assert n == 100 and lo < diff < hi
    # pairing matters: the same scores with the sessions matched up wrongly give a wider interval
    ids = sorted(b.metrics["state_accuracy"])
    rotated = {ids[i]: b.metrics["state_accuracy"][ids[i - 1]] for i in range(len(ids))}
    lo2, hi2, _, _ = paired_bootstrap(a.metrics["state_accuracy"], rotated, 0.95, 2000)
    assert hi - lo < 0.8 * (hi2 - lo2)
    d = decide(a, b, RULES, champion_version="7")
    table = d.table()
    for part in ("| metric |", "| state_accuracy | higher |", "interval", "floor", "champion version 7", a.eval_set):
        assert part in table

"""The promotion gate's rules (pure function): directions, tolerances, missing and non-finite metrics."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from lws_core.config.registry import GateRule
from lws_core.ops.gate import decide

RULES = [
    GateRule(metric="state_accuracy", direction="higher", tolerance=0.01),
    GateRule(metric="fdb_turn_taking_latency_s", direction="lower", tolerance=0.1),
]


def test_first_version_needs_finite_metrics():
    assert decide({"state_accuracy": 0.5, "fdb_turn_taking_latency_s": 1.0}, None, RULES).promote
    assert not decide({"state_accuracy": 0.5}, None, RULES).promote
    assert not decide({"state_accuracy": math.nan, "fdb_turn_taking_latency_s": 1.0}, None, RULES).promote
    assert not decide({"state_accuracy": None, "fdb_turn_taking_latency_s": 1.0}, None, RULES).promote


def test_directions_and_tolerances():
    champ = {"state_accuracy": "0.80", "fdb_turn_taking_latency_s": "1.0"}  # tags come back as strings
    assert decide({"state_accuracy": 0.795, "fdb_turn_taking_latency_s": 1.05}, champ, RULES).promote  # within tol
    d = decide({"state_accuracy": 0.78, "fdb_turn_taking_latency_s": 0.5}, champ, RULES)
    assert not d.promote and "state_accuracy" in d.summary() and "worse" in d.summary()
    d = decide({"state_accuracy": 0.9, "fdb_turn_taking_latency_s": 1.2}, champ, RULES)
    assert not d.promote and "fdb_turn_taking_latency_s" in " ".join(d.reasons)


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 5), st.floats(0, 5))
def test_never_promotes_a_worse_model(c_acc, ch_acc, c_lat, ch_lat):
    d = decide(
        {"state_accuracy": c_acc, "fdb_turn_taking_latency_s": c_lat},
        {"state_accuracy": ch_acc, "fdb_turn_taking_latency_s": ch_lat},
        RULES,
    )
    worse = c_acc < ch_acc - 0.01 or c_lat > ch_lat + 0.1
    assert d.promote == (not worse)


def test_optional_rule_applies_only_when_reported():
    rules = [*RULES[:1], GateRule(metric="fdb_turn_taking_tor", direction="higher", tolerance=0.0, required=False)]
    assert decide({"state_accuracy": 0.5}, None, rules).promote  # neither reports it: skipped
    assert decide({"state_accuracy": 0.5}, {"state_accuracy": 0.5}, rules).promote
    # a challenger cannot dodge a rule by not reporting what the champion reported
    assert not decide({"state_accuracy": 0.5}, {"state_accuracy": 0.5, "fdb_turn_taking_tor": 0.9}, rules).promote
    assert not decide({"state_accuracy": 0.5, "fdb_turn_taking_tor": 0.5},
                      {"state_accuracy": 0.5, "fdb_turn_taking_tor": 0.9}, rules).promote

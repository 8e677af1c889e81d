"""What the gate pairs: the evaluation's per-session scores reproduce its aggregates exactly, cover the
gated metrics (the FDB probe's per sample), and name the evaluation set they were scored on."""

from __future__ import annotations

import json
import math

from lws_core.eval.sessions import SessionScores, eval_set_digest


def test_session_scores_reproduce_the_metrics(tiny_cfg, tiny_model, tiny_dataset, tmp_path):
    from lws_core.eval import evaluate

    cfg = tiny_cfg.with_overrides({"eval.fdb_probe_per_task": 1})
    evaluate(cfg, tiny_model, tiny_dataset, tmp_path / "ev", limit=3, progress=False)
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    s = SessionScores.read(tmp_path / "ev")
    assert s.eval_set == m["eval_set"] and s.eval_set.startswith("sha256:")
    assert len(s.metrics["state_accuracy"]) == 3
    for k in ("state_accuracy", "schema_valid_rate", "fdb_pause_tor", "fdb_turn_taking_tor", "fdb_backchannel_tor"):
        assert k in s.metrics, k
    for k in s.metrics:
        if isinstance(m.get(k), float):
            assert math.isclose(s.value(k), m[k], rel_tol=1e-9, abs_tol=1e-12), k
    assert len(s.metrics["fdb_pause_tor"]) == 1  # one probe sample per task
    # the pause and turn-taking tasks again on training phrasings, kept apart from the pipeline's probe
    for k in ("fdb_pause_tor_seen_phrasing", "fdb_turn_taking_tor_seen_phrasing"):
        assert 0.0 <= m[k] <= 1.0, k
    assert sorted(p.name for p in (tmp_path / "ev" / "fdb_seen_phrasing").iterdir() if p.is_dir()) == [
        "pause_handling", "smooth_turn_taking"]


def test_eval_set_names_sessions_and_settings():
    rows = [{"id": "a", "session": "{}", "audio": b"\x00\x01"}, {"id": "b", "session": "{}", "audio": b"\x02"}]
    base = eval_set_digest(rows, {"limit": 2})
    assert base == eval_set_digest([dict(r) for r in rows], {"limit": 2})
    assert base != eval_set_digest(rows[:1], {"limit": 2})
    assert base != eval_set_digest(rows, {"limit": 3})
    assert base != eval_set_digest([rows[0], {**rows[1], "audio": b"\x03"}], {"limit": 2})

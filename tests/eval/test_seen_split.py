"""Evaluation on test and test_seen with per-family metrics (metrics.json, report, MLflow), and barge-in grading.

Real parts: espeak-ng synthesized sessions, the tiny trained model, the streaming engine, MLflow on SQLite.
"""

from __future__ import annotations

import json

import pytest

from lws_core.data import load_dataset_dir, row_session, synthesize
from lws_core.eval.internal import tally_session
from lws_core.eval.metrics import TaskTally, graded_turn


@pytest.fixture(scope="module")
def mixed_cfg(tiny_cfg):
    """Barge-in heavy, a large test_seen share; same schema as the tiny model's training data."""
    return tiny_cfg.with_overrides(
        {
            "data.chunk_sessions": 10,
            "data.test_seen_fraction": 0.3,
            "data.scenarios": {"barge_in": 0.6, "single_turn": 0.4},
            "eval.fdb_probe": False,
            "eval.limit": 3,
        }
    )


@pytest.fixture(scope="module")
def mixed_dataset(mixed_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed") / "ds"
    synthesize(mixed_cfg, out, sessions=40, workers=1, progress=False)
    return out


def _expected_families(rows, n: int) -> set[str]:
    fams = set()
    for i in range(min(n, len(rows))):
        r = rows[i]
        fam, ans = graded_turn(row_session(r).meta, r["task_family"], r["answer"])
        if ans:
            fams.add(fam)
    return fams


def test_barge_in_answer_counts_under_the_second_questions_family(mixed_dataset):
    """A real barge-in session whose two requests are of different families: the graded (second) answer is
    filed under q2's family, not the session's task_family (q1's); without per-turn families, q1's as before."""
    dd = load_dataset_dir(mixed_dataset)
    rows = [r for split in dd.values() for r in split if r["scenario"] == "barge_in"]
    mixed = [r for r in rows if len({t["task_family"] for t in row_session(r).meta["turns"]}) == 2]
    assert mixed, "no barge-in session with two families among the synthesized ones"
    for r in mixed:
        labels = row_session(r)
        q1, q2 = labels.meta["turns"]
        assert r["task_family"] == q1["task_family"] != q2["task_family"]
        assert r["answer"] == q2["answer"]
        tally = TaskTally()
        # the labels' own responses: the teacher's answer to q2, so right
        tally_session(tally, r, labels, labels.written_document(), labels.spoken_text())
        assert tally.per_family() == {q2["task_family"]: 1.0}
        old = labels.model_copy(deep=True)  # a dataset from before turns carried their family
        for t in old.meta["turns"]:
            t.pop("task_family")
        legacy = TaskTally()
        tally_session(legacy, r, old, labels.written_document(), labels.spoken_text())
        assert legacy.per_family() == {q1["task_family"]: 1.0}
    # every synthesized session records a family per turn
    for r in (r for split in dd.values() for r in split if r["scenario"] != "silence"):
        assert all(t["task_family"] for t in row_session(r).meta["turns"])


def test_graded_turn_falls_back():
    assert graded_turn({}, "compare", "7") == ("compare", "7")
    assert graded_turn({"turns": [{"question": "q", "answer": "7"}]}, "compare", "7") == ("compare", "7")
    turns = [{"question": "a", "answer": "1", "task_family": "table"}, {"question": "b", "answer": "2", "task_family": "python"}]
    assert graded_turn({"turns": turns}, "table", "2") == ("python", "2")
    assert graded_turn({"turns": turns}, "table", "9") == ("table", "9")  # answer of no turn: the row's family


def test_evaluate_reports_both_splits_per_family_and_logs_them_to_mlflow(mixed_cfg, mixed_dataset, tiny_model, tmp_path):
    """The pipeline's evaluate step: metrics.json, report.md and the MLflow run all carry
    ``task_accuracy_seen_phrasing`` and the per-family metrics of both splits; ``eval.limit`` is per split."""
    from mlflow.tracking import MlflowClient

    from lws_core.ops.steps import run_evaluate

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = mixed_cfg.with_overrides({"registry.tracking_uri": uri, "pipeline.workspace": str(tmp_path / "ws")})
    rid, numeric = run_evaluate(json.dumps(cfg.to_dict()), str(tiny_model), str(mixed_dataset), str(tmp_path / "ev"))
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    dd = load_dataset_dir(mixed_dataset)
    assert len(dd["test"]) >= 3 and len(dd["test_seen"]) >= 3
    assert m["eval_sessions"] == 3 and m["eval_sessions_seen_phrasing"] == 3
    for k in ("task_accuracy", "spoken_accuracy", "task_accuracy_seen_phrasing", "spoken_accuracy_seen_phrasing"):
        assert k in m and (m[k] is None or 0.0 <= m[k] <= 1.0), k
    fams_test, fams_seen = _expected_families(dd["test"], 3), _expected_families(dd["test_seen"], 3)
    assert fams_test and fams_seen
    assert {k.split(".", 1)[1] for k in m if k.startswith("task_accuracy.")} == fams_test
    assert {k.split(".", 1)[1] for k in m if k.startswith("task_accuracy_seen_phrasing.")} == fams_seen
    assert {k.split(".", 1)[1] for k in m if k.startswith("spoken_accuracy.")} <= fams_test
    assert {k.split(".", 1)[1] for k in m if k.startswith("spoken_accuracy_seen_phrasing.")} <= fams_seen
    # the overall seen accuracy is the per-family one weighted by graded sessions; with one family it is that one
    if len(fams_seen) == 1:
        (f,) = fams_seen
        assert m["task_accuracy_seen_phrasing"] == m[f"task_accuracy_seen_phrasing.{f}"]
    # state accuracy and consistency on test_seen too: the same scoring as test's, on the seen sessions
    from lws_core.data.dataset import row_audio
    from lws_core.engine import Engine
    from lws_core.eval.metrics import score_session

    engine = Engine.from_dir(tiny_model, cfg)
    scores = [
        score_session((res := engine.simulate(row_audio(r))).session, row_session(r), res.spoken_words, r["scenario"])
        for r in (dd["test_seen"][i] for i in range(3))
    ]
    assert m["state_accuracy_seen_phrasing"] == pytest.approx(sum(s.state_correct for s in scores) / sum(s.units for s in scores))
    checked = [s.consistent for s in scores if s.consistent is not None]
    assert m["consistency_checked_seen_phrasing"] == len(checked)
    assert m["consistency_rate_seen_phrasing"] == (pytest.approx(sum(checked) / len(checked)) if checked else None)
    assert 0.0 <= m["state_accuracy_seen_phrasing"] <= m["state_accuracy_turn_taking_seen_phrasing"] <= 1.0
    # MLflow: the step run holds every numeric metric, the per-family ones (dotted names) included
    logged = MlflowClient(tracking_uri=uri).get_run(rid).data.metrics
    per_family = {k: v for k, v in m.items() if "." in k and isinstance(v, float)}
    assert per_family and all(logged[k] == pytest.approx(v) for k, v in per_family.items())
    assert logged["task_accuracy_seen_phrasing"] == pytest.approx(m["task_accuracy_seen_phrasing"])
    assert numeric["task_accuracy_seen_phrasing"] == m["task_accuracy_seen_phrasing"]
    # the report: a per-family table with both splits; the dotted metrics are not repeated in the main table
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "| family | written (test) | spoken (test) | written (test_seen) | spoken (test_seen) |" in report
    for f in fams_test | fams_seen:
        assert f"| {f} | " in report
    assert "| task_accuracy_seen_phrasing |" in report and "| task_accuracy. " not in report
    assert f"| deterministic, `test_seen` (held-out voices, training phrasings; {len(checked)} responses) |" in report
    assert not any(line.startswith(("| task_accuracy.", "| spoken_accuracy.")) for line in report.splitlines())


def test_dataset_without_test_seen_has_no_seen_metrics(mixed_cfg, mixed_dataset, tiny_model, tmp_path):
    """A dataset made before test_seen (no such split) or with an empty one: no seen-phrasing metrics, no crash."""
    from datasets import DatasetDict

    from lws_core.eval import evaluate

    dd = load_dataset_dir(mixed_dataset)
    old = tmp_path / "old"
    DatasetDict({k: v for k, v in dd.items() if k != "test_seen"}).save_to_disk(str(old))
    empty = tmp_path / "empty"
    DatasetDict({k: (v.select([]) if k == "test_seen" else v) for k, v in dd.items()}).save_to_disk(
        str(empty), num_shards={"test_seen": 1}
    )
    for i, data in enumerate((old, empty)):
        s = evaluate(mixed_cfg, tiny_model, data, tmp_path / f"ev{i}", limit=1, progress=False)
        m = json.loads((tmp_path / f"ev{i}" / "metrics.json").read_text())
        assert not [k for k in m if "seen_phrasing" in k]
        assert s.per_family_seen == {} and m["eval_sessions"] == 1
        assert {k for k in m if k.startswith("task_accuracy.")} == {f"task_accuracy.{f}" for f in s.per_family}
        report = s.report_path.read_text()
        if s.per_family:
            assert "| family | written | spoken |" in report and "test_seen" not in report

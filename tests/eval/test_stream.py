"""Questions asked one after another in one engine session, each graded by its own labels."""

from __future__ import annotations

import json

import pytest

from lws_core.eval.stream import StreamedQuestion, grade_units, run_stream, stream_metrics, stream_split


def _rows(tiny_dataset, n: int):
    from lws_core.data.dataset import load_dataset_dir, row_audio, row_session

    rows = load_dataset_dir(tiny_dataset)["test"]
    graded = [i for i in range(len(rows)) if rows[i]["answer"]]
    if len(graded) < n:
        pytest.fail(f"the tiny dataset's test split has {len(graded)} graded sessions, the test needs {n}")
    return [(rows[i], row_session(rows[i]), row_audio(rows[i])) for i in graded[:n]]


def test_a_question_is_graded_against_its_own_labels(tiny_dataset):
    """The labels' own units score full marks; another session's units do not (the grader is not trivially true)."""
    (a, la, _), (b, lb, _) = _rows(tiny_dataset, 2)
    ok, n, written, spoken, family = grade_units(la.units, a, la)
    assert (ok, n, written) == (len(la.units), len(la.units), True)
    assert family and spoken in (True, None)
    flipped = [u.model_copy(update={"state": "speak" if u.state == "listen" else "listen"}) for u in la.units]
    assert grade_units(flipped, a, la)[0] == 0
    if a["answer"] != b["answer"]:
        assert grade_units(lb.units, a, la)[2] is False


def test_a_stream_splits_the_engine_units_by_each_questions_labelled_length(tiny_model, tiny_dataset):
    from lws_core.engine import Engine

    items = _rows(tiny_dataset, 3)
    engine = Engine.from_dir(tiny_model)
    stream = run_stream(engine, items)
    assert [q.position for q in stream.questions] == [0, 1, 2]
    assert [q.id for q in stream.questions] == [str(r["id"]) for r, _, _ in items]
    assert [q.units for q in stream.questions] == [len(lab.units) for _, lab, _ in items]
    assert all(0 <= q.state_correct <= q.units and q.written is not None for q in stream.questions)


def test_stream_metrics_count_later_questions_apart():
    qs = [
        StreamedQuestion("a", 0, 4, 5, True, True, "convert"),
        StreamedQuestion("b", 1, 1, 5, False, None, "convert"),
        StreamedQuestion("c", 2, 5, 5, True, False, "python"),
        StreamedQuestion("d", 0, 0, 5, None, None, "chat"),
    ]
    m = stream_metrics(qs, "_x")
    assert m["stream_task_accuracy_x"] == pytest.approx(2 / 3)
    assert m["stream_task_accuracy_later_x"] == pytest.approx(1 / 2)
    assert m["stream_spoken_accuracy_x"] == pytest.approx(1 / 2)
    assert m["stream_state_accuracy_x"] == pytest.approx(10 / 20)
    assert m["stream_questions_x"] == 4
    assert stream_metrics([])["stream_task_accuracy"] is None


def test_stream_split_sizes(tiny_model, tiny_dataset):
    from lws_core.data.dataset import load_dataset_dir
    from lws_core.engine import Engine

    rows = load_dataset_dir(tiny_dataset)["test"].select(range(3))
    engine = Engine.from_dir(tiny_model)
    assert [q.position for q in stream_split(engine, rows, questions=10, streams=5)] == [0, 1, 2]  # one short stream
    assert [q.position for q in stream_split(engine, rows, questions=2, streams=5)] == [0, 1]  # whole streams only
    assert list(stream_split(engine, rows.select(range(1)), questions=10, streams=5)) == []


def test_evaluate_reports_stream_metrics_and_gateable_scores(tiny_cfg, tiny_model, tiny_dataset, tmp_path):
    from lws_core.eval.internal import evaluate
    from lws_core.eval.sessions import SessionScores

    cfg = tiny_cfg.with_overrides({"eval.fdb_probe": False, "eval.liberation": False, "eval.limit": 4})
    s = evaluate(cfg, tiny_model, tiny_dataset, tmp_path / "ev", progress=False)
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["stream_questions"] == 4 and s.metrics["stream_questions"] == 4
    scores = SessionScores.read(tmp_path / "ev")
    assert len(scores.metrics["stream_state_accuracy"]) == 4
    assert scores.value("stream_state_accuracy") == pytest.approx(m["stream_state_accuracy"])
    if m["stream_task_accuracy"] is not None:
        assert scores.value("stream_task_accuracy") == pytest.approx(m["stream_task_accuracy"])
    off = evaluate(cfg.with_overrides({"eval.streams": 0}), tiny_model, tiny_dataset, tmp_path / "ev0", progress=False)
    assert not any(k.startswith("stream_") for k in off.metrics)

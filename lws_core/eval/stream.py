"""Questions asked one after another in one live session: are the later ones still answered?

Why: every other figure of the evaluation runs one session (one question) on a fresh engine session,
but a user of ``lws serve`` asks question after question in the same session. A model trained only on
single sessions answers the first question of a stream as well as alone and almost none after it
(benchmarks/results/long_context.md): the defaults' ``test`` written accuracy was 0.02 on a stream
against 0.32 alone. The pipeline's evaluation therefore also streams held-out sessions back to back,
``questions`` per engine session, and grades each question against its own session's labels with the
evaluation's own graders, so the gate sees a regression there like any other.

Each session's audio is padded to its labelled units, so question *k* starts at the unit its labels say
and the previous answer's pause is kept. Pure engine + graders: no MLflow, DVC or KFP.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StreamedQuestion:
    """One question's grades inside a stream (``position`` 0 is the stream's first question)."""

    id: str
    position: int
    state_correct: int
    units: int
    written: bool | None
    spoken: bool | None
    family: str


def grade_units(units: Sequence[Any], row: dict[str, Any], labels: Any) -> tuple[int, int, bool | None, bool | None, str]:
    """One question's engine units against its own session's labels: (states right, units, written, spoken, family)."""
    from lws_core.eval.metrics import TaskTally, graded_turn

    gold = [u.state for u in labels.units]
    pred = [u.state for u in units][: len(gold)]
    written = "".join(u.write for u in units)
    spoken = " ".join(u.say for u in units if u.state == "speak" and u.say)
    family, answer = graded_turn(labels.meta or {}, row["task_family"], row["answer"])
    w, s = TaskTally().add(family, answer, written, spoken)
    return sum(p == g for p, g in zip(pred, gold, strict=False)), len(gold), w, s, family


@dataclass(frozen=True)
class Stream:
    questions: list[StreamedQuestion]
    rebuilds: int  # sliding-window rebuilds the engine session made


def run_stream(engine: Any, items: Sequence[tuple[dict[str, Any], Any, np.ndarray]]) -> Stream:
    """Stream ``items`` (row, labels, audio) back to back through one engine session and grade each question."""
    unit_n = engine.unit_samples
    parts, spans, at = [], [], 0
    for _, labels, audio in items:
        n = len(labels.units)
        buf = np.zeros(n * unit_n, dtype=np.float32)
        buf[: min(len(audio), len(buf))] = audio[: len(buf)]
        parts.append(buf)
        spans.append((at, at + n))
        at += n
    with engine.session() as sess:
        units = [sess.step(block) for block in engine.iter_units(np.concatenate(parts))]
        rebuilds = sess.rebuilds
    out = []
    for pos, ((row, labels, _), (lo, hi)) in enumerate(zip(items, spans, strict=True)):
        ok, n, w, s, family = grade_units(units[lo:hi], row, labels)
        out.append(StreamedQuestion(str(row["id"]), pos, ok, n, w, s, family))
    return Stream(out, rebuilds)


def stream_split(
    engine: Any, rows: Any, questions: int, streams: int, progress: bool = False, desc: str = "streams"
) -> Iterator[StreamedQuestion]:
    """The first ``questions * streams`` rows of a split, ``questions`` to a stream: fewer streams when the
    split is short, one stream of all of them when it is shorter than one stream, and nothing below two
    questions (a stream of one is a session alone)."""
    from lws_core.data.dataset import row_audio, row_session
    from lws_core.progress import progress as bar

    questions = min(questions, len(rows))
    streams = min(streams, len(rows) // max(questions, 1))
    if questions < 2 or streams < 1:
        return
    for c in bar(range(streams), desc=desc, unit="stream", disable=not progress):
        items = [(rows[i], row_session(rows[i]), row_audio(rows[i])) for i in range(c * questions, (c + 1) * questions)]
        yield from run_stream(engine, items).questions


def stream_metrics(graded: Sequence[StreamedQuestion], suffix: str = "") -> dict[str, float | int | None]:
    """``stream_task_accuracy`` (written, every question), ``stream_task_accuracy_later`` (after each stream's
    first), ``stream_spoken_accuracy``, ``stream_state_accuracy`` (units right / units) and ``stream_questions``,
    each name followed by ``suffix``; None where nothing was graded."""

    def rate(xs: list[bool]) -> float | None:
        return float(np.mean(xs)) if xs else None

    written = [q.written for q in graded if q.written is not None]
    later = [q.written for q in graded if q.written is not None and q.position > 0]
    spoken = [q.spoken for q in graded if q.spoken is not None]
    units = sum(q.units for q in graded)
    return {
        f"stream_task_accuracy{suffix}": rate(written),
        f"stream_task_accuracy_later{suffix}": rate(later),
        f"stream_spoken_accuracy{suffix}": rate(spoken),
        f"stream_state_accuracy{suffix}": sum(q.state_correct for q in graded) / units if units else None,
        f"stream_questions{suffix}": len(graded),
    }

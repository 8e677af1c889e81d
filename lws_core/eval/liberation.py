"""The capability-liberation experiment in miniature: does writing keep what the LLM can do?

Four ways to answer the same spoken questions, all through the same free-running
streaming engine and the same grammar, graded the same way (the written
``**Answer:**`` line exactly; the spoken answer by its key facts):

- **text ceiling**: the backbone hears the question as text (the spoken form of
  the words heard in each unit, in place of the audio): what the LLM can do;
- **cascade**: the backbone hears the speech encoder's own transcript, unit by
  unit (a half-duplex ASR → LLM baseline);
- **LWS**: the LWS model hears the audio;
- ablations (other LWS models trained at equal compute) are scored like LWS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lws_core.eval.metrics import TaskTally, graded_turn

Heard = Callable[[dict[str, Any], Any], "list[str] | None"]


@dataclass
class ModeResult:
    mode: str
    split: str
    written: dict[str, float]
    spoken: dict[str, float]
    written_overall: float | None
    spoken_overall: float | None
    graded: int


def heard_truth(engine: Any) -> Heard:
    """The text ceiling's ears: what the user said in each unit, as the backbone's text view (K slots)."""
    from lws_core.model.asr import heard_slots

    tok, k = engine.model.tokenizer, engine.model.spec.audio_tokens_per_unit
    return lambda row, labels: heard_slots(labels, tok, k)


def graded_rows(rows: Any, limit: int | None) -> Iterator[dict[str, Any]]:
    """Rows with a known answer (silence and small talk grade nothing)."""
    n = 0
    for i in range(len(rows)):
        row = rows[i]
        if not row["answer"]:
            continue
        yield row
        n += 1
        if limit is not None and n >= limit:
            return


def run_mode(engine: Any, rows: Any, mode: str, split: str, heard: Heard | None = None, limit: int | None = None) -> ModeResult:
    """Simulate each graded row through ``engine`` (audio, or ``heard`` text per unit) and tally its answers."""
    from lws_core.data.dataset import row_session

    tally = TaskTally()
    for row in graded_rows(rows, limit):
        labels = row_session(row)
        n = len(labels.units)
        text = heard(row, labels) if heard is not None else None
        if text is None:
            from lws_core.data.dataset import row_audio

            audio = row_audio(row)
        else:
            audio = np.zeros(n * engine.unit_samples, dtype=np.float32)
        res = engine.simulate(audio, heard=text)
        spoken = " ".join(u.say for u in res.units if u.state == "speak")
        family, answer = graded_turn(labels.meta or {}, row["task_family"], row["answer"])
        tally.add(family, answer, res.written, spoken)
    return ModeResult(mode, split, tally.per_family(), tally.per_family_spoken(), tally.overall(), tally.overall_spoken(),
                      sum(len(v) for v in tally.written.values()))


def heard_by(recognizer: Any, engine: Any) -> Heard:
    """The cascade's ears: the speech encoder's own greedy CTC transcript, unit by unit (no look-ahead),
    placed in the K slots at the positions where the recogniser emitted each token."""
    from lws_core.data.dataset import row_audio
    from lws_core.model.asr import greedy_path, slots_from_path, unit_log_probs

    k, filler = engine.model.spec.audio_tokens_per_unit, engine.model.tokenizer.special.audio

    def heard(row: dict[str, Any], labels: Any) -> list[list[int]]:
        audio = row_audio(row)
        u = recognizer.speech.unit_samples
        n = len(labels.units)
        audio = np.pad(audio, (0, max(0, n * u - len(audio))))[: n * u].reshape(n, u)
        lp = unit_log_probs(recognizer, audio)
        return [slots_from_path(p, recognizer.vocab, lp.shape[1], k, filler) for p in greedy_path(lp)]

    return heard

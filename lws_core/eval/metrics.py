"""Per-session measurements comparing a simulated session with its labels. Pure functions, no model.

Each returns plain numbers so they can be unit-tested on hand-made sessions and
averaged by the evaluation runner.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lws_core.data.tasks import key_facts
from lws_core.schema import Session, Word


def consistent(spoken: str, written: str) -> bool | None:
    """Writing–speaking consistency on one response: every number said is also written.

    None when nothing checkable was said (no numbers), so such responses are not counted.
    """
    said = key_facts(spoken)
    if not said:
        return None
    return said <= key_facts(written)


def spoken_correct(answer: str, spoken: str) -> bool | None:
    """The spoken response states the known answer: all of the answer's key facts are said.

    The comparison that is fair to a model without a written channel (ablations);
    None when the answer has no checkable facts.
    """
    facts = key_facts(answer)
    if not facts:
        return None
    return facts <= key_facts(spoken)


CONSISTENCY_JUDGE_SYSTEM = "You check whether what an assistant said aloud agrees with what it wrote on screen."
CONSISTENCY_JUDGE_PROMPT = """The assistant answered a user both in speech and in a written document shown at the same time.

### Spoken
{spoken}

### Written
{written}

Do the spoken words and the written text agree: no contradiction, and the spoken part refers to what is written?
Answer with a single word: Yes or No."""


def judge_consistent(verdict: str) -> bool | None:
    """Parse a Yes/No verdict; None when the judge answered something else."""
    v = verdict.strip().lower()
    if v.startswith("yes"):
        return True
    if v.startswith("no"):
        return False
    return None


def first_speak_unit(session: Session) -> int | None:
    return next((i for i, u in enumerate(session.units) if u.state == "speak"), None)


def turn_end_s(labels: Session) -> float | None:
    """End of the user's first turn: the last user word that ended before the labelled response starts."""
    k = first_speak_unit(labels)
    if k is None:
        return None
    t = k * labels.unit_s
    ends = [w.end for w in labels.user_words if w.end <= t + 1e-9]
    return max(ends) if ends else None


STATE_ERROR_CLASSES = ("onset_late", "onset_early", "offset_short", "offset_long", "offset_far", "spurious_speak", "dropout")
# An answer the model phrases shorter or longer than the teacher ends a unit or two off the label; further
# off, it is not a phrasing difference but a turn-taking error (talking on, or going quiet mid-answer).
OFFSET_SLACK_UNITS = 2


def _speak_runs(states: list[str]) -> list[tuple[int, int]]:
    """[start, end) of each run of speak units."""
    out, start = [], None
    for i, s in enumerate([*states, "listen"]):
        if s == "speak" and start is None:
            start = i
        elif s != "speak" and start is not None:
            out.append((start, i))
            start = None
    return out


def state_errors(pred: list[str], gold: list[str], slack: int = OFFSET_SLACK_UNITS) -> Counter:
    """Put every unit whose predicted state differs from the label into one class.

    Why: the per-unit ``state_accuracy`` mixes turn-taking mistakes (starting to speak too
    late/early, speaking into a pause, yielding mid-answer) with answer-length mismatches
    (the model's own spoken answer is shorter/longer than the teacher's, so its speak run
    ends earlier/later). Only the first kind is a turn-taking error. Classes:
    ``onset_late``/``onset_early`` (start of a labelled speak run), ``offset_short``/``offset_long``
    (its end, within ``slack`` units of the labelled end), ``offset_far`` (an end further off than
    that: talking on, or falling silent mid-answer, which are turn-taking errors), ``spurious_speak``
    (speaking with no labelled run nearby), ``dropout`` (listening inside a run the model did start
    and resume). Runs are matched by overlap.
    """
    n = min(len(pred), len(gold))
    pred, gold = pred[:n], gold[:n]
    c: Counter = Counter()
    g_runs, p_runs = _speak_runs(gold), _speak_runs(pred)
    for i in range(n):
        if pred[i] == gold[i]:
            continue
        if gold[i] == "speak":
            s, e = next(r for r in g_runs if r[0] <= i < r[1])
            overlap = [r for r in p_runs if r[0] < e and r[1] > s]
            if not overlap or i < min(r[0] for r in overlap):
                c["onset_late"] += 1
            elif i >= max(r[1] for r in overlap):
                c["offset_short" if e - i <= slack else "offset_far"] += 1
            else:
                c["dropout"] += 1
        else:
            p = next(r for r in p_runs if r[0] <= i < r[1])
            near = [r for r in g_runs if r[0] < p[1] and r[1] > p[0]]
            if near and i < min(r[0] for r in near):
                c["onset_early"] += 1
            elif near and i >= max(r[1] for r in near):
                c["offset_long" if i - max(r[1] for r in near) < slack else "offset_far"] += 1
            else:
                c["spurious_speak"] += 1
    return c


@dataclass
class SessionScore:
    units: int
    forced: int
    state_correct: int
    premature_speech: bool | None  # spoke before the labelled turn end (pause scenarios)
    barge_in_yield: bool | None  # returned to listen within one unit of the labelled yield
    backchannel_kept: float | None  # share of labelled speak units kept while the user backchannels
    latency_s: float | None  # first spoken word - user's turn end
    consistent: bool | None
    state_errors: Counter = field(default_factory=Counter)


def score_session(pred: Session, labels: Session, spoken_words: list[Word], scenario: str) -> SessionScore:
    n = min(len(pred.units), len(labels.units))
    correct = sum(pred.units[i].state == labels.units[i].state for i in range(n))
    k_gold = first_speak_unit(labels)
    premature = None
    if scenario == "pause" and k_gold is not None:
        premature = any(u.state == "speak" for u in pred.units[:k_gold])
    yield_ok = None
    if scenario == "barge_in":
        gold_yield = next(
            (i for i in range(1, len(labels.units)) if labels.units[i - 1].state == "speak" and labels.units[i].state == "listen"),
            None,
        )
        if gold_yield is not None:
            window = pred.units[gold_yield : gold_yield + 2]
            yield_ok = any(u.state == "listen" for u in window)
    kept = None
    if scenario == "backchannel":
        gold_speak = [i for i in range(n) if labels.units[i].state == "speak"]
        if gold_speak:
            kept = sum(pred.units[i].state == "speak" for i in gold_speak) / len(gold_speak)
    latency = None
    t_end = turn_end_s(labels)
    if t_end is not None:
        after = [w.start for w in spoken_words if w.start >= t_end - 1e-9]
        if after:
            latency = max(0.0, after[0] - t_end)
    return SessionScore(
        units=len(pred.units),
        forced=0,
        state_correct=correct,
        premature_speech=premature,
        barge_in_yield=yield_ok,
        backchannel_kept=kept,
        latency_s=latency,
        consistent=consistent(pred.spoken_text(), pred.written_document()),
        state_errors=state_errors([u.state for u in pred.units], [u.state for u in labels.units]),
    )


def graded_turn(meta: dict, task_family: str, answer: str) -> tuple[str, str]:
    """The (task family, known answer) a session's response is graded against.

    The graded answer is the row's ``answer``: the last turn's (a barge-in's second
    request, a multi-turn follow-up). It is filed under that turn's own family, which
    synthesis records per turn in ``meta["turns"][i]["task_family"]``; a barge-in's q2
    is often of another family than q1, whose family the row's ``task_family`` column
    carries. Datasets made before turns carried a family fall back to ``task_family``.
    """
    turns = meta.get("turns") or []
    if answer and turns:
        last = turns[-1]
        if isinstance(last, dict) and last.get("task_family") and (last.get("answer") or "") == answer:
            return str(last["task_family"]), answer
    return task_family, answer


@dataclass
class TaskTally:
    """Written- and spoken-answer grades per task family (the held-out test split's task accuracy).

    Why a class: the evaluation runner, the ablations and the tests all need the same
    per-family bookkeeping; keeping it in one pure place lets the tests assert
    per-family values on hand-built answers instead of only through a model.
    """

    written: dict[str, list[bool]] = field(default_factory=dict)
    spoken: dict[str, list[bool]] = field(default_factory=dict)

    def add(self, family: str, answer: str, written: str, spoken: str) -> tuple[bool | None, bool | None]:
        """Grade one response: the written ``**Answer:**`` line exactly, the spoken one by its key facts.

        Returns the (written, spoken) grades, None where nothing was graded (the per-session scores)."""
        from lws_core.data.tasks import grade_written

        if not answer:
            return None, None  # no known answer (small talk, backchannel scenarios): nothing to grade
        graded = grade_written(answer, written)
        self.written.setdefault(family, []).append(graded)
        ok = spoken_correct(answer, spoken)
        if ok is not None:
            self.spoken.setdefault(family, []).append(ok)
        return graded, ok

    @staticmethod
    def _rates(d: dict[str, list[bool]]) -> dict[str, float]:
        return {fam: sum(gs) / len(gs) for fam, gs in sorted(d.items()) if gs}

    def per_family(self) -> dict[str, float]:
        return self._rates(self.written)

    def per_family_spoken(self) -> dict[str, float]:
        return self._rates(self.spoken)

    def overall(self) -> float | None:
        """Written-answer accuracy over all graded responses (None when nothing had a known answer)."""
        gs = [g for v in self.written.values() for g in v]
        return sum(gs) / len(gs) if gs else None

    def overall_spoken(self) -> float | None:
        gs = [g for v in self.spoken.values() for g in v]
        return sum(gs) / len(gs) if gs else None

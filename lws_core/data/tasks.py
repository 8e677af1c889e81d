"""Template tasks with answers known by construction, plus exact grading.

A tiny model trained for minutes must be able to learn these, so texts are
short and regular: notes like ``- 12 + 30``, a written answer that always ends
with ``**Answer:** <answer>``, a spoken answer stating the same answer. Each
family has several phrasings; the last one is held out for the test split so
evaluation sees wordings training never did.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from lws_core.data.types import Note, Question, Script

FAMILIES = ("arithmetic", "multistep", "compare", "convert", "sequence", "table", "python")
ANSWER_RE = re.compile(r"^\*\*Answer:\*\*\s*(.*?)\s*$", re.MULTILINE)

# Phrasings per family; the LAST one of each list is held out for the test split.
PHRASINGS: dict[str, list[str]] = {
    "arithmetic": [
        "What is {a} {op} {b}?",
        "Can you tell me {a} {op} {b}?",
        "Please compute {a} {op} {b}.",
        "How much is {a} {op} {b}?",
        "I need {a} {op} {b}, what do I get?",
    ],
    "multistep": [
        "What is {a} times {b} plus {c}?",
        "Take {a} times {b} and add {c}.",
        "Multiply {a} by {b}, then add {c}.",
        "If I have {a} groups of {b} and {c} more, how many in total?",
    ],
    "compare": [
        "Which is {adj}, {a} or {b}?",
        "Tell me which is {adj}: {a} or {b}.",
        "Of {a} and {b}, which is {adj}?",
        "Between {a} and {b}, which one is {adj}?",
    ],
    "convert": [
        "How many {to} are in {n} {frm}?",
        "Convert {n} {frm} to {to}.",
        "What is {n} {frm} in {to}?",
        "Tell me {n} {frm} expressed in {to}.",
    ],
    "sequence": [
        "What comes next: {s1}, {s2}, {s3}, {s4}?",
        "What number follows {s1}, {s2}, {s3}, {s4}?",
        "Continue the list {s1}, {s2}, {s3}, {s4}.",
        "Which number goes after {s1}, {s2}, {s3}, {s4}?",
    ],
    "table": [
        "Make a table of {n} times 1 to {k}.",
        "Show {n} times 1 through {k} as a table.",
        "Write a table for {n} times 1 up to {k}.",
        "Can I see a times table for {n}, up to {k}?",
    ],
    "python": [
        "Write a Python function that {verb}.",
        "Give me Python code that {verb}.",
        "Show a Python function which {verb}.",
        "I want a small Python function that {verb}.",
    ],
}

# Training-only phrasings (``data.extra_phrasings``): more ways to ask the same questions, so that a tiny backbone
# that has only ever read these templates learns the task from the slots, not from three sentences.
# Written to stay clear of each family's held-out phrasing (the last of PHRASINGS): none reuses its
# distinctive words ("what do I get", "groups of", "between", "expressed", "goes after", "times table",
# "I want a small"), so the test split still measures phrasing generalisation. Graded splits never draw them.
# Each order of the slots keeps about its share among the training phrasings: when all eight new convert
# phrasings put the number first, the one base phrasing that says it last ("How many {to} are in {n} {frm}?")
# fell from a third of the convert questions to an eleventh, and its accuracy with it (stop 44: 0.86 -> 0.50).
EXTRA_PHRASINGS: dict[str, list[str]] = {
    "arithmetic": [
        "Work out {a} {op} {b}.",
        "Calculate {a} {op} {b} for me.",
        "What does {a} {op} {b} make?",
        "Tell me the result of {a} {op} {b}.",
        "Do you know {a} {op} {b}?",
        "Quick one: {a} {op} {b}?",
        "What would {a} {op} {b} be?",
        "Figure out {a} {op} {b}, please.",
    ],
    "multistep": [
        "Compute {a} times {b}, and then add {c}.",
        "Work out {a} times {b} plus {c}.",
        "Start with {a} times {b} and add {c} to it.",
        "Find {a} multiplied by {b}, plus {c}.",
        "How much is {a} times {b} plus {c}?",
        "Take the product of {a} and {b}, then add {c}.",
        "Calculate {a} times {b} and then {c} more.",
        "Please do {a} times {b}, plus {c}.",
    ],
    "compare": [
        "Is {a} or {b} {adj}?",
        "{a} or {b}: which is {adj}?",
        "Which number is {adj}, {a} or {b}?",
        "Pick the {adj} of {a} and {b}.",
        "Compare {a} and {b} and tell me which is {adj}.",
        "Looking at {a} and {b}, which is {adj}?",
        "Which would be {adj}: {a} or {b}?",
        "Say which is {adj}, {a} or {b}.",
    ],
    "convert": [
        "Change {n} {frm} into {to}.",
        "How much is {n} {frm} in {to}?",
        "Turn {n} {frm} into {to}, please.",
        "Give me {n} {frm} in {to}.",
        "How many {to} make {n} {frm}?",
        "Count the {to} in {n} {frm}.",
        "Could you convert {n} {frm} to {to}?",
        "Find the number of {to} in {n} {frm}.",
    ],
    "sequence": [
        "Finish the pattern {s1}, {s2}, {s3}, {s4}.",
        "Here is a sequence: {s1}, {s2}, {s3}, {s4}. What is next?",
        "Give the next term of {s1}, {s2}, {s3}, {s4}.",
        "Extend {s1}, {s2}, {s3}, {s4} by one number.",
        "Predict the next number: {s1}, {s2}, {s3}, {s4}.",
        "What is the next one in {s1}, {s2}, {s3}, {s4}?",
        "Keep counting: {s1}, {s2}, {s3}, {s4}.",
        "Complete the series {s1}, {s2}, {s3}, {s4}.",
    ],
    "table": [
        "Build a table of {n} times 1 to {k}.",
        "Give me a table with {n} times 1 to {k}.",
        "Put {n} times 1 through {k} in a table.",
        "Draw a table of the multiples of {n} from 1 to {k}.",
        "Please make a table: {n} times 1 to {k}.",
        "I would like a table of {n} times 1 through {k}.",
        "Create a table showing {n} times 1 to {k}.",
        "List {n} times 1 to {k} in a table.",
    ],
    "python": [
        "Code a Python function that {verb}.",
        "Please write Python that {verb}.",
        "Can you write a Python function that {verb}?",
        "Make a Python function which {verb}.",
        "Write some Python code which {verb}.",
        "Define a Python function that {verb}.",
        "Create Python code that {verb}.",
        "Give me a function in Python that {verb}.",
    ],
}

_OPS = {"plus": ("+", lambda a, b: a + b), "minus": ("-", lambda a, b: a - b), "times": ("*", lambda a, b: a * b)}
_UNITS = [
    ("meters", "centimeters", 100),
    ("kilograms", "grams", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("feet", "inches", 12),
    ("days", "hours", 24),
    ("weeks", "days", 7),
]
_ADJS = ["larger", "smaller", "bigger"]
_PY = [
    ("adds {n} to a number", "+", "plus"),
    ("multiplies a number by {n}", "*", "times"),
    ("subtracts {n} from a number", "-", "minus"),
]


def phrasing_ids(family: str, split: str, extra: bool = False) -> list[int]:
    """Phrasing indices allowed in a split: the last of ``PHRASINGS`` is test-only. With ``extra`` (training
    sessions only, ``data.extra_phrasings``) the training ones also include ``EXTRA_PHRASINGS``, numbered on
    from ``len(PHRASINGS[family])``."""
    n = len(PHRASINGS[family])
    if split == "test":
        return [n - 1]
    return list(range(n - 1)) + (list(range(n, n + len(EXTRA_PHRASINGS[family]))) if extra else [])


def phrasing_template(family: str, ph: int) -> str:
    """The template of phrasing ``ph`` (see :func:`phrasing_ids`)."""
    base = PHRASINGS[family]
    return base[ph] if ph < len(base) else EXTRA_PHRASINGS[family][ph - len(base)]


def _fill(template: str, values: dict[str, object]) -> tuple[str, dict[str, int]]:
    """Fill placeholders; return the text and the index of the whitespace token holding each placeholder."""
    idx: dict[str, int] = {}
    words = []
    for i, tok in enumerate(template.split()):
        for name in re.findall(r"\{(\w+)\}", tok):
            idx[name] = i
        words.append(tok.format(**values))
    # a placeholder value may itself contain spaces (python verbs): re-split and remap indices
    text = " ".join(words)
    if any(" " in str(v) for v in values.values()):
        offsets, pos = [], 0
        for w in words:
            offsets.append(pos)
            pos += len(w.split())
        for name, i in list(idx.items()):
            idx[name] = offsets[i] + len(str(values[name]).split()) - 1
    return text, idx


def training_vocabulary() -> set[str]:
    """Every word the training phrasings and their slot values can say (lower case, no punctuation).

    What filler words must not be (:mod:`lws_core.data.fillers`): a filler "times" or "hours" would change the
    question. The held-out phrasings are not read here; the extra ones (``data.extra_phrasings``) are.
    """
    texts = [phrasing_template(f, i) for f in PHRASINGS for i in phrasing_ids(f, "train", extra=True)]
    texts += list(_OPS) + [f"{a} {b}" for a, b, _ in _UNITS] + [v for v, _, _ in _PY] + list(_ADJS)
    words = {w.strip(".,?!:{}").lower() for t in texts for w in re.split(r"[\s{}]+", t)}
    return {w for w in words if w and w.isalpha()}


@lru_cache(maxsize=1)
def slot_words() -> frozenset[str]:
    """The words of the slot values that change what is asked: operations, units, comparisons, Python verbs."""
    words = set(_OPS) | {w for a, b, _ in _UNITS for w in (a, b)} | set(_ADJS)
    return frozenset(words | {w.lower() for v, _, _ in _PY for w in re.sub(r"\{\w+\}", " ", v).split()})


def phrasing_words() -> list[str]:
    """The training phrasings' own words, slot values left out (sorted: a stable order for seeded draws).

    What a recogniser that only ever heard these templates says when it mishears a word it does not know
    (:func:`lws_core.train.pretrain_backbone.mishearing`). Units, operations, comparisons and the Python
    verbs are left out: hearing one that was not said would change the question. Held-out phrasings unread.
    """
    slots = slot_words()
    texts = [re.sub(r"\{\w+\}", " ", phrasing_template(f, i)) for f in PHRASINGS for i in phrasing_ids(f, "train", extra=True)]
    words = {w.strip(".,?!:").lower() for t in texts for w in t.split()}
    return sorted(w for w in words if w and w.isalpha() and w not in slots)


def insert_fillers(template: str, fillers: list[str], rng: np.random.Generator, place: str = "anywhere") -> str:
    """``template`` with each filler word put at a random word gap: ``anywhere`` (any gap after the first word, the
    end included) or ``edges`` (before the first word or after the last). At the end, the question's closing
    punctuation moves to the new last word. The slots and phrasing stay as they were."""
    words = template.split()
    for w in fillers:
        n = len(words)
        k = int(rng.integers(1, n + 1)) if place == "anywhere" else int(rng.choice([0, n]))
        if k == n:
            stem = words[-1].rstrip(".?!")
            words[-1:] = [stem, w + words[-1][len(stem):]]
        else:
            words.insert(k, w)
    return " ".join(words)


def make_question(
    family: str, rng: np.random.Generator, split: str = "train",
    fillers: tuple[list[str], np.random.Generator, str] | None = None, extra: bool = False,
) -> Question:
    """One template question with its script; phrasing drawn from the split's allowed set.

    ``fillers``: words to put into the question (:func:`insert_fillers`: the words, their own generator, where),
    so the question's values and phrasing are those it would have had without them (``data.filler_rate``).
    ``extra``: draw training phrasings from :data:`EXTRA_PHRASINGS` too (``data.extra_phrasings``; training and
    validation sessions only, never a graded split).
    """
    ph = int(rng.choice(phrasing_ids(family, split, extra)))
    template = phrasing_template(family, ph)
    if fillers is not None and fillers[0]:
        template = insert_fillers(template, *fillers)
    ri = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    if family == "arithmetic":
        op = str(rng.choice(list(_OPS)))
        a, b = (ri(2, 12), ri(2, 12)) if op == "times" else (ri(10, 99), ri(2, 60))
        if op == "minus" and b > a:
            a, b = b, a
        sym, fn = _OPS[op]
        r = fn(a, b)
        text, ix = _fill(template, {"a": a, "b": b, "op": op})
        notes = [Note(f"- {a} {sym} {b}\n", ix["b"])]
        written = f"{a} {sym} {b} = {r}\n**Answer:** {r}\n"
        spoken = f"{a} {op} {b} is {r}."
    elif family == "multistep":
        a, b, c = ri(2, 9), ri(2, 9), ri(2, 30)
        ab, r = a * b, a * b + c
        text, ix = _fill(template, {"a": a, "b": b, "c": c})
        notes = [Note(f"- {a} * {b} = {ab}\n", ix["b"]), Note(f"- + {c}\n", ix["c"])]
        written = f"{ab} + {c} = {r}\n**Answer:** {r}\n"
        spoken = f"First {ab}, then {r}."
    elif family == "compare":
        a, b = ri(10, 99), ri(10, 99)
        while b == a:
            b = ri(10, 99)
        adj = str(rng.choice(_ADJS))
        r = min(a, b) if adj == "smaller" else max(a, b)
        text, ix = _fill(template, {"a": a, "b": b, "adj": adj})
        notes = [Note(f"- {a} vs {b}\n", max(ix["a"], ix["b"]))]
        written = f"{a} vs {b}: {r} is {adj}\n**Answer:** {r}\n"
        spoken = f"{r} is the {adj} number."
    elif family == "convert":
        frm, to, f = _UNITS[int(rng.integers(len(_UNITS)))]
        n = ri(2, 9)
        r = n * f
        text, ix = _fill(template, {"n": n, "frm": frm, "to": to})
        notes = [Note(f"- {n} {frm}\n", ix["frm"])]
        if ix["to"] > ix["frm"]:
            notes.append(Note(f"- to {to}\n", ix["to"]))
        written = f"{n} * {f} = {r} {to}\n**Answer:** {r}\n"
        spoken = f"That is {r} {to}."
    elif family == "sequence":
        s1, d = ri(1, 20), ri(2, 9)
        s = [s1 + k * d for k in range(5)]
        r = s[4]
        text, ix = _fill(template, {"s1": s[0], "s2": s[1], "s3": s[2], "s4": s[3]})
        notes = [Note(f"- step {d}\n", ix["s2"])]
        written = f"{s[3]} + {d} = {r}\n**Answer:** {r}\n"
        spoken = f"The next number is {r}."
    elif family == "table":
        n, k = ri(2, 9), ri(3, 4)
        vals = [n * i for i in range(1, k + 1)]
        r = ", ".join(str(v) for v in vals)
        text, ix = _fill(template, {"n": n, "k": k})
        t_ix = next(i for i, w in enumerate(text.split()) if w.startswith("table"))
        notes = [Note(f"- table of {n}\n", max(ix["n"], t_ix))]
        rows = "".join(f"| {i} | {v} |\n" for i, v in enumerate(vals, 1))
        written = f"| x | {n}x |\n|---|---|\n{rows}**Answer:** {r}\n"
        spoken = f"The values are {r}."
    elif family == "python":
        verb_t, sym, word = _PY[int(rng.integers(len(_PY)))]
        n = ri(2, 9)
        verb = verb_t.format(n=n)
        r = f"return x {sym} {n}"
        text, ix = _fill(template, {"verb": verb})
        n_ix = ix["verb"] - len(verb.split()) + 1 + verb.split().index(str(n))
        notes = [Note(f"- x {sym} {n}\n", n_ix)]
        written = f"```python\ndef f(x):\n    {r}\n```\n**Answer:** {r}\n"
        spoken = f"It returns x {word} {n}."
    else:
        raise ValueError(f"unknown task family {family!r}; known: {', '.join(FAMILIES)}")
    answer = str(r)
    return Question.make(text, answer=answer, task_family=family, phrasing=ph, script=Script(notes, written, spoken))


def make_followup(first: Question, rng: np.random.Generator) -> Question:
    """A follow-up that refers to what was written ("that"), with its own known answer.

    The returned question carries a template script (used by the template
    teacher) and the first turn as ``context``, so any other teacher can be asked
    to script it too.
    """
    q = _followup(first, rng)
    ctx = first.context + ((first.text, first.script.written if first.script else f"**Answer:** {first.answer or ''}\n"),)
    return Question(q.text, q.answer, q.task_family, q.words, q.phrasing, q.script, ctx)


def _followup(first: Question, rng: np.random.Generator) -> Question:
    a = first.answer or ""
    if re.fullmatch(r"-?\d+", a):
        v = int(a)
        if rng.random() < 0.5:
            k = int(rng.integers(2, 20))
            text = str(rng.choice([f"Now add {k} to that.", f"And what is that plus {k}?"]))
            r = v + k
            written, note = f"{v} + {k} = {r}\n**Answer:** {r}\n", f"- + {k}\n"
            spoken = f"Now that makes {r}."
        else:
            text = str(rng.choice(["Now double that.", "And what is twice that?"]))
            r = 2 * v
            written, note = f"{v} * 2 = {r}\n**Answer:** {r}\n", "- * 2\n"
            spoken = f"Doubled, it is {r}."
        q = Question.make(text, answer=str(r), task_family=first.task_family)
        return Question(q.text, q.answer, q.task_family, q.words, 0, Script([Note(note, len(q.words) - 1)], written, spoken))
    text = "Please repeat the answer."
    q = Question.make(text, answer=a, task_family=first.task_family)
    spoken = first.script.spoken if first.script else f"The answer is {a}."
    return Question(q.text, a, q.task_family, q.words, 0, Script([], f"**Answer:** {a}\n", spoken))


_WS = re.compile(r"\s+")


def _norm(s: str) -> str:
    return _WS.sub(" ", s.strip().strip("`").strip())


def written_answer(written: str) -> str | None:
    """The last ``**Answer:**`` line of a document (normalised), or None."""
    found = ANSWER_RE.findall(written)
    return _norm(found[-1]) if found else None


def grade_written(answer: str, written: str) -> bool:
    """Exact grading: the document's last ``**Answer:**`` line equals ``answer`` after whitespace normalisation."""
    got = written_answer(written)
    return got is not None and got == _norm(answer)


_FACT = re.compile(r"-?\d+(?:\.\d+)?")


def key_facts(text: str) -> set[str]:
    """Numbers in ``text`` (the checkable facts of a short answer): spoken facts should appear in the written answer."""
    return set(_FACT.findall(text or ""))

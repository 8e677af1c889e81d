"""Stage 1 types: a question, and the teacher's script (notes, written answer, spoken answer)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Note:
    """Text to write while listening, keyed to the index of the last question word it depends on."""

    text: str
    depends_on_word: int


@dataclass(frozen=True)
class Script:
    """What the model should write while listening (notes), write as its answer, and say."""

    notes: list[Note]
    written: str
    spoken: str


@dataclass(frozen=True)
class Question:
    """A user request. ``words`` are its whitespace tokens (the TTS times exactly these).

    ``answer`` is the canonical answer when known (template tasks), else None.
    ``script`` is set by the template generator, which knows the answer by
    construction; other teachers ignore it. ``context`` holds the earlier turns
    of the conversation as (question, written answer) pairs: a follow-up such as
    "Now double that." means nothing to a teacher without them.
    """

    text: str
    answer: str | None = None
    task_family: str = "open"
    words: list[str] = field(default_factory=list)
    phrasing: int = 0
    script: Script | None = None
    context: tuple[tuple[str, str], ...] = ()

    @classmethod
    def make(cls, text: str, **kw) -> Question:  # noqa: ANN003
        return cls(text=text, words=text.split(), **kw)


class Reject(Exception):  # noqa: N818 - a counted outcome, not an error
    """A sample that must not be written; ``reason`` is a short key counted in the dataset card."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

"""Check a session against the schema's invariants; return every violation with its unit and reason."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from lws_core.schema.timeline import Session
from lws_core.schema.tokens import SCHEMA_VERSION, SPECIAL_TOKENS

# Words too common to prove a leak from the future (the causality check looks for
# distinctive words/numbers that appear in the output before the user said them).
_STOP = frozenset(
    ["a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "by", "from", "is", "are", "was", "were", "be", "been", "it", "its", "this", "that", "these", "those", "what", "which", "who", "how", "why", "when", "where", "i", "you", "he", "she", "we", "they", "me", "my", "your", "our", "their", "can", "could", "would", "should", "will", "shall", "do", "does", "did", "so", "if", "then", "than", "as", "not", "no", "yes", "ok", "okay", "please", "tell", "me", "give", "let", "us", "about", "into", "over", "under", "up", "down", "out", "all", "any", "some", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "zero", "answer", "question", "write", "say", "here", "there", "now", "just", "well", "sure", "right", "mm", "hmm", "uh", "um"]
)
_TOKEN = re.compile(r"[A-Za-z][A-Za-z']{3,}|\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Violation:
    unit: int | None  # None: a session-level problem
    reason: str

    def __str__(self) -> str:
        where = "session" if self.unit is None else f"unit {self.unit}"
        return f"{where}: {self.reason}"


def _distinctive(text: str) -> set[str]:
    return {t.lower() for t in _TOKEN.findall(text) if t.lower() not in _STOP}


def validate(
    session: Session,
    max_write_tokens: int | None = None,
    max_say_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    check_leaks: bool = True,
) -> list[Violation]:
    """Return all violations of invariants 3, 4, 6, 7 (and well-formedness) in ``session``.

    Causality (3) is checked two ways: a unit's ``depends_on_word`` must already
    have ended by the end of that unit, and (``check_leaks``) no distinctive word
    of the user's may appear in the output before the user said it, unless it
    was already in the system text.
    """
    out: list[Violation] = []
    if session.schema_version != SCHEMA_VERSION:
        out.append(Violation(None, f"schema version {session.schema_version!r} != {SCHEMA_VERSION!r}"))
    for i, w in enumerate(session.user_words):
        if w.end < w.start:
            out.append(Violation(None, f"user word {i} {w.text!r} ends before it starts"))
    t_end = session.duration_s
    if session.user_words and session.user_words[-1].end > t_end + 1e-6:
        out.append(Violation(None, f"user words run past the last unit ({session.user_words[-1].end:.2f}s > {t_end:.2f}s)"))

    known_before = _distinctive(session.system or "")
    # First time each distinctive word is fully heard.
    heard_at: dict[str, float] = {}
    for w in session.user_words:
        for tok in _distinctive(w.text):
            heard_at.setdefault(tok, w.end)

    for i, u in enumerate(session.units):
        for name, text in (("write", u.write), ("say", u.say)):
            for s in SPECIAL_TOKENS:
                if s in text:
                    out.append(Violation(i, f"{name} text contains the schema token {s}"))
        if u.state == "listen" and u.say.strip():
            out.append(Violation(i, "listen unit has speech (invariant 4)"))
        if u.state == "listen" and u.eot:
            out.append(Violation(i, "listen unit carries <|eot|>"))
        if count_tokens is not None:
            if max_write_tokens is not None and (n := count_tokens(u.write)) > max_write_tokens:
                out.append(Violation(i, f"write has {n} tokens > budget {max_write_tokens}"))
            if max_say_tokens is not None and (n := count_tokens(u.say)) > max_say_tokens:
                out.append(Violation(i, f"say has {n} tokens > budget {max_say_tokens}"))
        unit_end = (i + 1) * session.unit_s
        if u.depends_on_word is not None:
            if not 0 <= u.depends_on_word < len(session.user_words):
                out.append(Violation(i, f"depends_on_word {u.depends_on_word} is not a user word index"))
            else:
                w = session.user_words[u.depends_on_word]
                if w.end > unit_end + 1e-9:
                    out.append(
                        Violation(i, f"causality: uses word {u.depends_on_word} {w.text!r} heard at {w.end:.2f}s, unit ends {unit_end:.2f}s")
                    )
        if check_leaks:
            for tok in sorted(_distinctive(u.write + " " + u.say)):
                t = heard_at.get(tok)
                if t is not None and t > unit_end + 1e-9 and tok not in known_before:
                    out.append(Violation(i, f"causality: mentions {tok!r} before the user says it at {t:.2f}s"))
                    known_before.add(tok)  # report each leak once
        for tok in _distinctive(u.write + " " + u.say):
            known_before.add(tok)
    return out

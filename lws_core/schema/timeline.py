"""Typed session timeline: what the user said when, and what the model wrote and said per unit.

This is the format that data synthesis writes, the collator encodes, the engine
produces and evaluation reads. Tokenization happens later, so the tokenizer can
change without re-synthesizing audio.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lws_core.errors import InputError, SchemaError
from lws_core.schema.tokens import SCHEMA_VERSION

State = Literal["listen", "speak"]


class Word(BaseModel):
    """One user word with its time span in the session audio (seconds)."""

    model_config = ConfigDict(extra="forbid")

    text: str
    start: float = Field(ge=0)
    end: float = Field(ge=0)


class Unit(BaseModel):
    """One unit's labels: floor state, text appended to the document, words spoken.

    ``depends_on_word`` is the index (into ``Session.user_words``) of the last user
    word this unit's content depends on; the causality check uses it.
    """

    model_config = ConfigDict(extra="forbid")

    state: State = "listen"
    write: str = ""
    say: str = ""
    eot: bool = False
    depends_on_word: int | None = None


class Session(BaseModel):
    """A whole session: system text, user words with times, and one Unit per ``unit_s`` of audio."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = SCHEMA_VERSION
    id: str = "session"
    unit_s: float = Field(1.0, ge=0.25, le=2.0)
    system: str | None = None
    user_words: list[Word] = Field(default_factory=list)
    units: list[Unit] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return len(self.units) * self.unit_s

    def written_document(self) -> str:
        return "".join(u.write for u in self.units)

    def spoken_text(self) -> str:
        return " ".join(u.say.strip() for u in self.units if u.say.strip())

    def revealed_words(self, unit_index: int) -> list[Word]:
        """User words fully heard by the end of unit ``unit_index``."""
        t = (unit_index + 1) * self.unit_s
        return [w for w in self.user_words if w.end <= t + 1e-9]


def load_session(path: str | Path) -> Session:
    """Read a session JSON file; malformed input raises a one-line SchemaError/InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"session file not found: {path}")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SchemaError(f"{path}: not valid JSON ({e})") from None
    return session_from_dict(raw, source=str(path))


def session_from_dict(raw: Any, source: str = "session") -> Session:
    if not isinstance(raw, dict):
        raise SchemaError(f"{source}: a session must be a JSON object")
    try:
        return Session.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise SchemaError(f"{source}: {loc}: {first['msg']}{more}") from None


def save_session(session: Session, path: str | Path) -> None:
    Path(path).write_text(session.model_dump_json(indent=2))

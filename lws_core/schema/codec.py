"""Encode a session timeline into a token stream with labels, and parse token streams back.

One unit in the stream::

    <|unit|> <|audio|>xK  STATE  <|write|> w1..wn  <|say|> s1..sm [<|eot|>]  <|end|>
    └──── given ─────────┘└──────────────── generated (labelled) ─────────────────┘

The parser is an explicit state machine (:class:`UnitParser`) shared by
offline parsing and the streaming engine, which asks it which tokens may come
next; a stream that is cut or breaks the grammar is force-closed so the result
always parses (invariant 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from lws_core.errors import SchemaError
from lws_core.schema.timeline import Session, Unit
from lws_core.schema.tokens import Channel

if TYPE_CHECKING:
    from lws_core.schema.tokenizer import SchemaTokenizer

IGNORE_INDEX = -100


@dataclass
class Encoded:
    """A tokenized session, position-aligned lists.

    ``labels`` holds the token id on generated positions and -100 elsewhere;
    ``audio_mask`` marks the ``<|audio|>`` placeholders whose embeddings the
    model replaces; ``unit_starts`` is the position of each unit's ``<|unit|>``;
    ``state_positions`` the position of each unit's state token.
    """

    input_ids: list[int]
    labels: list[int]
    channels: list[int]
    audio_mask: list[bool]
    unit_starts: list[int]
    state_positions: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def heard_words(session: Session) -> list[list[str]]:
    """The user words heard in each unit: a word belongs to the unit by whose end it has ended.

    The same rule the data pipeline uses to place a note (``heard_unit``), so a
    text-only view of a session never shows a word before the unit that hears it.
    """
    out: list[list[str]] = [[] for _ in session.units]
    if not out:
        return out
    for w in session.user_words:
        u = max(0, math.ceil(w.end / session.unit_s - 1e-9) - 1)
        out[min(u, len(out) - 1)].append(w.text)
    return out


def encode(
    session: Session, tok: SchemaTokenizer, audio_tokens_per_unit: int, heard: list[list[int]] | None = None
) -> Encoded:
    """Tokenize a session. Raises SchemaError if a text holds a schema token string.

    ``heard`` (K token ids per unit) gives the text-only view used to pretrain a
    backbone without audio: each unit's K audio slots hold the tokens of what the
    user said in that unit, placed at their time in the unit, and ``<|audio|>``
    where nothing was said (unlabelled, like audio). The LM learns the whole
    listen → note → answer → speech behaviour from text, and the LWS stage only has
    to teach the audio projector to fill the same slots.
    """
    ids = tok.special
    if heard is not None:
        if len(heard) != len(session.units):
            raise SchemaError(f"{len(heard)} heard units for {len(session.units)} units")
        if any(len(h) != audio_tokens_per_unit for h in heard):
            raise SchemaError(f"every heard unit must fill exactly {audio_tokens_per_unit} slots")
    out = Encoded([], [], [], [], [], [])

    def put(token: int, channel: Channel = Channel.NONE, audio: bool = False) -> None:
        out.input_ids.append(token)
        out.labels.append(token if channel != Channel.NONE else IGNORE_INDEX)
        out.channels.append(int(channel))
        out.audio_mask.append(audio)

    if session.system is not None:
        put(ids.session)
        for t in tok.encode_text(session.system, where="system"):
            put(t)
        put(ids.end)

    for i, unit in enumerate(session.units):
        out.unit_starts.append(len(out.input_ids))
        put(ids.unit)
        if heard is not None:
            for t in heard[i]:
                put(t)
        else:
            for _ in range(audio_tokens_per_unit):
                put(ids.audio, audio=True)
        out.state_positions.append(len(out.input_ids))
        put(ids.speak if unit.state == "speak" else ids.listen, Channel.STATE)
        put(ids.write, Channel.STATE)
        wch = Channel.WRITE_RESPOND if unit.state == "speak" else Channel.WRITE_LISTEN
        for t in tok.encode_segment(unit.write, where=f"unit {i} write"):
            put(t, wch)
        put(ids.say, wch)
        for t in tok.encode_segment(unit.say, where=f"unit {i} say"):
            put(t, Channel.SAY)
        if unit.eot:
            put(ids.eot, Channel.SAY)
        put(ids.end, Channel.SAY)
    return out


class Phase(Enum):
    """Where the parser is inside the grammar."""

    OUTSIDE = "outside"  # between units
    SYSTEM = "system"  # inside <|session|> ... <|end|>
    AUDIO = "audio"  # after <|unit|>: audio placeholders, then the state
    STATE = "state"  # the model must emit <|listen|> or <|speak|>
    EXPECT_WRITE = "expect_write"  # after the state: <|write|>
    WRITE = "write"
    SAY = "say"
    AFTER_EOT = "after_eot"  # only <|end|> may follow


@dataclass
class ParsedUnit:
    """One unit read back from tokens. ``forced`` means the parser had to close it."""

    state: str = "listen"
    write_ids: list[int] = field(default_factory=list)
    say_ids: list[int] = field(default_factory=list)
    eot: bool = False
    audio_count: int = 0
    forced: bool = False
    issues: list[str] = field(default_factory=list)
    write: str = ""
    say: str = ""

    def to_unit(self) -> Unit:
        return Unit(state=self.state, write=self.write, say=self.say, eot=self.eot)  # type: ignore[arg-type]


class UnitParser:
    """Incremental parser over schema token ids.

    ``feed`` accepts any id; grammar breaks are recorded on the unit (and raise
    in strict mode) and the unit is force-closed where needed, so the output is
    always a list of well-formed units.
    """

    def __init__(self, tok: SchemaTokenizer, strict: bool = False, start: Phase = Phase.OUTSIDE) -> None:
        self.tok = tok
        self.vocab_size = tok.vocab_size
        self.ids = tok.special
        self.strict = strict
        self.phase = start
        self.units: list[ParsedUnit] = []
        self.system_ids: list[int] = []
        self.has_system = False
        self.current: ParsedUnit | None = ParsedUnit() if start not in (Phase.OUTSIDE, Phase.SYSTEM) else None

    # -- grammar -------------------------------------------------------------------------
    def allowed_special(self) -> frozenset[int]:
        """Schema tokens that may come next; ``text_allowed`` says whether plain text may."""
        s = self.ids
        p = self.phase
        if p in (Phase.OUTSIDE,):
            return frozenset({s.unit, s.session})
        if p == Phase.SYSTEM:
            return frozenset({s.end})
        if p in (Phase.AUDIO, Phase.STATE):
            return frozenset({s.listen, s.speak} | ({s.audio} if p == Phase.AUDIO else set()))
        if p == Phase.EXPECT_WRITE:
            return frozenset({s.write})
        if p == Phase.WRITE:
            return frozenset({s.say})
        if p == Phase.SAY:
            if self.current is not None and self.current.state == "listen":
                return frozenset({s.end})
            return frozenset({s.eot, s.end})
        return frozenset({s.end})  # AFTER_EOT

    def text_allowed(self) -> bool:
        if self.phase in (Phase.WRITE, Phase.SYSTEM):
            return True
        return self.phase == Phase.SAY and self.current is not None and self.current.state == "speak"

    # -- feeding -------------------------------------------------------------------------
    def _issue(self, msg: str) -> None:
        if self.strict:
            raise SchemaError(f"unit {len(self.units)}: {msg}")
        if self.current is not None:
            self.current.issues.append(msg)

    def _close(self, forced: bool) -> ParsedUnit:
        u = self.current or ParsedUnit()
        u.forced = u.forced or forced
        u.write = self.tok.decode_segment(u.write_ids)
        u.say = self.tok.decode_segment(u.say_ids)
        self.units.append(u)
        self.current = None
        self.phase = Phase.OUTSIDE
        return u

    def feed(self, token: int) -> ParsedUnit | None:
        """Consume one id; returns the unit it completed, if any.

        An id outside the tokenizer's vocabulary (negative, or past its size) is
        garbage: strict mode raises SchemaError, lenient mode notes it on the open
        unit and drops it. It must never reach the HF decoder, which raises
        OverflowError/IndexError on such ids and would break parse's contract.
        """
        if not 0 <= token < self.vocab_size:
            if self.strict:
                raise SchemaError(f"unit {len(self.units)}: token id {token} outside the vocabulary (0..{self.vocab_size - 1})")
            if self.current is not None:
                self.current.issues.append(f"token id {token} outside the vocabulary (dropped)")
            return None
        s = self.ids
        p = self.phase
        special = token in self.tok.special_set
        if p == Phase.OUTSIDE:
            if token == s.unit:
                self.current = ParsedUnit()
                self.phase = Phase.AUDIO
            elif token == s.session and not self.units and not self.has_system:
                self.has_system = True
                self.phase = Phase.SYSTEM
            elif self.strict:
                raise SchemaError(f"unit {len(self.units)}: token {token} outside a unit")
            return None
        if p == Phase.SYSTEM:
            if token == s.end:
                self.phase = Phase.OUTSIDE
            elif special:
                if self.strict:
                    raise SchemaError(f"system text: unexpected schema token {token}")
                if token == s.unit:
                    self.phase = Phase.OUTSIDE
                    return self.feed(token)
            else:
                self.system_ids.append(token)
            return None

        assert self.current is not None
        u = self.current
        if token == s.unit:  # a new unit starts: force-close the open one
            self._issue("unit cut before <|end|>")
            self._close(forced=True)
            return self.feed(token)
        if p == Phase.AUDIO and token == s.audio:
            u.audio_count += 1
            return None
        if p in (Phase.AUDIO, Phase.STATE):
            if token in (s.listen, s.speak):
                u.state = "speak" if token == s.speak else "listen"
                self.phase = Phase.EXPECT_WRITE
                return None
            self._issue(f"expected a state token, got {token}")
            if token == s.end:
                return self._close(forced=True)
            return None
        if p == Phase.EXPECT_WRITE:
            if token == s.write:
                self.phase = Phase.WRITE
                return None
            self._issue(f"expected <|write|>, got {token}")
            self.phase = Phase.WRITE
            return self.feed(token) if token in (s.say, s.end) else None
        if p == Phase.WRITE:
            if token == s.say:
                self.phase = Phase.SAY
            elif token == s.end:
                self._issue("unit ended inside the write segment")
                return self._close(forced=True)
            elif special:
                self._issue(f"schema token {token} inside the write segment")
            else:
                u.write_ids.append(token)
            return None
        if p == Phase.SAY:
            if token == s.end:
                return self._close(forced=False or bool(u.issues))
            if token == s.eot:
                if u.state == "listen":
                    self._issue("<|eot|> in a listen unit")
                else:
                    u.eot = True
                    self.phase = Phase.AFTER_EOT
            elif special:
                self._issue(f"schema token {token} inside the say segment")
            elif u.state == "listen":
                self._issue("speech in a listen unit (dropped)")
            else:
                u.say_ids.append(token)
            return None
        # AFTER_EOT
        if token == s.end:
            return self._close(forced=bool(u.issues))
        self._issue(f"expected <|end|> after <|eot|>, got {token}")
        return None

    def finish(self) -> list[ParsedUnit]:
        """End of stream: force-close an open unit and return all units."""
        if self.current is not None:
            self._issue("stream ended inside a unit")
            self._close(forced=True)
        return self.units

    @property
    def system(self) -> str | None:
        return self.tok.decode_text(self.system_ids) if self.has_system else None


def parse(token_ids: list[int], tok: SchemaTokenizer, strict: bool = False) -> list[ParsedUnit]:
    """Parse a token stream into units. Never raises in lenient mode; SchemaError in strict mode."""
    parser = UnitParser(tok, strict=strict)
    for t in token_ids:
        parser.feed(int(t))
    return parser.finish()


def parse_session(token_ids: list[int], tok: SchemaTokenizer, unit_s: float = 1.0, strict: bool = False) -> Session:
    """Parse a whole stream back into a Session (system text + units)."""
    parser = UnitParser(tok, strict=strict)
    for t in token_ids:
        parser.feed(int(t))
    units = parser.finish()
    return Session(unit_s=unit_s, system=parser.system, units=[u.to_unit() for u in units])

"""The schema's special tokens and their roles. Nothing else in LWS hard-codes a token string."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

SCHEMA_VERSION = "lws-v1"

SESSION = "<|session|>"
UNIT = "<|unit|>"
AUDIO = "<|audio|>"
LISTEN = "<|listen|>"
SPEAK = "<|speak|>"
WRITE = "<|write|>"
SAY = "<|say|>"
EOT = "<|eot|>"
END = "<|end|>"
PAD = "<|pad|>"

#: Order matters only for tokenizers trained from scratch (ids 0..n-1).
SPECIAL_TOKENS: tuple[str, ...] = (PAD, SESSION, UNIT, AUDIO, LISTEN, SPEAK, WRITE, SAY, EOT, END)

STATE_TOKENS = {"listen": LISTEN, "speak": SPEAK}


class Channel(IntEnum):
    """Which loss channel a position belongs to (invariant 5). NONE positions carry no label.

    Each channel owns the token that ends its segment: the state channel also
    predicts the ``<|write|>`` marker, the write channels predict ``<|say|>``
    (deciding when to stop writing), and the say channel predicts ``<|eot|>``
    and ``<|end|>`` (deciding when to stop speaking).
    """

    NONE = 0
    STATE = 1
    WRITE_LISTEN = 2
    WRITE_RESPOND = 3
    SAY = 4


CHANNEL_NAMES = {
    Channel.STATE: "state",
    Channel.WRITE_LISTEN: "write_listen",
    Channel.WRITE_RESPOND: "write_respond",
    Channel.SAY: "say",
}


@dataclass(frozen=True)
class SpecialIds:
    """Token ids of the schema tokens in one tokenizer."""

    pad: int
    session: int
    unit: int
    audio: int
    listen: int
    speak: int
    write: int
    say: int
    eot: int
    end: int

    @classmethod
    def from_mapping(cls, ids: dict[str, int]) -> SpecialIds:
        return cls(
            pad=ids[PAD],
            session=ids[SESSION],
            unit=ids[UNIT],
            audio=ids[AUDIO],
            listen=ids[LISTEN],
            speak=ids[SPEAK],
            write=ids[WRITE],
            say=ids[SAY],
            eot=ids[EOT],
            end=ids[END],
        )

    def as_mapping(self) -> dict[str, int]:
        return {
            PAD: self.pad,
            SESSION: self.session,
            UNIT: self.unit,
            AUDIO: self.audio,
            LISTEN: self.listen,
            SPEAK: self.speak,
            WRITE: self.write,
            SAY: self.say,
            EOT: self.eot,
            END: self.end,
        }

    def all(self) -> frozenset[int]:
        return frozenset(self.as_mapping().values())

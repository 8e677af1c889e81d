"""The Listen-Write-Speak token schema: the contract every stage shares."""

from lws_core.schema.codec import (
    IGNORE_INDEX,
    Encoded,
    ParsedUnit,
    Phase,
    UnitParser,
    encode,
    heard_words,
    parse,
    parse_session,
)
from lws_core.schema.timeline import Session, State, Unit, Word, load_session, save_session, session_from_dict
from lws_core.schema.tokenizer import SchemaTokenizer, check_digits, extend_tokenizer, train_bpe_tokenizer
from lws_core.schema.tokens import CHANNEL_NAMES, SCHEMA_VERSION, SPECIAL_TOKENS, Channel, SpecialIds
from lws_core.schema.validate import Violation, validate

__all__ = [
    "CHANNEL_NAMES",
    "IGNORE_INDEX",
    "SCHEMA_VERSION",
    "SPECIAL_TOKENS",
    "Channel",
    "Encoded",
    "ParsedUnit",
    "Phase",
    "SchemaTokenizer",
    "Session",
    "SpecialIds",
    "State",
    "Unit",
    "UnitParser",
    "Violation",
    "Word",
    "encode",
    "heard_words",
    "check_digits",
    "extend_tokenizer",
    "load_session",
    "parse",
    "parse_session",
    "save_session",
    "session_from_dict",
    "train_bpe_tokenizer",
    "validate",
]

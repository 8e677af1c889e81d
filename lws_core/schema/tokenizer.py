"""Tokenizers that know the schema: train a byte-level BPE offline, or extend a local HF tokenizer.

The schema version and the special-token ids are saved beside the tokenizer in
``lws_schema.json``; loading checks them so a model never silently runs with a
tokenizer from another schema (invariant 7).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from lws_core.errors import InputError, SchemaError, SchemaMismatchError
from lws_core.schema.tokens import SCHEMA_VERSION, SPECIAL_TOKENS, SpecialIds

SCHEMA_FILE = "lws_schema.json"

# a segment that opens with a number (after any spaces); see SchemaTokenizer.encode_segment
_LEADS_WITH_NUMBER = re.compile(r" *\d")
_SPACED_NUMBER = re.compile(r" +\d")


class SchemaTokenizer:
    """A Hugging Face fast tokenizer plus the schema's special ids.

    Text segments are encoded without special tokens, and text containing a
    schema token string is refused, so a user's words can never forge a unit
    boundary.

    ``lead_digit_segments`` (set by :func:`train_bpe_tokenizer`, saved in
    ``lws_schema.json``) makes a write or say segment that opens with a number
    spell its first digit as every other number's first digit ("Ġ2"), not as a
    bare digit; see :meth:`encode_segment`.
    """

    def __init__(self, hf_tokenizer, special: SpecialIds, lead_digit_segments: bool = False) -> None:  # noqa: ANN001 - any HF tokenizer
        self.hf = hf_tokenizer
        self.special = special
        self.special_set = special.all()
        self.lead_digit_segments = lead_digit_segments

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode_text(self, text: str, where: str = "text") -> list[int]:
        for s in SPECIAL_TOKENS:
            if s in text:
                raise SchemaError(f"{where}: text contains the schema token {s}")
        if not text:
            return []
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode_text(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return self.hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_texts(self, ids: Iterable[int]) -> list[str]:
        """Each id decoded on its own (what it adds to a text), in one batched call."""
        return list(self.hf.batch_decode([[int(i)] for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def encode_segment(self, text: str, where: str = "text") -> list[int]:
        r"""Encode one unit's write or say text.

        Why: segments are encoded apart, so a written answer that opens a unit
        with "92 vs 13" began with a bare "9" while the same number inside a line
        begins with "Ġ9". Most written answers open with a number, and the tiny
        backbone's remaining copy errors were there ("92 vs 13" written as "93
        vs 92"). With ``lead_digit_segments`` a segment matching `` *\d`` is
        encoded with one more space in front, and :meth:`decode_segment` drops
        exactly that space, so every string round-trips.
        """
        if self.lead_digit_segments and _LEADS_WITH_NUMBER.match(text):
            return self.encode_text(" " + text, where=where)
        return self.encode_text(text, where=where)

    def decode_segment(self, ids: list[int]) -> str:
        """Inverse of :meth:`encode_segment`."""
        text = self.decode_text(ids)
        if self.lead_digit_segments and _SPACED_NUMBER.match(text):
            return text[1:]
        return text

    def count(self, text: str) -> int:
        return len(self.encode_text(text))

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        return list(self.hf.convert_ids_to_tokens([int(i) for i in ids]))

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(directory))
        meta = {
            "schema_version": SCHEMA_VERSION,
            "special_tokens": self.special.as_mapping(),
            "lead_digit_segments": self.lead_digit_segments,
        }
        (directory / SCHEMA_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | Path, lean: bool = False) -> SchemaTokenizer:
        """Load a tokenizer saved by :meth:`save`; fail clearly on another schema or changed ids.

        The metadata is checked before transformers is imported, so a mismatch is
        reported at once instead of after seconds of import time. ``lean=True`` reads
        a plain `tokenizers` one (the tiny/small presets') without importing
        transformers at all (:class:`PlainTokenizer`); others load as usual.
        """
        directory = Path(directory)
        meta_path = directory / SCHEMA_FILE
        if not meta_path.is_file():
            raise SchemaMismatchError(
                f"{directory}: no {SCHEMA_FILE}; this is not an LWS tokenizer (extend it with `lws schema tokenizer --extend`)"
            )
        try:
            meta = json.loads(meta_path.read_text())
            version = meta["schema_version"]
            saved = {str(k): int(v) for k, v in meta["special_tokens"].items()}
            lead_digit_segments = bool(meta.get("lead_digit_segments", False))  # absent in tokenizers saved before it
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise SchemaMismatchError(f"{meta_path}: unreadable schema metadata ({e})") from None
        if version != SCHEMA_VERSION:
            raise SchemaMismatchError(
                f"{directory}: tokenizer was made for schema {version!r}, this code speaks {SCHEMA_VERSION!r}"
            )
        missing = [s for s in SPECIAL_TOKENS if s not in saved]
        if missing:
            raise SchemaMismatchError(f"{directory}: schema tokens missing from metadata: {', '.join(missing)}")
        hf = _load_hf(Path(directory), lean)
        actual = {s: hf.convert_tokens_to_ids(s) for s in SPECIAL_TOKENS}
        changed = [f"{s} saved {saved[s]} now {actual[s]}" for s in SPECIAL_TOKENS if actual[s] != saved[s]]
        if changed:
            raise SchemaMismatchError(f"{directory}: schema token ids changed: {'; '.join(changed)}")
        return cls(hf, SpecialIds.from_mapping(actual), lead_digit_segments=lead_digit_segments)


# tokenizer_config classes that are a plain `tokenizers` backend (the tiny/small presets' BPE)
_PLAIN = ("PreTrainedTokenizerFast", "TokenizersBackend")


class PlainTokenizer:
    """The part of ``PreTrainedTokenizerFast`` that :class:`SchemaTokenizer` uses, over a bare `tokenizers` one.

    Why: importing transformers' tokenizer module costs ~0.6 s of package set-up,
    a fifth of the streaming engine's start-up goal, for a tokenizer whose whole
    behaviour here (no special tokens added, no clean-up) is the Rust tokenizer's
    own. ``tests/schema/test_plain_tokenizer.py`` checks it against the HF class.
    """

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self.directory = directory
        self._tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.unk_token_id = None

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False) -> str:  # noqa: ARG002 - never cleaned: BPE
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, batch: list[list[int]], skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False) -> list[str]:  # noqa: ARG002
        return self._tok.decode_batch([[int(i) for i in ids] for ids in batch], skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str | None]:
        return [self._tok.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | None | list[int | None]:
        if isinstance(tokens, str):
            return self._tok.token_to_id(tokens)
        return [self._tok.token_to_id(t) for t in tokens]

    def save_pretrained(self, directory: str) -> None:
        """Copy the files it was loaded from (nothing about it can have changed)."""
        import shutil

        Path(directory).mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (self.directory / name).is_file() and (self.directory / name).resolve() != (Path(directory) / name).resolve():
                shutil.copyfile(self.directory / name, Path(directory) / name)


def _load_hf(directory: Path, lean: bool = False):  # noqa: ANN202 - a transformers tokenizer
    """The saved HF tokenizer. A plain `tokenizers` one loads through PreTrainedTokenizerFast, because
    AutoTokenizer imports transformers' model configs and with them torch (about 3 s of `lws schema`'s 4),
    or, ``lean``, through :class:`PlainTokenizer`; any other class (a real backbone's) goes through AutoTokenizer."""
    try:
        cls = json.loads((directory / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        cls = None
    if cls in _PLAIN and lean:
        return PlainTokenizer(directory)
    if cls in _PLAIN:
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def _ids_of(hf) -> SpecialIds:  # noqa: ANN001
    return SpecialIds.from_mapping({s: hf.convert_tokens_to_ids(s) for s in SPECIAL_TOKENS})


def train_bpe_tokenizer(corpus: Iterable[str], vocab_size: int = 1024) -> SchemaTokenizer:
    """Train a byte-level BPE tokenizer from text, offline, with the schema tokens at ids 0..9.

    Digits are split one per token before BPE (as Qwen's and Llama 2's tokenizers
    do): with merges across digits, " 38" became " 3","8" while " 15" was one
    token, so the model had to learn every number's spelling separately and could
    not copy or add digit by digit.

    A number's first digit keeps the space before it (" 29" -> "Ġ2", "9"; the
    later digits stand alone), so first and later digits are different tokens.
    Why: with " 29" as "Ġ","2","9" the tiny backbone, asked to copy a heard 29,
    wrote the most recent digit it had heard, "9", as the first one; a copy needs
    to know where a number starts. Teacher-forced (``benchmarks/copy_probe.py``,
    600 steps, one run each) the first digit of a heard number went from 0.78 to
    0.93 and whole copied numbers from 0.68 to 0.81. Two-digit tokens ("29" as
    one token) did not help (0.69).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    # a digit with the space before it, or a lone digit: " 29" -> "Ġ2", "9" (see the docstring)
    digits = pre_tokenizers.Split(Regex(r" ?\d"), behavior="isolated")
    bpe.pre_tokenizer = pre_tokenizers.Sequence([digits, pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([*corpus, " 0 1 2 3 4 5 6 7 8 9"], trainer=trainer)  # every " d" merge exists
    hf = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token=SPECIAL_TOKENS[0],
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        clean_up_tokenization_spaces=False,
    )
    return SchemaTokenizer(hf, _ids_of(hf), lead_digit_segments=True)


def extend_tokenizer(path: str | Path) -> SchemaTokenizer:
    """Load an existing HF tokenizer from a local directory and add the schema tokens.

    The model using it must resize its embeddings to ``vocab_size`` afterwards.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"tokenizer directory not found: {path}")
    try:
        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot load a tokenizer ({str(e).splitlines()[0]})") from None
    new = [s for s in SPECIAL_TOKENS if s not in hf.get_vocab()]
    if new:
        hf.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    if hf.pad_token is None:
        hf.pad_token = SPECIAL_TOKENS[0]
    return SchemaTokenizer(hf, _ids_of(hf), lead_digit_segments=_saved_lead_digit_segments(path))


def _saved_lead_digit_segments(path: Path) -> bool:
    """The segment rule a backbone pretrained here was trained with (its ``lws_schema.json``); False for any other.

    Why: the LWS stage loads the stand-in backbone through :func:`extend_tokenizer`, and must encode its
    segments as the backbone learnt them.
    """
    try:
        return bool(json.loads((path / SCHEMA_FILE).read_text()).get("lead_digit_segments", False))
    except (OSError, ValueError, AttributeError):
        return False


DIGIT_PROBES = (" 0 1 2 3 4 5 6 7 8 9", " 38 vs 98: 98", " 15 + 27 = 42", "x * 1000 = -3.5", "| 4 | 12 |")


def check_digits(tok: SchemaTokenizer, where: str = "tokenizer") -> None:
    """Refuse a tokenizer that cannot write numbers back exactly (every task answer is a number).

    Decoding must give back the very text encoded; otherwise graded answers and
    notes silently change. Raises InputError naming the first failing probe.
    """
    for probe in DIGIT_PROBES:
        back = tok.decode_text(tok.encode_text(probe))
        if back.lstrip() != probe.lstrip():  # a prefix space some tokenizers add is not a digit problem
            raise InputError(f"{where}: digits do not round-trip ({probe!r} decodes as {back!r}); use a byte-level tokenizer")

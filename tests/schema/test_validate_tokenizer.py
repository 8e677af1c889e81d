"""validate() reports every violation with its unit; tokenizers record and check the schema."""

from __future__ import annotations

import json

import pytest

from lws_core.errors import SchemaMismatchError
from lws_core.schema import SchemaTokenizer, Session, Unit, Word, extend_tokenizer, validate


def _words():
    return [Word(text="what", start=0.1, end=0.3), Word(text="is", start=0.3, end=0.4),
            Word(text="seventeen", start=0.5, end=1.4), Word(text="plus", start=1.5, end=1.8),
            Word(text="25", start=1.9, end=2.6)]


def test_valid_session_has_no_violations(tok):
    s = Session(user_words=_words(), units=[
        Unit(), Unit(write="- seventeen", depends_on_word=2), Unit(write=" + 25", depends_on_word=4),
        Unit(state="speak", write="= 42", say="It is 42", eot=True)])
    assert validate(s, 24, 12, tok.count) == []


def test_every_violation_reported_with_unit(tok):
    s = Session(schema_version="lws-v0", user_words=_words(), units=[
        Unit(write="- seventeen", depends_on_word=2),  # word 2 ends at 1.4 s, unit 0 ends at 1.0 s
        Unit(say="hello there"),  # listen unit with speech
        Unit(state="listen", eot=True),
        Unit(state="speak", say="word " * 30),  # over the say budget
    ])
    v = validate(s, 24, 12, tok.count)
    reasons = [(x.unit, x.reason) for x in v]
    assert any(u is None and "schema version" in r for u, r in reasons)
    assert any(u == 0 and "causality" in r and "seventeen" in r for u, r in reasons)
    assert any(u == 1 and "invariant 4" in r for u, r in reasons)
    assert any(u == 2 and "eot" in r for u, r in reasons)
    assert any(u == 3 and "budget" in r for u, r in reasons)


def test_leak_of_future_word_is_caught_without_dependency_label():
    s = Session(user_words=_words(), units=[Unit(write="adding 25"), Unit(), Unit(), Unit()])
    v = validate(s)
    assert [x.unit for x in v] == [0] and "25" in v[0].reason


def test_tokenizer_save_load_and_mismatch(tok, tmp_path):
    tok.save(tmp_path / "t")
    again = SchemaTokenizer.load(tmp_path / "t")
    assert again.special == tok.special
    meta = tmp_path / "t" / "lws_schema.json"
    raw = json.loads(meta.read_text())
    raw["schema_version"] = "lws-v0"
    meta.write_text(json.dumps(raw))
    with pytest.raises(SchemaMismatchError, match="lws-v0"):
        SchemaTokenizer.load(tmp_path / "t")
    raw["schema_version"] = "lws-v1"
    raw["special_tokens"]["<|unit|>"] = 999
    meta.write_text(json.dumps(raw))
    with pytest.raises(SchemaMismatchError, match="ids changed"):
        SchemaTokenizer.load(tmp_path / "t")


def test_extend_existing_tokenizer(tok, tmp_path):
    # An existing HF tokenizer without schema tokens (a plain BPE saved by HF), extended offline.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["plain text only"] * 5, trainers.BpeTrainer(vocab_size=280, special_tokens=["<eos>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>").save_pretrained(tmp_path / "base")
    base_size = len(PreTrainedTokenizerFast.from_pretrained(tmp_path / "base"))
    ext = extend_tokenizer(tmp_path / "base")
    assert len(ext.special.all()) == 10 and min(ext.special.all()) >= base_size  # appended, nothing reused
    assert ext.vocab_size == base_size + 10
    assert ext.decode_text(ext.encode_text("plain text")) == "plain text"
    ext.save(tmp_path / "ext")
    assert SchemaTokenizer.load(tmp_path / "ext").special == ext.special
    with pytest.raises(SchemaMismatchError, match="not an LWS tokenizer"):
        SchemaTokenizer.load(tmp_path / "base")

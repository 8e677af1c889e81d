"""PlainTokenizer (the engine's transformers-free tokenizer) behaves as transformers' class on the same files."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lws_core.schema import SchemaTokenizer
from lws_core.schema.tokenizer import PlainTokenizer
from lws_core.schema.tokens import SPECIAL_TOKENS

TEXT = st.text(alphabet=st.sampled_from(list("abcxyz 0123456789.,:*|-_\n\t()=+éß→😀")), max_size=60)


def _both(tok, tmp_path_factory):  # noqa: ANN001, ANN202
    d = tmp_path_factory.mktemp("tok")
    tok.save(d)
    return SchemaTokenizer.load(d), SchemaTokenizer.load(d, lean=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT, extra=st.lists(st.integers(min_value=0, max_value=399), max_size=12))
def test_plain_tokenizer_matches_transformers(tok, tmp_path_factory, text, extra):
    hf, plain = _both(tok, tmp_path_factory)
    assert isinstance(plain.hf, PlainTokenizer) and not isinstance(hf.hf, PlainTokenizer)
    assert plain.vocab_size == hf.vocab_size
    ids = hf.encode_text(text)
    assert plain.encode_text(text) == ids
    assert plain.encode_segment(text) == hf.encode_segment(text)
    mixed = [*ids, *sorted(plain.special_set)[:3], *extra]  # schema tokens and arbitrary ids decode alike
    assert plain.decode_text(mixed) == hf.decode_text(mixed)
    assert plain.token_strings(mixed) == hf.token_strings(mixed)
    assert plain.hf.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == hf.hf.convert_tokens_to_ids(list(SPECIAL_TOKENS))


def test_plain_tokenizer_saves_a_loadable_copy(tok, tmp_path_factory):
    _, plain = _both(tok, tmp_path_factory)
    out = tmp_path_factory.mktemp("copy")
    plain.save(out)
    again = SchemaTokenizer.load(out)
    assert again.encode_text("what is 12 plus 30") == plain.encode_text("what is 12 plus 30")
    assert again.special == plain.special

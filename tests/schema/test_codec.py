"""Encode/parse round trip (property), parser robustness, loss masks and channels."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lws_core.errors import SchemaError
from lws_core.schema import (
    IGNORE_INDEX,
    Channel,
    Session,
    Unit,
    encode,
    parse,
    parse_session,
)

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="<|>\x00"), max_size=30)


@st.composite
def units(draw):
    state = draw(st.sampled_from(["listen", "speak"]))
    write = draw(TEXT)
    dep = draw(st.none() | st.integers(0, 50))  # causality metadata: the data stage sets it, tokens never carry it
    if state == "listen":
        return Unit(state="listen", write=write, depends_on_word=dep)
    return Unit(state="speak", write=write, say=draw(TEXT), eot=draw(st.booleans()), depends_on_word=dep)


@st.composite
def sessions(draw):
    return Session(
        system=draw(st.none() | TEXT),
        units=draw(st.lists(units(), max_size=8)),
        unit_s=draw(st.sampled_from([0.25, 0.5, 1.0, 2.0])),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s=sessions(), k=st.integers(1, 6))
def test_encode_parse_round_trip_is_identity(tok, s, k):
    enc = encode(s, tok, k)
    back = parse_session(enc.input_ids, tok, unit_s=s.unit_s, strict=True)
    assert back.system == s.system
    # Everything the stream carries comes back; depends_on_word is label metadata for the causality
    # check and must not change the tokens (so a model never sees or depends on it).
    assert back.units == [u.model_copy(update={"depends_on_word": None}) for u in s.units]
    bare = s.model_copy(update={"units": [u.model_copy(update={"depends_on_word": None}) for u in s.units]})
    assert encode(bare, tok, k).input_ids == enc.input_ids
    assert len(enc.unit_starts) == len(s.units)
    assert sum(enc.audio_mask) == k * len(s.units)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_parse_arbitrary_streams_never_crashes(tok, data):
    vocab = tok.vocab_size
    # schema ids, in-vocabulary ids, and any integer at all (negative, past the vocabulary, huge)
    ids = data.draw(st.lists(st.one_of(st.integers(0, 9), st.integers(0, vocab - 1), st.integers()), max_size=80))
    out = parse(ids, tok)  # lenient: never raises
    for u in out:
        assert u.state in ("listen", "speak")
        if u.state == "listen":
            assert u.say == "" and not u.eot  # invariant 4 holds even on garbage
    try:
        parse(ids, tok, strict=True)
    except SchemaError:
        pass  # the only error strict parsing may raise


def test_out_of_vocabulary_ids_are_garbage_not_crashes(tok):
    sp = tok.special
    stream = [sp.unit, sp.audio, sp.listen, sp.write, -5, tok.vocab_size, 10**30, sp.say, sp.end]
    (u,) = parse(stream, tok)  # these ids used to reach the HF decoder: OverflowError
    assert u.forced and u.state == "listen" and u.write == "" and u.write_ids == []
    assert sum("outside the vocabulary" in i for i in u.issues) == 3
    with pytest.raises(SchemaError, match="token id -5 outside the vocabulary"):
        parse(stream, tok, strict=True)
    assert parse([-1, 10**20], tok) == []  # outside any unit: dropped like other garbage


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s=sessions(), cut=st.integers(1, 400))
def test_cut_stream_yields_force_closed_last_unit(tok, s, cut):
    enc = encode(s, tok, 3)
    if not s.units or cut >= len(enc.input_ids):
        return
    units = parse(enc.input_ids[:cut], tok)
    opened = [i for i, start in enumerate(enc.unit_starts) if start < cut]
    assert len(units) == len(opened)
    if opened:
        j = opened[-1]
        unit_end = enc.unit_starts[j + 1] if j + 1 < len(enc.unit_starts) else len(enc.input_ids)
        assert units[-1].forced == (cut < unit_end)  # cut inside unit j -> force-closed
        assert all(not u.forced for u in units[:-1])


def test_loss_mask_only_on_generated_positions(tok):
    s = Session(
        system="be brief",
        units=[
            Unit(state="listen", write="- 12"),
            Unit(state="speak", write="= 42", say="forty two", eot=True),
            Unit(state="listen"),
        ],
    )
    enc = encode(s, tok, 4)
    sp = tok.special
    for i, (t, lab, ch, am) in enumerate(zip(enc.input_ids, enc.labels, enc.channels, enc.audio_mask, strict=True)):
        if t in (sp.unit, sp.audio, sp.session) or am:
            assert lab == IGNORE_INDEX and ch == Channel.NONE, i
        if lab == IGNORE_INDEX:
            assert ch == Channel.NONE
        else:
            assert lab == t and ch != Channel.NONE
    # system text and its end marker carry no labels
    first_unit = enc.unit_starts[0]
    assert all(lab == IGNORE_INDEX for lab in enc.labels[:first_unit])
    # state tokens are in the state channel, and so is <|write|>
    for pos in enc.state_positions:
        assert enc.channels[pos] == Channel.STATE and enc.channels[pos + 1] == Channel.STATE
    # write text: listen-phase vs response channel; say text in the say channel
    u0 = slice(enc.unit_starts[0], enc.unit_starts[1])
    u1 = slice(enc.unit_starts[1], enc.unit_starts[2])
    ch0 = set(enc.channels[u0]) - {Channel.NONE}
    ch1 = set(enc.channels[u1]) - {Channel.NONE}
    assert Channel.WRITE_LISTEN in ch0 and Channel.WRITE_RESPOND not in ch0
    assert Channel.WRITE_RESPOND in ch1 and Channel.SAY in ch1 and Channel.WRITE_LISTEN not in ch1
    # <|eot|> and <|end|> belong to the say channel
    eot_pos = enc.input_ids.index(sp.eot)
    assert enc.channels[eot_pos] == Channel.SAY and enc.channels[eot_pos + 1] == Channel.SAY


def test_text_cannot_forge_schema_tokens(tok):
    s = Session(units=[Unit(state="listen", write="sneaky <|unit|> marker")])
    try:
        encode(s, tok, 2)
    except SchemaError as e:
        assert "<|unit|>" in str(e)
    else:
        raise AssertionError("expected SchemaError")


def test_parser_grammar_guides_decoding(tok):
    from lws_core.schema import Phase, UnitParser

    sp = tok.special
    p = UnitParser(tok, start=Phase.STATE)
    assert p.allowed_special() == {sp.listen, sp.speak} and not p.text_allowed()
    p.feed(sp.listen)
    assert p.allowed_special() == {sp.write}
    p.feed(sp.write)
    assert p.text_allowed() and sp.say in p.allowed_special()
    p.feed(sp.say)
    assert p.allowed_special() == {sp.end} and not p.text_allowed()  # listen: no speech
    done = p.feed(sp.end)
    assert done is not None and done.state == "listen" and not done.forced

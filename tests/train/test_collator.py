"""The collator is a pure function over rows: masks, channels, padding, audio order, truncation at unit boundaries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lws_core.errors import ConfigError, InputError, SchemaMismatchError
from lws_core.schema import Channel
from lws_core.train.collator import LWSCollator, encode_row
from tests.model import synthetic

K = 10


@pytest.fixture(scope="module")
def tok():
    return synthetic.tokenizer()


@pytest.fixture(scope="module")
def rows():
    return synthetic.rows(3)


def test_padding_masks_and_channels(rows, tok):
    b = LWSCollator(tok, K, synthetic.UNIT_SAMPLES)(rows)
    lengths = [len(encode_row(r, tok, K, synthetic.UNIT_SAMPLES)) for r in rows]
    assert b["input_ids"].shape == (3, max(lengths))
    assert b["attention_mask"].sum(1).tolist() == lengths
    pad = b["attention_mask"] == 0
    assert pad.any()  # rows differ in length
    assert (b["input_ids"][pad] == tok.special.pad).all()
    assert (b["labels"][pad] == -100).all() and (b["channels"][pad] == 0).all() and not b["audio_mask"][pad].any()
    labelled = b["labels"] != -100
    assert (b["channels"][labelled] != int(Channel.NONE)).all()
    assert (b["channels"][~labelled] == int(Channel.NONE)).all()
    assert not b["audio_mask"][labelled].any()  # never a loss on audio placeholders
    assert ((b["input_ids"] == tok.special.audio) == b["audio_mask"]).all()
    # unit markers are given, not generated
    assert (b["labels"][b["input_ids"] == tok.special.unit] == -100).all()
    # state tokens are in the state channel; listen-unit writes are write_listen, speak-unit writes write_respond
    states = (b["input_ids"] == tok.special.listen) | (b["input_ids"] == tok.special.speak)
    assert (b["channels"][states] == int(Channel.STATE)).all()
    present = set(b["channels"][labelled].unique().tolist())
    assert present == {int(Channel.STATE), int(Channel.WRITE_LISTEN), int(Channel.WRITE_RESPOND), int(Channel.SAY)}


def test_unit_audio_in_placeholder_order(rows, tok):
    b = LWSCollator(tok, K, synthetic.UNIT_SAMPLES)(rows)
    n_units = sum(len(json.loads(r["session"])["units"]) for r in rows)
    assert b["unit_audio"].shape == (n_units, synthetic.UNIT_SAMPLES)
    assert int(b["audio_mask"].sum()) == K * n_units
    # row-major order: row 0's units first, each unit's samples exactly the row's audio slice
    flat0 = np.frombuffer(rows[0]["audio"], dtype="<i2").astype(np.float32) / 32768.0
    u0 = len(json.loads(rows[0]["session"])["units"])
    assert np.allclose(b["unit_audio"][:u0].reshape(-1).numpy(), flat0)
    flat1 = np.frombuffer(rows[1]["audio"], dtype="<i2").astype(np.float32) / 32768.0
    assert np.allclose(b["unit_audio"][u0 : u0 + 1].reshape(-1).numpy(), flat1[: synthetic.UNIT_SAMPLES])


def test_truncation_cuts_at_unit_boundary_and_drops_audio(rows, tok):
    full = encode_row(rows[2], tok, K, synthetic.UNIT_SAMPLES)
    assert not full.truncated
    for limit in (full.unit_starts[2], full.unit_starts[2] + 3, len(full) - 1):
        cut = encode_row(rows[2], tok, K, synthetic.UNIT_SAMPLES, max_length=limit)
        assert cut.truncated and len(cut) <= limit
        assert cut.input_ids == full.input_ids[: len(cut)] and cut.labels == full.labels[: len(cut)]
        assert cut.input_ids[-1] == tok.special.end  # a whole unit, never half of one
        n = cut.input_ids.count(tok.special.unit)
        assert len(cut) == (full.unit_starts[n] if n < len(full.unit_starts) else len(full))
        assert cut.unit_audio.shape[0] == n == len(cut.state_positions)
        assert np.array_equal(cut.unit_audio, full.unit_audio[:n])
        assert sum(cut.audio_mask) == K * n
    with pytest.raises(ConfigError, match="max_length"):
        encode_row(rows[2], tok, K, synthetic.UNIT_SAMPLES, max_length=K)  # not even one unit fits


def test_bad_rows_are_refused_with_the_row_id(rows, tok):
    with pytest.raises(SchemaMismatchError, match="lws-v0"):
        encode_row(dict(rows[0], schema_version="lws-v0"), tok, K, synthetic.UNIT_SAMPLES)
    with pytest.raises(InputError, match="s0.*samples"):  # audio for another unit length
        encode_row(dict(rows[0], audio=rows[0]["audio"][: len(rows[0]["audio"]) // 2]), tok, K, synthetic.UNIT_SAMPLES)
    with pytest.raises(InputError, match="s0.*session"):
        encode_row(dict(rows[0], session="{not json"), tok, K, synthetic.UNIT_SAMPLES)


def test_real_synthesized_rows(tiny_dataset):
    """The synthesizer's rows go through the collator unchanged (its tokenizer, its audio lengths)."""
    from lws_core.data import load_dataset_dir
    from lws_core.schema import SchemaTokenizer

    dd = load_dataset_dir(tiny_dataset)
    real_tok = SchemaTokenizer.load(tiny_dataset / "tokenizer")
    rs = [dd["train"][i] for i in range(4)]
    b = LWSCollator(real_tok, K, synthetic.UNIT_SAMPLES)(rs)
    assert b["unit_audio"].shape[0] * K == int(b["audio_mask"].sum())
    assert b["unit_audio"].abs().max() > 0.01  # real speech, not silence


def test_token_length_is_the_encoded_length_without_the_audio(rows, tok):
    """What the length-grouped sampler batches by (train.group_by_length): the collator's own length, cut included."""
    full = encode_row(rows[2], tok, K, synthetic.UNIT_SAMPLES)
    for limit in (None, 2048, full.unit_starts[2] + 3, len(full) - 1):
        col = LWSCollator(tok, K, synthetic.UNIT_SAMPLES, limit)
        for r in rows:
            assert col.token_length({"session": r["session"]}) == len(col.encode(r))  # no audio needed


def test_plan_chains_covers_every_row_once_in_chains_of_one_to_n():
    """train.chain_sessions: each row in exactly one chain, sizes 1..N (single sessions stay common), seeded."""
    from lws_core.train.collator import plan_chains

    chains = plan_chains(500, 3, seed=0)
    assert sorted(i for c in chains for i in c) == list(range(500))
    sizes = [len(c) for c in chains]
    assert set(sizes) == {1, 2, 3}
    assert plan_chains(500, 3, seed=0) == chains and plan_chains(500, 3, seed=1) != chains
    assert all(len(c) == 1 for c in plan_chains(20, 1, seed=0))


def test_a_chain_is_its_sessions_one_after_another(rows, tok):
    """A chained row encodes as its members' encodings end to end (unit starts, state positions and audio
    shifted along), and its token length is that length, cut at a unit boundary like one session."""
    from lws_core.train.collator import ChainCollator

    parts = [encode_row(rows[i], tok, K, synthetic.UNIT_SAMPLES) for i in (2, 0)]
    col = ChainCollator(rows, tok, K, synthetic.UNIT_SAMPLES, None)
    enc = col.encode({"members": [2, 0]})
    assert enc.input_ids == parts[0].input_ids + parts[1].input_ids
    assert enc.labels == parts[0].labels + parts[1].labels
    off = len(parts[0])
    assert enc.unit_starts == parts[0].unit_starts + [s + off for s in parts[1].unit_starts]
    assert enc.state_positions == parts[0].state_positions + [s + off for s in parts[1].state_positions]
    assert np.array_equal(enc.unit_audio, np.concatenate([parts[0].unit_audio, parts[1].unit_audio]))
    assert col.token_length({"members": [2, 0]}) == len(enc)
    limit = off + parts[1].unit_starts[1] + 2  # inside the second session's second unit
    cut = ChainCollator(rows, tok, K, synthetic.UNIT_SAMPLES, limit)
    short = cut.encode({"members": [2, 0]})
    assert len(short) == off + parts[1].unit_starts[1] and short.truncated
    assert short.unit_audio.shape[0] == len(parts[0].unit_starts) + 1
    assert cut.token_length({"members": [2, 0]}) == len(short)
    batch = col([{"members": [2, 0]}, {"members": [1]}])
    assert batch["unit_audio"].shape[0] * K == int(batch["audio_mask"].sum())

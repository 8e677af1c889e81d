"""The collator is a pure function over rows: masks, channels, audio order, truncation at unit boundaries."""

from __future__ import annotations

import pytest

from lws_core.data import load_dataset_dir
from lws_core.errors import SchemaMismatchError
from lws_core.schema import Channel, SchemaTokenizer
from lws_core.train.collator import LWSCollator, encode_row


@pytest.fixture(scope="module")
def rows(tiny_dataset):
    dd = load_dataset_dir(tiny_dataset)
    return [dd["train"][i] for i in range(6)]


@pytest.fixture(scope="module")
def tok(tiny_dataset):
    return SchemaTokenizer.load(tiny_dataset / "tokenizer")


def test_batch_shapes_masks_and_audio(rows, tok):
    col = LWSCollator(tok, 10, 16000)
    b = col(rows)
    n_units = sum(len(__import__("json").loads(r["session"])["units"]) for r in rows)
    assert b["unit_audio"].shape == (n_units, 16000)
    assert int(b["audio_mask"].sum()) == 10 * n_units  # one block of K placeholders per unit
    pad = b["attention_mask"] == 0
    assert (b["labels"][pad] == -100).all() and (b["channels"][pad] == 0).all() and not b["audio_mask"][pad].any()
    labelled = b["labels"] != -100
    assert (b["channels"][labelled] != int(Channel.NONE)).all()
    assert not b["audio_mask"][labelled].any()
    assert set(b["channels"].unique().tolist()) >= {0, int(Channel.STATE), int(Channel.SAY)}


def test_truncation_cuts_at_unit_boundary(rows, tok):
    full = encode_row(rows[0], tok, 10, 16000)
    limit = len(full.input_ids) // 2
    cut = encode_row(rows[0], tok, 10, 16000, max_length=limit)
    assert len(cut.input_ids) <= limit
    assert cut.input_ids == full.input_ids[: len(cut.input_ids)]
    assert cut.input_ids[-1] == tok.special.end  # a whole unit, never half of one
    assert cut.unit_audio.shape[0] == cut.input_ids.count(tok.special.unit)
    assert sum(cut.audio_mask) == 10 * cut.unit_audio.shape[0]


def test_row_from_other_schema_is_refused(rows, tok):
    bad = dict(rows[0], schema_version="lws-v0")
    with pytest.raises(SchemaMismatchError, match="lws-v0"):
        encode_row(bad, tok, 10, 16000)

"""Fan-out synthesis: 8 shards merged give the unsharded dataset, row for row (audio included)."""

from __future__ import annotations

import json

import pytest

from lws_core.config import LWSConfig
from lws_core.data import load_dataset_dir, synthesize
from lws_core.data.shards import merge_shards, synthesize_sharded
from lws_core.data.synth import SPLITS, shard_chunks
from lws_core.errors import InputError

CFG = LWSConfig().with_overrides({"data.chunk_sessions": 3, "data.seed": 5})
N = 48  # 16 chunks: 8 shards of 2


def _rows(path):
    dd = load_dataset_dir(path)
    return {s: dd[s].to_list() for s in SPLITS}


def test_shard_chunks_cover_the_unsharded_chunks_once():
    whole = shard_chunks(100, 7, None)
    parts = [c for k in range(8) for c in shard_chunks(100, 7, (k, 8))]
    assert parts == whole
    with pytest.raises(InputError):
        shard_chunks(100, 7, (8, 8))


def test_eight_shards_merge_to_the_unsharded_dataset(tmp_path):
    ref = synthesize(CFG, tmp_path / "whole", sessions=N, workers=2, progress=False)
    merged = synthesize_sharded(CFG, tmp_path / "merged", 8, sessions=N, workers=2, progress=False)
    assert merged.rows == ref.rows and merged.rejects == ref.rejects and merged.per_scenario == ref.per_scenario
    assert _rows(tmp_path / "merged") == _rows(tmp_path / "whole")  # same rows, same order, same audio bytes
    card = json.loads((tmp_path / "merged" / "card.json").read_text())
    assert len(card["shards"]) == 8 and card["requested_sessions"] == N and card["sessions"] == [0, N]
    assert [s["shard"] for s in card["shards"]] == [[k, 8] for k in range(8)]
    assert not (tmp_path / ".merged.shards").exists()


def test_merge_drops_duplicate_sessions_and_refuses_half_shards(tmp_path):
    a = tmp_path / "a"
    synthesize(CFG, a, sessions=12, workers=1, progress=False, shard=(0, 2))
    synthesize(CFG, tmp_path / "b", sessions=12, workers=1, progress=False, shard=(1, 2))
    s = merge_shards(CFG, [a, tmp_path / "b", a], tmp_path / "m")  # shard 0 listed twice (a retried upload)
    whole = synthesize(CFG, tmp_path / "w", sessions=12, workers=1, progress=False)
    assert s.rows == whole.rows and s.extra["timings"]["duplicates_dropped"] == sum(
        json.loads((a / "card.json").read_text())["rows"].values()
    )
    (tmp_path / "half").mkdir()
    with pytest.raises(InputError, match="no card.json"):
        merge_shards(CFG, [a, tmp_path / "half"], tmp_path / "m2")
    assert (tmp_path / "m").is_dir() and not (tmp_path / "m2").exists()

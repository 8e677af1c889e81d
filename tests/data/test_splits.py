"""The test_seen split (held-out voices, training phrasings) and text-only synthesis, with real espeak-ng TTS."""

from __future__ import annotations

import collections
import json

import pytest

from lws_core.audio.tts import english_voices
from lws_core.config import LWSConfig
from lws_core.data import load_dataset_dir, row_audio, row_session, synthesize
from lws_core.data.synth import SPLITS, split_of
from lws_core.data.tasks import PHRASINGS
from lws_core.errors import ConfigError, InputError

CFG = LWSConfig().with_overrides({"data.chunk_sessions": 10, "data.test_seen_fraction": 0.3})
N = 40


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("splits") / "full"
    synthesize(CFG, out, sessions=N, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("splits") / "text"
    synthesize(CFG, out, sessions=N, workers=2, progress=False, text_only=True)
    return out


def test_split_of_adds_test_seen_without_moving_test_or_validation():
    """test_seen takes sessions only from train; its share follows the fraction; 0 means none."""
    before = [split_of(3, i, 0.1, 0.15) for i in range(4000)]
    after = [split_of(3, i, 0.1, 0.15, 0.2) for i in range(4000)]
    for b, a in zip(before, after, strict=True):
        assert a == b or (b == "train" and a == "test_seen")
    share = collections.Counter(after)
    assert share["test_seen"] / 4000 == pytest.approx(0.2, abs=0.03)
    assert share["test"] / 4000 == pytest.approx(0.15, abs=0.03) and share["validation"] / 4000 == pytest.approx(0.1, abs=0.03)
    assert "test_seen" not in {split_of(3, i, 0.1, 0.15, 0.0) for i in range(4000)}


@pytest.mark.parametrize(
    "override",
    [
        {"data.test_seen_fraction": -0.1},
        {"data.test_seen_fraction": 0.5},
        {"data.validation_fraction": 0.4, "data.test_fraction": 0.4, "data.test_seen_fraction": 0.3},
    ],
)
def test_test_seen_fraction_bounds(override):
    with pytest.raises(ConfigError, match="test_seen_fraction"):
        LWSConfig().with_overrides(override)


def test_default_config_has_test_seen():
    assert LWSConfig().data.test_seen_fraction == 0.1 and SPLITS == ("train", "validation", "test", "test_seen")


def test_test_seen_uses_held_out_voices_and_training_phrasings(full_dir):
    dd = load_dataset_dir(full_dir)
    assert set(dd) == set(SPLITS)
    held = set(english_voices(held_out=True))
    checked = 0
    for row in dd["test_seen"]:
        assert row["voice"].split("@")[0] in held, row["id"]
        meta = json.loads(row["session"])["meta"]
        assert meta["split"] == "test_seen"
        if row["scenario"] == "silence":
            continue
        assert meta["phrasing"] != len(PHRASINGS[row["task_family"]]) - 1, row["id"]  # never the test-only phrasing
        checked += 1
    assert checked >= 5
    # the same phrasings as train, the same voices as test
    train_ph = {(r["task_family"], json.loads(r["session"])["meta"]["phrasing"]) for r in dd["train"] if r["scenario"] != "silence"}
    seen_ph = {(r["task_family"], json.loads(r["session"])["meta"]["phrasing"]) for r in dd["test_seen"] if r["scenario"] != "silence"}
    assert seen_ph & train_ph
    assert not {r["voice"].split("@")[0] for r in dd["test_seen"]} & {r["voice"].split("@")[0] for r in dd["train"]}


def test_card_counts_test_seen(full_dir):
    card = json.loads((full_dir / "card.json").read_text())
    dd = load_dataset_dir(full_dir)
    assert card["rows"] == {s: len(dd[s]) for s in SPLITS} and card["rows"]["test_seen"] >= 5
    assert card["data_config"]["test_seen_fraction"] == 0.3 and card["text_only"] is False
    readme = (full_dir / "README.md").read_text()
    assert f"test_seen: {card['rows']['test_seen']}" in readme
    assert f"| test_seen | {card['rows']['test_seen']} | training phrasings, held-out voices" in readme


def test_empty_test_seen_saves_and_loads(tmp_path):
    """test_seen_fraction=0: the split exists, empty, and loads back (like any empty split)."""
    cfg = CFG.with_overrides({"data.test_seen_fraction": 0.0})
    s = synthesize(cfg, tmp_path / "ds", sessions=8, workers=1, progress=False)
    dd = load_dataset_dir(tmp_path / "ds")
    assert set(dd) == set(SPLITS) and len(dd["test_seen"]) == 0 and s.rows["test_seen"] == 0
    assert sum(len(d) for d in dd.values()) == sum(s.rows.values()) > 0


def test_text_only_keeps_sessions_drops_audio(full_dir, text_dir):
    """Same seed: identical sessions (user word timings included) and statistics, no audio bytes."""
    a, b = load_dataset_dir(full_dir), load_dataset_dir(text_dir)
    n = 0
    for split in SPLITS:
        assert a[split]["id"] == b[split]["id"]
        for x, y in zip(a[split], b[split], strict=True):
            assert y["audio"] == b"" and len(x["audio"]) > 0
            assert y["session"] == x["session"]
            assert {k: v for k, v in x.items() if k != "audio"} == {k: v for k, v in y.items() if k != "audio"}
            n += 1
    assert n >= 30
    ca, cb = (json.loads((d / "card.json").read_text()) for d in (full_dir, text_dir))
    assert cb["text_only"] is True and ca["text_only"] is False
    for k in ("rows", "audio_hours", "units", "per_family", "per_scenario", "voices"):
        assert ca[k] == cb[k], k
    assert cb["audio_hours"] > 0.05  # from the synthesized length, not from the (empty) stored audio
    assert "Text only" in (text_dir / "README.md").read_text()
    size = lambda d: sum(p.stat().st_size for p in d.rglob("*.arrow"))  # noqa: E731
    assert size(text_dir) * 10 < size(full_dir)


def test_text_only_rows_refuse_audio_readers(text_dir):
    """Reading audio from a text-only row fails loudly: row_audio and the training collator."""
    from lws_core.train.collator import row_unit_audio

    row = load_dataset_dir(text_dir)["train"][0]
    with pytest.raises(InputError, match="text-only"):
        row_audio(row)
    s = row_session(row)
    with pytest.raises(InputError):
        row_unit_audio(row, len(s.units), int(s.unit_s * 16000))

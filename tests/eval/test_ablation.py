"""Ablation dataset transforms (the training runs themselves are a benchmark: benchmarks/eval_ablations.py)."""

from __future__ import annotations

import json

import pytest

from lws_core.errors import InputError
from lws_core.eval.ablation import strip_writing, transform_dataset, write_comparison
from lws_core.schema import Session, Unit, Word


def _session():
    return Session(
        user_words=[Word(text="6x7", start=0.1, end=0.9)],
        units=[Unit(write="- 6 * 7\n", depends_on_word=0), Unit(state="speak", write="6 * 7 = 42\n**Answer:** 42\n", say="42", eot=True), Unit()],
    )


def test_strip_writing_variants():
    s = _session()
    nwl = strip_writing(s, "no_write_listen")
    assert [u.write for u in nwl.units] == ["", "6 * 7 = 42\n**Answer:** 42\n", ""] and nwl.units[0].depends_on_word is None
    so = strip_writing(s, "speech_only")
    assert all(u.write == "" for u in so.units) and so.units[1].say == "42" and so.units[1].eot
    assert [u.state for u in so.units] == [u.state for u in s.units]
    assert strip_writing(s, "full") == s and s.units[0].write == "- 6 * 7\n"  # input untouched
    with pytest.raises(InputError, match="unknown ablation"):
        strip_writing(s, "no_speech")


def test_transform_dataset_keeps_audio_and_states(tiny_dataset, tmp_path):
    from lws_core.data.dataset import load_dataset_dir, row_session

    src = load_dataset_dir(tiny_dataset)
    for variant in ("no_write_listen", "speech_only"):
        out = transform_dataset(tiny_dataset, tmp_path / variant, variant)
        dd = load_dataset_dir(out)  # schema check and card survive the copy
        assert (out / "card.json").is_file()
        for split in src:
            assert len(dd[split]) == len(src[split])
            for a, b in zip(src[split].select(range(min(5, len(src[split])))), dd[split].select(range(min(5, len(src[split])))), strict=True):
                sa, sb = row_session(a), row_session(b)
                assert a["audio"] == b["audio"] and [u.state for u in sa.units] == [u.state for u in sb.units]
                assert [u.say for u in sa.units] == [u.say for u in sb.units]
                if variant == "speech_only":
                    assert all(u.write == "" for u in sb.units)
                else:
                    assert all(u.write == "" for u in sb.units if u.state == "listen")
                    assert [u.write for u in sb.units if u.state == "speak"] == [u.write for u in sa.units if u.state == "speak"]
    assert any(u.write for r in src["train"] for u in row_session(r).units if u.state == "listen")  # there was something to remove


def test_comparison_table_and_plot(tmp_path):
    res = {
        "full": {"spoken_accuracy": 0.5, "task_accuracy": 0.4, "per_family_spoken": {"arithmetic": 0.6, "multistep": 0.4}},
        "speech_only": {"spoken_accuracy": 0.3, "task_accuracy": 0.0, "per_family_spoken": {"arithmetic": 0.5, "multistep": 0.1}},
    }
    md = write_comparison(res, tmp_path).read_text()
    assert "| spoken_accuracy | 0.500 | 0.300 |" in md and "| multistep | 0.400 | 0.100 |" in md
    assert (tmp_path / "ablation.png").stat().st_size > 1000 and json.loads((tmp_path / "ablation.json").read_text())["full"]["task_accuracy"] == 0.4

"""Filler words in training questions (``data.filler_rate``): what they may be, where they go, and that the
graded splits stay exactly as they were. Synthesis runs the real espeak-ng TTS (text-only rows, to be quick)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lws_core.config import LWSConfig
from lws_core.data import load_dataset_dir, synthesize
from lws_core.data.fillers import draw_fillers, filler_words
from lws_core.data.tasks import FAMILIES, insert_fillers, make_question, training_vocabulary
from lws_core.errors import ConfigError


def test_filler_words_are_frequent_words_no_training_question_says():
    words = filler_words(1000)
    assert 800 < len(words) < 1000
    vocab = training_vocabulary()
    assert {"plus", "times", "hours", "larger", "table", "function", "what"} <= vocab
    assert not set(words) & vocab
    assert not {"one", "two", "twenty", "hundred", "half", "tables", "functions"} & set(words)
    assert all(w.isalpha() and w.isascii() for w in words)


def test_insert_fillers_keeps_the_template_and_may_end_the_question():
    rng = np.random.default_rng(0)
    seen_end = False
    for _ in range(50):
        out = insert_fillers("What is {a} {op} {b}?", ["well", "really"], rng).split()
        assert out[0] == "What" and len(out) == 7
        assert [w for w in out if w.rstrip("?") not in ("well", "really")] == ["What", "is", "{a}", "{op}", "{b}?"] or (
            out[-1].endswith("?") and out[-1].rstrip("?") in ("well", "really")
        )
        assert out[-1].endswith("?") and sum(w.endswith("?") for w in out) == 1
        seen_end |= out[-1] != "{b}?"
    assert seen_end, "a filler can come after the last value"


def test_edge_fillers_frame_the_question():
    """``edges``: fillers only before the first word or after the last; the template's words stay together."""
    rng = np.random.default_rng(1)
    places = set()
    for _ in range(40):
        out = insert_fillers("Which is {adj}, {a} or {b}?", ["so", "anyway"], rng, place="edges")
        core = " ".join(w for w in out.split() if w not in ("so", "anyway", "so?", "anyway?"))
        assert core.rstrip("?") + "?" == "Which is {adj}, {a} or {b}?" and out.endswith("?")
        places.add((out.startswith(("so", "anyway")), not out.split()[-1].startswith("{b}")))
    assert {(True, False), (False, True)} <= places


@pytest.mark.parametrize("family", FAMILIES)
def test_a_question_with_fillers_asks_the_same_thing(family):
    """Same values, answer, phrasing and script; each note still waits for the word it depends on."""
    for seed in range(5):
        plain = make_question(family, np.random.default_rng(seed), "train")
        filled = make_question(family, np.random.default_rng(seed), "train", (["okay", "maybe"], np.random.default_rng(seed + 99), "anywhere"))
        assert filled.answer == plain.answer and filled.phrasing == plain.phrasing
        assert filled.script.written == plain.script.written and filled.script.spoken == plain.script.spoken
        assert len(filled.words) == len(plain.words) + 2
        assert sorted(filled.words) == sorted([*plain.words, "okay", "maybe"]) or filled.words[-1].rstrip("?.") in ("okay", "maybe")
        for a, b in zip(plain.script.notes, filled.script.notes, strict=True):
            assert a.text == b.text
            assert plain.words[a.depends_on_word].rstrip("?.,") == filled.words[b.depends_on_word].rstrip("?.,")


def test_draw_fillers_is_reproducible_and_follows_the_rate():
    assert draw_fillers(0, 5, 0.0, 2, 1000) is None
    got = [draw_fillers(3, i, 0.5, 2, 1000) for i in range(400)]
    assert 0.4 < sum(g is not None for g in got) / 400 < 0.6
    assert all(1 <= len(g[0]) <= 2 for g in got if g)
    again = draw_fillers(3, 7, 0.5, 2, 1000)
    assert (again and again[0]) == (got[7] and got[7][0])


def test_filler_rate_bounds():
    with pytest.raises(ConfigError, match="filler_rate"):
        LWSConfig().with_overrides({"data.filler_rate": 1.5})


def test_fillers_reach_training_questions_only(tmp_path):
    """With every training question filled, train and validation questions grow by 1-2 words, while the
    test and test_seen sessions ask the same questions in the same voices and scenarios. (Not to the sample:
    espeak-ng carries a little state from one utterance to the next within a worker's chunk, so word ends
    move by up to tens of milliseconds, and a backchannel placed after them can fall a unit later.)"""
    cfg = LWSConfig().with_overrides({"data.chunk_sessions": 10, "data.test_seen_fraction": 0.2, "data.test_fraction": 0.2,
                                      "data.filler_rate": 0.0})
    plain = load_dataset_dir(synthesize(cfg, tmp_path / "plain", sessions=40, workers=2, progress=False, text_only=True).out_dir)
    filled_cfg = cfg.with_overrides({"data.filler_rate": 1.0})
    filled = load_dataset_dir(synthesize(filled_cfg, tmp_path / "filled", sessions=40, workers=2, progress=False, text_only=True).out_dir)
    for split in ("test", "test_seen"):
        assert len(plain[split]) > 0
        for a, b in zip(plain[split], filled[split], strict=True):
            sa, sb = json.loads(a["session"]), json.loads(b["session"])
            assert sa["meta"]["turns"] == sb["meta"]["turns"] and a["voice"] == b["voice"] and a["scenario"] == b["scenario"]
            assert [w["text"] for w in sa["user_words"]] == [w["text"] for w in sb["user_words"]]
    grown = 0
    for split in ("train", "validation"):
        for a, b in zip(plain[split], filled[split], strict=True):
            if a["scenario"] == "silence":
                assert a["session"] == b["session"]
                continue
            qa, qb = (json.loads(r["session"])["meta"]["turns"][0]["question"] for r in (a, b))
            extra = len(qb.split()) - len(qa.split())
            assert 1 <= extra <= 2, (qa, qb)
            # the session names its fillers (the recogniser is not taught them); a plain session names none
            meta = json.loads(b["session"])["meta"]
            fills, said = set(meta["fillers"]), " ".join(t["question"] for t in meta["turns"]).lower()
            assert set(qb.lower().strip(".?").split()) - set(qa.lower().strip(".?").split()) <= fills, (fills, qa, qb)
            assert all(f in said for f in fills)  # a barge-in's second question brings its own
            assert "fillers" not in json.loads(a["session"])["meta"]
            assert a["answer"] == b["answer"]
            grown += 1
    assert grown > 10


def test_fillers_reach_the_lws_data_but_not_the_backbone_text_and_the_recogniser_keeps_its_own():
    """Edge fillers in the LWS data (the default since stop 58): the backbone's text corpus never takes
    them (no text the LWS model reads holds a filler), and the recogniser's own corpus keeps its rate and
    placement (0.5, anywhere), whatever the LWS data says; also through each step's view."""
    from lws_core.config import config_from_dict, step_view
    from lws_core.train.pretrain_backbone import corpus_config
    from lws_core.train.pretrain_encoder import encoder_corpus_config

    assert (LWSConfig().data.filler_rate, LWSConfig().data.filler_place) == (0.5, "edges")
    edges = LWSConfig().with_overrides({"data.filler_rate": 0.5, "data.filler_place": "edges"})
    for cfg in (edges, edges.with_overrides({"data.filler_rate": 1.0, "data.filler_place": "anywhere"})):
        assert corpus_config(config_from_dict(step_view(cfg, "pretrain_backbone"))).data.filler_rate == 0.0
        recogniser = encoder_corpus_config(config_from_dict(step_view(cfg, "pretrain_encoder"))).data
        assert (recogniser.filler_rate, recogniser.filler_place) == (0.5, "anywhere")
    follows = edges.with_overrides({"pretrain.encoder.filler_place": None, "pretrain.encoder.filler_rate": None})
    assert (encoder_corpus_config(follows).data.filler_rate, encoder_corpus_config(follows).data.filler_place) == (0.5, "edges")


def test_the_recogniser_learns_from_the_filler_free_twin_of_the_train_split(tmp_path):
    """With fillers in the LWS data, the recogniser stand-in's sessions from the dataset are those of the same
    dataset without them (synthesized again from its card): audio, transcripts, tokens and timings alike, so it
    is the recogniser a filler-free dataset gives. Without fillers, or where synthesizing again would call a
    remote teacher, the dataset's own sessions; no scratch folder is left behind."""
    from lws_core.train.pretrain_encoder import (
        _dataset_train,
        _load_split,
        dataset_tokenizer,
        filler_free_config,
    )

    cfg = LWSConfig().with_overrides({"data.chunk_sessions": 8, "data.filler_rate": 0.0})
    plain_dir = Path(synthesize(cfg, tmp_path / "plain", sessions=24, workers=2, progress=False).out_dir)
    filled_cfg = cfg.with_overrides({"data.filler_rate": 1.0, "data.filler_place": "edges"})
    filled_dir = Path(synthesize(filled_cfg, tmp_path / "filled", sessions=24, workers=2, progress=False).out_dir)
    tok = dataset_tokenizer(plain_dir)
    out = tmp_path / "runs" / "encoder"
    plain = _dataset_train(cfg, plain_dir, out, 16000, tok, False)
    twin = _dataset_train(cfg, filled_dir, out, 16000, tok, False)
    filled = _load_split(filled_dir, "train", 16000, tok=tok)
    assert len(twin) == len(plain) == len(filled) > 5
    for a, b in zip(plain, twin, strict=True):
        assert np.array_equal(a.units, b.units) and a.targets == b.targets and a.tokens == b.tokens and a.items == b.items
    assert sum(not np.array_equal(a.units, b.units) for a, b in zip(plain, filled, strict=True)) > 3  # the fillers were said
    assert not list((tmp_path / "runs").iterdir())
    assert filler_free_config(cfg, plain_dir) is None
    card = json.loads((filled_dir / "card.json").read_text())
    card["data_config"]["teacher"]["kind"] = "openai"
    (filled_dir / "card.json").write_text(json.dumps(card))
    assert filler_free_config(cfg, filled_dir) is None
    own = _dataset_train(cfg, filled_dir, out, 16000, tok, False)
    assert all(np.array_equal(a.units, b.units) for a, b in zip(own, filled, strict=True))

"""Extra training phrasings (``data.extra_phrasings``): more ways to ask the same template questions, for the
training and validation sessions only. Synthesis runs the real espeak-ng TTS (text-only rows, to be quick)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from lws_core.config import LWSConfig
from lws_core.data import load_dataset_dir, synthesize
from lws_core.data.tasks import (
    EXTRA_PHRASINGS,
    FAMILIES,
    PHRASINGS,
    make_question,
    phrasing_ids,
    phrasing_template,
)
from lws_core.data.teachers import TemplateTeacher


def _pairs(template: str) -> set[tuple[str, str]]:
    """Adjacent word pairs of a template, slots ("{a}") breaking the runs."""
    words = ["{}" if "{" in w else w.strip(".,?!:").lower() for w in template.split()]
    return {(a, b) for a, b in zip(words, words[1:], strict=False) if "{}" not in (a, b)}


def test_the_held_out_phrasing_stays_the_only_test_one_and_extras_come_only_when_asked():
    for family in FAMILIES:
        n = len(PHRASINGS[family])
        assert phrasing_ids(family, "test") == phrasing_ids(family, "test", extra=True) == [n - 1]
        base = phrasing_ids(family, "train")
        assert base == list(range(n - 1))
        more = phrasing_ids(family, "train", extra=True)
        assert more[: len(base)] == base and len(more) == len(base) + len(EXTRA_PHRASINGS[family])
        assert [phrasing_template(family, i) for i in more[len(base):]] == EXTRA_PHRASINGS[family]
        assert phrasing_template(family, n - 1) == PHRASINGS[family][-1]


@pytest.mark.parametrize("family", FAMILIES)
def test_no_extra_phrasing_repeats_the_held_out_ones_wording(family):
    """No extra phrasing shares a run of two words with its family's held-out phrasing that the training phrasings
    did not already share with it, nor copies a training one: otherwise the test split would stop measuring
    generalisation to a new phrasing."""
    held = _pairs(PHRASINGS[family][-1])
    already = set().union(*(_pairs(PHRASINGS[family][i]) for i in phrasing_ids(family, "train")))
    for t in EXTRA_PHRASINGS[family]:
        shared = (held & _pairs(t)) - already
        assert not shared, (t, shared)
        assert t not in PHRASINGS[family]
    assert len(set(EXTRA_PHRASINGS[family])) == len(EXTRA_PHRASINGS[family])


def _slot_order(template: str) -> tuple[str, ...]:
    return tuple(re.findall(r"\{(\w+)\}", template))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_slot_order_keeps_most_of_its_share(family):
    """Each order in which the base training phrasings say their slots keeps at least three quarters of its share
    with the extra phrasings. Stop 44's convert extras all said the number first, and the base phrasing that says
    it last lost its share and most of its accuracy."""
    def shares(ids: list[int]) -> dict[tuple[str, ...], float]:
        orders = [_slot_order(phrasing_template(family, i)) for i in ids]
        return {o: orders.count(o) / len(orders) for o in set(orders)}

    base = shares(phrasing_ids(family, "train"))
    more = shares(phrasing_ids(family, "train", extra=True))
    for order, share in base.items():
        assert more.get(order, 0.0) >= 0.75 * share, (order, share, more.get(order, 0.0))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_extra_phrasing_asks_a_question_whose_notes_follow_its_words(family):
    """Each extra phrasing fills its slots, and each template note is keyed to the word that completes it (the
    note's numbers are said by then), as for the base phrasings."""
    teacher = TemplateTeacher()
    rng = np.random.default_rng(0)
    seen = set()
    base = len(PHRASINGS[family])
    for _ in range(400):
        q = make_question(family, rng, "train", extra=True)
        seen.add(q.phrasing)
        assert "{" not in q.text and "}" not in q.text
        script = teacher.script(q)
        for note in script.notes:
            said = " ".join(q.words[: note.depends_on_word + 1])
            for number in re.findall(r"\d+", note.text):
                if re.search(rf"\b{number}\b", q.text) and "=" not in note.text.split(number)[0]:
                    # a number of the question (not one the note works out): said by the note's word
                    assert re.search(rf"\b{number}\b", said), (q.text, note.text)
    assert seen == set(phrasing_ids(family, "train", extra=True)) and max(seen) >= base


def test_extra_phrasings_reach_training_questions_only(tmp_path):
    """With the option (the default since stop 55), training and validation questions use the extra phrasings; the
    graded splits keep the same questions, voices and word order as without (not to the sample: espeak-ng carries a
    little state from one utterance to the next within a worker's chunk)."""
    cfg = LWSConfig().with_overrides({
        "data.chunk_sessions": 10, "data.test_fraction": 0.2, "data.test_seen_fraction": 0.2, "data.extra_phrasings": False,
    })
    plain = load_dataset_dir(synthesize(cfg, tmp_path / "plain", sessions=60, workers=2, progress=False, text_only=True).out_dir)
    x_cfg = cfg.with_overrides({"data.extra_phrasings": True})
    extra = load_dataset_dir(synthesize(x_cfg, tmp_path / "extra", sessions=60, workers=2, progress=False, text_only=True).out_dir)
    extra_texts = {t for ts in EXTRA_PHRASINGS.values() for t in ts}

    def phrasing_of(row) -> str:  # noqa: ANN001 - a dataset row
        meta = json.loads(row["session"])["meta"]
        return phrasing_template(row["task_family"], meta["phrasing"]) if row["task_family"] in PHRASINGS else ""

    used = sum(phrasing_of(r) in extra_texts for split in ("train", "validation") for r in extra[split])
    assert used >= 10
    assert not any(phrasing_of(r) in extra_texts for split in ("train", "validation") for r in plain[split])
    for split in ("test", "test_seen"):
        assert len(plain[split]) > 0
        for a, b in zip(plain[split], extra[split], strict=True):
            sa, sb = json.loads(a["session"]), json.loads(b["session"])
            assert (a["id"], a["question"], a["voice"], a["scenario"]) == (b["id"], b["question"], b["voice"], b["scenario"])
            assert [w["text"] for w in sa["user_words"]] == [w["text"] for w in sb["user_words"]]
            ends = [abs(x["end"] - y["end"]) for x, y in zip(sa["user_words"], sb["user_words"], strict=True)]
            assert max(ends, default=0.0) < 0.01


@pytest.mark.parametrize("stand_ins", [True, False])
def test_the_stand_ins_corpora_take_the_extra_phrasings_only_when_let(stand_ins):
    """``pretrain.extra_phrasings=false`` keeps the extra phrasings out of both stand-ins' own corpora (so the
    backbone is the draw the defaults make), while the LWS dataset still gets them; the corpora's own sizes
    and seeds are untouched either way."""
    from lws_core.train.pretrain_backbone import corpus_config, train_only_corpus

    cfg = LWSConfig().with_overrides({"data.extra_phrasings": True, "pretrain.extra_phrasings": stand_ins})
    backbone = corpus_config(cfg)
    recogniser = train_only_corpus(cfg, cfg.pretrain.encoder.sessions, cfg.pretrain.encoder.corpus_seed)
    assert cfg.data.extra_phrasings
    assert backbone.data.extra_phrasings is stand_ins and recogniser.data.extra_phrasings is stand_ins
    assert (backbone.data.sessions, backbone.data.seed) == (cfg.pretrain.backbone.sessions, cfg.pretrain.backbone.seed)
    # on by default since stop 55 (both switches); the LWS data's switch off keeps the corpora off too
    assert corpus_config(LWSConfig()).data.extra_phrasings is True
    assert corpus_config(LWSConfig().with_overrides({"data.extra_phrasings": False})).data.extra_phrasings is False
    # as the pipeline hands it over: each pretrain step gets only its view of the config, and the switch is in it
    from lws_core.config import config_from_dict, step_view

    for step in ("pretrain_backbone", "pretrain_encoder"):
        assert corpus_config(config_from_dict(step_view(cfg, step))).data.extra_phrasings is stand_ins

"""More voice timbres for training speech (``data.voice_timbres``, ``pretrain.encoder.voice_timbres``): every
other variant the packaged espeak-ng data ships, for the training splits only. Real espeak-ng throughout."""

from __future__ import annotations

import json

import numpy as np

from lws_core.audio.tts import HELD_OUT_VARIANTS, VARIANTS, VoiceSpec, english_voices, get_tts, more_variants
from lws_core.config import LWSConfig, config_from_dict, step_view
from lws_core.data import load_dataset_dir, synthesize


def test_all_timbres_add_training_voices_and_leave_the_held_out_ones_alone():
    extra = more_variants()
    assert len(extra) >= 50 and not set(extra) & {*VARIANTS, *HELD_OUT_VARIANTS}
    core, everything = english_voices(held_out=False), english_voices(held_out=False, timbres="all")
    assert set(core) < set(everything) and len(everything) == len(core) + 7 * len(extra)
    held = english_voices(held_out=True)
    assert english_voices(held_out=True, timbres="all") == held and not set(held) & set(everything)
    # each added variant is a voice espeak-ng takes and speaks with the word timings the data pipeline needs
    tts = get_tts()
    for name in np.random.default_rng(0).choice(everything[len(core):], size=6, replace=False):
        speech = tts.synthesize("what is 7 times 8", VoiceSpec(str(name)))
        assert len(speech.words) == 5 and speech.duration_s > 0.5 and float(np.abs(speech.audio).max()) > 0.01


def test_all_timbres_reach_training_sessions_only(tmp_path):
    cfg = LWSConfig().with_overrides({"data.chunk_sessions": 10, "data.test_fraction": 0.2, "data.test_seen_fraction": 0.2})
    core = load_dataset_dir(synthesize(cfg, tmp_path / "core", sessions=60, workers=2, progress=False, text_only=True).out_dir)
    wide_cfg = cfg.with_overrides({"data.voice_timbres": "all"})
    wide = load_dataset_dir(synthesize(wide_cfg, tmp_path / "all", sessions=60, workers=2, progress=False, text_only=True).out_dir)

    def variant(row) -> str:  # noqa: ANN001 - a dataset row: "lang+variant@rate/pitch"
        return row["voice"].split("@")[0].split("+")[-1]

    added = set(more_variants())
    assert sum(variant(r) in added for split in ("train", "validation") for r in wide[split]) >= 10
    assert not any(variant(r) in added for split in ("train", "validation") for r in core[split])
    for split in ("test", "test_seen"):  # the graded splits: the same sessions, in the same voices
        assert len(core[split]) > 0
        for a, b in zip(core[split], wide[split], strict=True):
            assert (a["id"], a["question"], a["voice"]) == (b["id"], b["question"], b["voice"])
            wa, wb = json.loads(a["session"])["user_words"], json.loads(b["session"])["user_words"]
            assert [w["text"] for w in wa] == [w["text"] for w in wb]
            # not to the sample: espeak-ng carries a little state from one utterance to the next in a worker's chunk
            assert max((abs(x["end"] - y["end"]) for x, y in zip(wa, wb, strict=True)), default=0.0) < 0.025


def test_the_recogniser_corpus_takes_its_own_timbres_through_the_step_view():
    from lws_core.train.pretrain_encoder import encoder_corpus_config

    cfg = LWSConfig().with_overrides({"pretrain.encoder.voice_timbres": "all"})
    assert cfg.data.voice_timbres == "core"  # the LWS data keeps its voices
    for c in (cfg, config_from_dict(step_view(cfg, "pretrain_encoder"))):
        corpus = encoder_corpus_config(c)
        assert corpus.data.voice_timbres == "all" and corpus.data.sessions == c.pretrain.encoder.sessions
    assert encoder_corpus_config(LWSConfig()).data.voice_timbres == "core"  # null: the data's own
    wide = LWSConfig().with_overrides({"data.voice_timbres": "all"})
    assert encoder_corpus_config(wide).data.voice_timbres == "all"

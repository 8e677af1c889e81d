"""Config section `pretrain`: the stand-ins for a pretrained LLM and a pretrained speech encoder.

The real LWS recipe starts from both; on a laptop neither exists, so the pipeline
makes small ones. Each stage is skipped when ``model.backbone_path`` /
``model.encoder_path`` name real local checkpoints.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lws_core.config.base import Section, Switch


class BackbonePretrain(Section):
    """Text-only LM pretraining on the teacher's text in the schema's own segments (no audio)."""

    sessions: int = Field(3000, ge=1, description="Text-only sessions to synthesize for the corpus (train phrasings only).")
    seed: int = Field(1, description="Corpus seed (not the audio set's, so the LM sees other questions).")
    max_steps: int = Field(
        2400, ge=1,
        description="Packed steps. 2,400 since stop 55, with data.extra_phrasings on: three times the phrasings at "
        "1,200 steps lowered the text ceiling (test_seen 0.53 -> 0.44), 2,400 raise it to 0.62 (test 0.56; one draw). "
        "1,200 from stop 35 (600 before): text ceiling 0.36 -> 0.46 (test_seen) over three seeds, and with "
        "data.sessions=2000 and train.max_steps=600 the LWS stage carries it through (written test_seen 0.31 -> 0.43; "
        "benchmarks/results/liberation.md).",
    )
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(
        1e-3, gt=0,
        description="Peak learning rate. 3e-3 (the old default) gave a higher final loss (0.14 vs 0.12) and a lower text "
        "ceiling (0.17 / 0.22 vs 0.26 / 0.28, test_seen / test, one run each); smaller batches at 3e-3 were worse still.",
    )
    warmup_steps: int = Field(30, ge=0)
    drill_rows: int = Field(
        0, ge=0,
        description="Rows of arithmetic facts (products, sums, differences, comparisons of small numbers, in the "
        "notes' syntax) added to every step: the knowledge a real pretrained LLM brings; 0: sessions only "
        "(1 row at the default 600 steps lowered the text ceiling from 0.17 / 0.22 to 0.07 / 0.07, one run; at today's "
        "2,400 steps, stop 60, one run: ceiling 0.53 / 0.62 -> 0.56 / 0.52, cascade 0.43 / 0.45 -> 0.42 / 0.39, copying "
        "no better).",
    )
    heard_noise: float = Field(
        0.2, ge=0.0, le=1.0,
        description="Simulated recogniser errors in the text view: each heard word that is not a number and not said "
        "back in the session's notes or answers is dropped or swapped for another training-phrasing word with this "
        "probability, drawn again every epoch (lws_core.train.pretrain_backbone.mishearing); 0: clean transcripts. "
        "0.2 by default since stop 53, with heard_swap 0.2 and pretrain.encoder.filler_rate 0.5 (three LWS seeds "
        "paired with 0 / 0.5 / null): written test_seen 0.504 -> 0.549, test 0.281 -> 0.419, consistency test "
        "0.810 -> 0.903; costs: FDB turn-taking TOR test_seen 0.967 -> 0.917, backchannel TOR test 0.067 -> 0.283 "
        "(benchmarks/results/liberation.md).",
    )
    heard_swap: float = Field(
        0.2, ge=0.0, le=1.0,
        description="Under heard_noise, the share of misheard words heard as another training-phrasing word; the "
        "rest are dropped. 0.2 (stop 53): the filler-taught recogniser (pretrain.encoder.filler_rate=0.5) drops a "
        "word it does not know four times as often as it swaps it (test transcripts: 0.34 deleted, 0.09 substituted "
        "of every word said). Stop 52's even mixture (0.5) cost written test_seen (0.504 -> 0.462); 0.2 gains it.",
    )
    copy_rows: int = Field(
        0, ge=0,
        description="Rows of copy episodes (heard-style numbers and words between <|audio|> slots, then the same "
        "written as a note, only the note labelled) added to every step: a drill for copying what was heard; 0: off "
        "(1 row at the default 600 steps lowered teacher-forced copying of heard digits from 0.77 / 0.66 to "
        "0.43 / 0.21, first / later digits, one run).",
    )


class EncoderPretrain(Section):
    """CTC speech-recogniser pretraining of the audio encoder on the synthesized user speech."""

    max_steps: int = Field(
        8000, ge=1,
        description="Steps of batch_size windows. 8,000, not 4,000 (stop 42, three seeds, paired; the loss was still "
        "falling at 4,000): held-out-voice WER 0.137 -> 0.091 (every seed <= 0.10), written accuracy test_seen 0.487 -> "
        "0.505 and test 0.293 -> 0.354, for ~8 more minutes of make run; turn-taking TOR on held-out phrasings fell "
        "0.933 -> 0.817. 4,000, not 2,000, before that: the cascade answered 0.26 / 0.21 against 0.15 / 0.15.",
    )
    batch_size: int = Field(48, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    seed: int = 0
    targets: Literal["tokens", "words", "letters"] = Field(
        "tokens", description="CTC output symbols: the LM's own tokens (the projector's slots are built from them), words or letters."
    )
    aligned_weight: float = Field(
        1.0, ge=0.0,
        description="Weight of the dense loss: cross-entropy at every encoder position against the CTC path the "
        "synthesizer's word timings fix (each word emitted as it ends); 0: CTC alone. Tokens targets only.",
    )
    align: Literal["end", "spread"] = Field(
        "end",
        description="Where the dense loss puts a word's tokens: 'end', all at the word's end; 'spread', token i of n "
        "at (i+1)/n of the word's span (a two-digit number's tens digit where its tens word ends).",
    )
    spec_augment: bool = Field(False, description="SpecAugment masks while pretraining.")
    dropout: float = Field(
        0.1, ge=0.0, lt=1.0,
        description="Dropout in the encoder (residual, activation and attention) while pretraining; the saved "
        "recogniser has none. Against memorising: without it, at 4,000 steps, the recogniser heard its own training "
        "audio almost perfectly (WER 0.014) and held-out voices at 0.20 (docs/training.md).",
    )
    freq_warp: float = Field(
        0.0, ge=0.0, lt=0.5,
        description="Largest relative stretch of the mel axis per example while pretraining (a VTLP-style voice "
        "perturbation for held-out voices); 0: off.",
    )
    eval_sessions: int = Field(
        400, ge=0,
        description="Held-out-voice sessions (test_seen, at most) for the WER report and its 95 % bootstrap interval. "
        "400, not 60, since stop 56 (the whole test_seen split of the default dataset): on 60 the stop-53 recogniser "
        "read 0.097, on all 400 0.101 (0.090-0.113), so 60 sessions could not say whether WER <= 0.10 was met.",
    )
    sessions: int = Field(
        4500, ge=0,
        description="Extra audio sessions synthesized for the recogniser alone (own seed, training voices and phrasings), "
        "on top of the dataset's train split; 0: the train split only. 4,500 (1,500 before stop 31): with dropout, "
        "held-out-voice WER 0.215 -> 0.134 over three seeds (docs/training.md).",
    )
    voice_timbres: Literal["core", "all"] | None = Field(
        None,
        description="data.voice_timbres for the recogniser's own extra corpus (pretrain.encoder.sessions) alone: all "
        "= ~100 espeak voice variants instead of 14 (the held-out voices stay unheard); null: data.voice_timbres.",
    )
    voice_accents: int | None = Field(
        8, ge=0, le=64,
        description="data.voice_accents for the recogniser's own extra corpus alone: that many synthetic accents "
        "(lws_core.audio.accents) beside the seven espeak training accents; null: data.voice_accents. 8 by default "
        "since stop 63: held-out-voice WER 0.115 -> 0.079 (paired -0.036, -0.048 to -0.024, 400 sessions), the "
        "held-out accent 0.167 -> 0.095; 24 accents did the same (0.077) (benchmarks/results/liberation.md).",
    )
    corpus_seed: int = Field(2, description="Seed of that extra corpus (not the dataset's, so it holds other sessions).")
    filler_rate: float | None = Field(
        0.5, ge=0.0, le=1.0,
        description="Share of that extra corpus's questions that carry filler words (data.filler_*: frequent English "
        "words no training phrasing says). A filler is never a target: the recogniser learns to write nothing for a "
        "word it was not taught instead of a template word or a number in its place; null: data.filler_rate. 0.5 by "
        "default since stop 53, with pretrain.backbone.heard_noise (which it pairs with; alone, stop 52, no held-out "
        "LWS gain): held-out-voice WER 0.091 -> 0.097, cascade on test 0.31 -> 0.37 (one run each).",
    )
    filler_place: Literal["anywhere", "edges"] | None = Field(
        "anywhere",
        description="data.filler_place for that extra corpus's fillers: anywhere (the default: the recogniser also "
        "meets an untaught word inside a question, as a held-out phrasing's new words are) or edges; null: "
        "data.filler_place. So edge fillers in the LWS data (data.filler_place=edges) leave the recogniser's own corpus "
        "the one measured since stop 53.",
    )
    general_utterances: int = Field(
        0, ge=0,
        description="Utterances of general English (3-10 words drawn from the general_vocab most frequent English words, "
        "wordfreq's list; a third with a number) said by training voices, for the recogniser alone: a vocabulary beyond "
        "the task templates, as a real ASR encoder has (lws_core/train/general_speech.py); 0: off. Measured worse at the "
        "default size and steps: 3,000 utterances took WER 0.123 -> 0.166 (test_seen) and 0.480 -> 0.507 (test), one run "
        "(docs/training.md, stop 37).",
    )
    general_vocab: int = Field(3000, ge=100, description="How many of the most frequent English words general_utterances draws from.")


class LWSWarmup(Section):
    """How the LWS stage starts from the two checkpoints."""

    projector_steps: int = Field(60, ge=0, description="Steps training only the projector (backbone and encoder frozen).")
    rewarm_steps: int = Field(40, ge=0, description="Steps over which the learning rate climbs again when the pretrained parts join.")
    joint_lr_scale: float = Field(
        0.1, gt=0, le=1.0,
        description="Joint training's peak learning rate, as a share of train.learning_rate. 0.1, not 0.5: at 0.5 the "
        "training loss doubled (0.12 -> 0.24) as the pretrained parts joined and took ~100 steps to recover; at 0.1 "
        "LWS written went 0.18 -> 0.25 (test_seen) and 0.15 -> 0.20 (test), one seed (docs/training.md). 0.03 (stop 60, "
        "three seeds): held-out written unchanged, later questions of a stream worse (-0.130 +- 0.122).",
    )
    freeze_encoder: bool = Field(
        True,
        description="Keep a pretrained encoder (model.encoder_path) frozen after the warm-up too; only the projector "
        "and the backbone learn. The LWS loss has no CTC term, so a training encoder drifts from its recogniser. "
        "Three seeds: written test 0.20 +- 0.12 -> 0.24 +- 0.05, test_seen 0.26 -> 0.27 (paired gain +0.04 +- 0.09, "
        "not significant; never lower on test), and a faster stage (docs/training.md). No effect without an encoder_path.",
    )


class PretrainConfig(Section):
    bf16: Switch = Field(
        "auto", description="bf16 autocast in the two pretraining loops; auto = on where the CPU has bf16 units, or on a GPU."
    )
    extra_phrasings: bool = Field(
        True,
        description="The stand-ins' own corpora (the backbone's text, the recogniser's extra speech) also draw "
        "data.extra_phrasings' phrasings when that is on; false: only the LWS dataset does, so both stand-ins are "
        "the draw the defaults make (the recogniser still hears the dataset's own train split).",
    )
    backbone: BackbonePretrain = BackbonePretrain()
    encoder: EncoderPretrain = EncoderPretrain()
    warmup: LWSWarmup = LWSWarmup()

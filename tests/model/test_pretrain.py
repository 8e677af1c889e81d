"""The two stand-in pretraining stages and the LWS stage that starts from them.

Real parts throughout: a dataset synthesized with espeak-ng speech, a text corpus
from the same synthesizer, the real Whisper encoder and Llama classes, and the
checkpoints loaded back through the same ``model.backbone_path`` /
``model.encoder_path`` code a user's real checkpoints go through.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lws_core.errors import InputError
from lws_core.model.asr import CTCVocab, context_windows, greedy_decode, heard_form, heard_speech, spoken_form
from lws_core.schema import Session, Unit, Word, check_digits, encode, heard_words


def test_digits_tokenize_one_per_token_whatever_the_number() -> None:
    from lws_core.data.budget import budget_tokenizer

    tok = budget_tokenizer()
    for n in ("38", "15", "98", "1000", "07"):
        pieces = tok.token_strings(tok.encode_text(f" {n}"))
        assert pieces == [f"Ġ{n[0]}", *n[1:]], (n, pieces)  # " 38" and " 15" split the same way
        # a first digit (with its space) is a different token from the same digit later in a number
        assert tok.encode_text(f" {n}")[0] != tok.encode_text(n[0])[0]
        assert tok.token_strings(tok.encode_text(n)) == list(n)  # no space before it: digits alone
    check_digits(tok)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=" 0123456789abx|:*\n-", max_size=24))
def test_segments_round_trip_and_open_a_number_like_any_other(text: str) -> None:
    from lws_core.data.budget import budget_tokenizer

    tok = budget_tokenizer()
    ids = tok.encode_segment(text)
    assert tok.decode_segment(ids) == text  # lossless for every string, a leading " 29" included
    stripped = text.lstrip(" ")
    if stripped[:1].isdigit():
        # a segment opening with a number spells its first digit as "Ġd", as inside a line
        first = next(t for t in tok.token_strings(ids) if any(c.isdigit() for c in t))
        assert first == f"Ġ{stripped[0]}", (text, tok.token_strings(ids))


def test_the_segment_rule_survives_save_and_load(tmp_path: Path) -> None:
    from lws_core.data.budget import budget_tokenizer
    from lws_core.schema import SchemaTokenizer

    tok = budget_tokenizer()
    tok.save(tmp_path / "t")
    back = SchemaTokenizer.load(tmp_path / "t")
    assert back.lead_digit_segments
    assert back.encode_segment("92 vs 13") == tok.encode_text(" 92 vs 13")
    # a tokenizer saved before the rule existed loads without it, so its models decode as they were trained
    meta = json.loads((tmp_path / "t" / "lws_schema.json").read_text())
    del meta["lead_digit_segments"]
    (tmp_path / "t" / "lws_schema.json").write_text(json.dumps(meta))
    old = SchemaTokenizer.load(tmp_path / "t")
    assert not old.lead_digit_segments and old.encode_segment("92") == tok.encode_text("92")


def test_a_tokenizer_whose_digits_do_not_round_trip_is_refused() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from lws_core.schema import SchemaTokenizer
    from lws_core.schema.tokenizer import _ids_of
    from lws_core.schema.tokens import SPECIAL_TOKENS

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator(["what is twelve plus three"] * 5, trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", *SPECIAL_TOKENS]))
    hf = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", pad_token=SPECIAL_TOKENS[0])
    with pytest.raises(InputError, match="digits do not round-trip"):
        check_digits(SchemaTokenizer(hf, _ids_of(hf)), where="tok")


def test_heard_view_puts_each_word_in_the_unit_that_hears_it() -> None:
    from lws_core.data.budget import budget_tokenizer
    from lws_core.model.asr import heard_slots

    words = [Word(text="what", start=0.1, end=0.4), Word(text="is", start=0.5, end=1.0), Word(text="42", start=1.2, end=1.9)]
    s = Session(units=[Unit(), Unit(write="- 42\n"), Unit(state="speak", say="forty two", eot=True)], user_words=words)
    assert heard_words(s) == [["what", "is"], ["42"], []]  # a word ending exactly at 1.0 s is heard in unit 0
    assert heard_speech(s) == ["what is", "42", ""]  # numbers as digits, as a Whisper-class ASR writes them
    tok = budget_tokenizer()
    audio = tok.special.audio
    slots = heard_slots(s, tok, 10)
    assert [len(u) for u in slots] == [10, 10, 10]
    assert [t for t in slots[0] if t != audio] == tok.encode_text(" what") + tok.encode_text(" is")
    assert slots[0].index(tok.encode_text(" what")[0]) == 3  # "what" ends at 0.4 s: slot 3 of 10
    assert [t for t in slots[1] if t != audio] == tok.encode_text(" 42")  # one token a digit
    assert slots[2] == [audio] * 10
    enc = encode(s, tok, 10, heard=slots)
    assert not any(enc.audio_mask)
    first = enc.unit_starts[0]
    assert enc.input_ids[first + 1 : first + 11] == slots[0]
    assert all(lab == -100 for lab in enc.labels[first : first + 11])  # the user's words are not targets
    with pytest.raises(Exception, match="heard units"):
        encode(s, tok, 10, heard=[slots[0]])


def test_spoken_form_and_word_ctc_vocabulary() -> None:
    assert spoken_form(["What", "is", "42", "+", "7?"]) == "what is forty two plus seven"
    assert heard_form(["What", "is", "1,042", "+", "7?", "-3", "2.5%"]) == "what is 1042 plus 7 minus 3 2.5 percent"
    v = CTCVocab.from_texts(["what is forty two", "two plus"])  # the word vocabulary (pretrain.encoder.targets=words)
    ids = v.to_ids("what is ninety two")
    assert v.decode(ids) == "what is <unk> two"
    lp = torch.full((1, 6, len(v)), -10.0)
    for t, i in enumerate([ids[0], ids[0], 0, ids[1], 0, ids[1]]):
        lp[0, t, i] = 0.0
    assert greedy_decode(lp, v) == ["what is is"]  # repeats collapse only without a blank between them


def test_left_context_stays_inside_the_session_and_reaches_back_several_units() -> None:
    x = torch.arange(12.0).reshape(4, 3)
    w = context_windows(x, torch.tensor([True, False, True, False]), 5)
    assert w.shape == (4, 8)
    assert w[1].tolist() == [0, 0, 0, 1, 2, 3, 4, 5]  # previous unit of the same session
    assert w[2].tolist() == [0, 0, 0, 0, 0, 6, 7, 8]  # a new session starts in silence
    w2 = context_windows(x, torch.tensor([True, False, False, False]), 5)
    assert w2[3].tolist() == [4, 5, 6, 7, 8, 9, 10, 11]  # 5 samples reach back two units


@pytest.fixture(scope="module")
def pretrained(tiny_cfg, tiny_dataset, tmp_path_factory):
    """Both stand-ins, pretrained for a handful of steps on real synthesized data."""
    from lws_core.train.pretrain_backbone import build_backbone
    from lws_core.train.pretrain_encoder import pretrain_encoder

    cfg = tiny_cfg.with_overrides({
        "pretrain.backbone.sessions": 30, "pretrain.backbone.max_steps": 4, "pretrain.backbone.batch_size": 4,
        "pretrain.encoder.max_steps": 4, "pretrain.encoder.batch_size": 8, "pretrain.encoder.sessions": 6, "pretrain.encoder.eval_sessions": 2,
        "pretrain.encoder.general_utterances": 4,
        # the options that are off by default run here too (drill and copy rows beside the sessions, the mel warp),
        # and the default mishearing and fillers at higher rates (more noise, an extra corpus full of fillers)
        "pretrain.backbone.drill_rows": 1, "pretrain.backbone.copy_rows": 1, "pretrain.encoder.freq_warp": 0.1,
        "pretrain.backbone.heard_noise": 0.3, "pretrain.encoder.filler_rate": 1.0,
    })
    root = tmp_path_factory.mktemp("pretrained")
    logs: list[tuple[int, dict]] = []
    b = build_backbone(cfg, root / "backbone", progress=False, on_log=lambda s, m: logs.append((s, m)))
    e = pretrain_encoder(cfg, tiny_dataset, root / "encoder", progress=False)
    return cfg, b, e, logs


def test_pretrained_stand_ins_load_as_real_checkpoints(pretrained, tiny_dataset) -> None:
    from lws_core.data.budget import budget_tokenizer
    from lws_core.model import LWSModel
    from lws_core.train.collator import LWSCollator

    cfg, b, e, logs = pretrained
    assert b.steps == 4 and b.train_sessions > 0 and np.isfinite(b.final_loss)
    assert logs and "text_loss" in logs[-1][1]
    report = json.loads((Path(b.out_dir) / "pretrain_report.json").read_text())
    assert report["corpus"]["sessions"] == b.train_sessions
    assert e.steps == 4 and e.wer_sessions >= 1
    said = any(x["ref"] for x in e.examples)  # WER exists exactly when the evaluated sessions said something
    assert (e.wer is not None and e.wer >= 0.0) if said else e.wer is None
    if e.wer_interval is not None:  # reported beside the point figure, which it brackets
        assert e.wer_interval[0] <= e.wer <= e.wer_interval[1]
        assert report_wer_interval(e) == list(e.wer_interval)
    if e.wer is not None:  # and where the errors are: per accent of the evaluated voices (held out: test_seen's)
        accents = {k for k in e.wer_breakdown if k.startswith("wer_accent.")}
        assert accents and "wer_accent.unknown" not in accents, e.wer_breakdown
        assert json.loads((Path(e.out_dir) / "pretrain_report.json").read_text())["wer_breakdown"] == e.wer_breakdown
    lws = cfg.with_overrides({"model.backbone_path": b.out_dir, "model.encoder_path": e.out_dir})
    m = LWSModel.build(lws)
    # the backbone's own tokenizer comes back with the very ids the data budgets were counted with
    assert m.tokenizer.special.as_mapping() == budget_tokenizer().special.as_mapping()
    assert m.tokenizer.vocab_size == budget_tokenizer().vocab_size
    assert m.tokenizer.lead_digit_segments  # segments are encoded as the backbone learnt them
    assert m.spec.backbone_source == b.out_dir and m.spec.encoder_source == e.out_dir
    # the encoder's weights are the pretrained ones, not a fresh init
    from safetensors.torch import load_file

    saved = load_file(str(Path(e.out_dir) / "model.safetensors"))
    key = next(k for k in saved if k.endswith("fc1.weight"))
    assert torch.equal(dict(m.audio.encoder.named_parameters())[key], saved[key])
    # projector output sits at the token-embedding scale, not ~90x above it (a 4-step recogniser's posteriors are
    # still diffuse, and a mix of many token rows is shorter than one row: hence the low bound)
    from datasets import load_from_disk

    rows = load_from_disk(str(tiny_dataset))["train"]
    batch = LWSCollator(m.tokenizer, m.spec.audio_tokens_per_unit, m.spec.unit_samples)([rows[0], rows[1]])
    with torch.no_grad():
        windows = m.audio.windows(batch["unit_audio"], batch["audio_first"])
        aud = m.audio(windows)
    tok_rms = m.lm.get_input_embeddings().weight.pow(2).mean().sqrt()
    ratio = float(aud.pow(2).mean().sqrt() / tok_rms)
    assert 0.2 < ratio < 2.0, ratio


def report_wer_interval(e):  # noqa: ANN001, ANN201 - EncoderReport -> list | None
    return json.loads((Path(e.out_dir) / "pretrain_report.json").read_text())["wer_interval"]


def test_wer_breakdown_splits_errors_by_accent_and_by_numbers_against_other_words() -> None:
    from lws_core.train.pretrain_encoder import wer_breakdown, word_error_rate

    refs = ["what is 7 times 29", "which is bigger 38 or 98", "", "add 5"]
    hyps = ["what is 7 times 9", "which is 38 or 98", "noise", "add 5 5"]
    voices = ["en-us+f1@170wpm/p40", "en-gb-x-gbcwmd+f4@150wpm/p50", "en-us@175wpm/p50", "en-us@160wpm/p45"]
    b = wer_breakdown(refs, hyps, voices)
    # en-us: one substitution and one insertion over 7 words; the silent session (no reference) is left out, as in the WER
    assert b["wer_accent.en-us"] == pytest.approx(2 / 7)
    assert b["wer_accent.en-gb-x-gbcwmd"] == pytest.approx(1 / 6)  # "bigger" deleted
    assert b["missed_numbers"] == pytest.approx(1 / 5)  # 29 heard as 9; 7, 38, 98 and 5 right (the inserted 5 is no miss)
    assert b["missed_words"] == pytest.approx(1 / 8)
    # the accents' words add up to the pooled WER's
    assert word_error_rate(refs, hyps) == pytest.approx((2 + 1) / 13)
    assert wer_breakdown([], [], []) == {}


def test_wer_interval_brackets_the_pooled_rate_and_narrows_with_more_sessions() -> None:
    """The encoder's WER comes with a bootstrap interval over sessions (the goal, <= 0.10, sits inside the noise
    of 60 sessions). Sessions of 2-9 words with one word wrong in every third session: the pooled rate sits inside
    its interval, 4x the sessions give a narrower one, and a perfect transcript gives a zero-width interval at 0."""
    from lws_core.train.pretrain_encoder import wer_difference_interval, wer_interval, word_error_rate

    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[list[str], list[str]]:
        refs, hyps = [], []
        for i in range(n):
            words = [f"w{int(k)}" for k in rng.integers(0, 50, int(rng.integers(2, 10)))]
            refs.append(" ".join(words))
            hyps.append(" ".join(["x", *words[1:]]) if i % 3 == 0 else " ".join(words))
        return refs, hyps

    small, large = draw(60), draw(240)
    lo_s, hi_s = wer_interval(*small)
    lo_l, hi_l = wer_interval(*large)
    assert lo_s < word_error_rate(*small) < hi_s and lo_l < word_error_rate(*large) < hi_l
    assert hi_l - lo_l < hi_s - lo_s
    assert wer_interval(small[0], small[0]) == (0.0, 0.0)
    assert wer_interval(["one two"], ["one"]) is None  # one session: no interval to draw
    # two recognisers on the same sessions: one that also misses every fifth session's last word is worse, and the
    # paired interval (the sessions' own difficulty cancels) excludes 0 and is narrower than either rate's own
    refs, hyps = large
    worse = [" ".join(h.split()[:-1]) if i % 5 == 0 else h for i, h in enumerate(hyps)]
    d_lo, d_hi = wer_difference_interval(refs, worse, hyps)
    assert 0 < d_lo < word_error_rate(refs, worse) - word_error_rate(refs, hyps) < d_hi
    assert d_hi - d_lo < hi_l - lo_l
    assert wer_difference_interval(refs, hyps, hyps) == (0.0, 0.0)


def test_encoder_made_for_other_settings_is_refused_in_one_line(pretrained, tmp_path) -> None:
    import shutil

    from lws_core.model import LWSModel

    cfg, b, e, _ = pretrained
    with pytest.raises(InputError, match="left context"):
        LWSModel.build(cfg.with_overrides({"model.encoder_path": e.out_dir, "model.audio_context_s": 0.25}))
    other = tmp_path / "enc8k"
    shutil.copytree(e.out_dir, other)
    meta = json.loads((other / "lws_encoder.json").read_text())
    meta["sample_rate"] = 8000
    (other / "lws_encoder.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="8000 Hz"):
        LWSModel.build(cfg.with_overrides({"model.encoder_path": str(other)}))
    broken = tmp_path / "enc_broken"
    shutil.copytree(e.out_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="cannot load"):
        LWSModel.build(cfg.with_overrides({"model.encoder_path": str(broken)}))


def test_projector_warmup_holds_the_pretrained_parts_then_releases_them(pretrained, tiny_dataset) -> None:
    from datasets import load_from_disk

    from lws_core.model import LWSModel
    from lws_core.train.collator import LWSCollator

    cfg, b, e, _ = pretrained
    # pretrain.warmup.freeze_encoder=false: the encoder joins too (the default keeps it frozen; checked below)
    m = LWSModel.build(cfg.with_overrides({"model.backbone_path": b.out_dir, "model.encoder_path": e.out_dir,
                                           "pretrain.warmup.freeze_encoder": False}))
    rows = load_from_disk(str(tiny_dataset))["train"]
    batch = LWSCollator(m.tokenizer, m.spec.audio_tokens_per_unit, m.spec.unit_samples)([rows[0], rows[1]])

    def grads() -> tuple[float, float, float]:
        m.zero_grad(set_to_none=True)
        m(**batch).loss.backward()
        lm = sum(float(p.grad.abs().sum()) for p in m.lm.parameters() if p.grad is not None)
        enc = sum(float(p.grad.abs().sum()) for p in m.audio.encoder.parameters() if p.grad is not None)
        proj = sum(float(p.grad.abs().sum()) for p in m.audio.projector.parameters() if p.grad is not None)
        return lm, enc, proj

    m.hold_pretrained()
    lm, enc, proj = grads()
    assert lm == 0.0 and enc == 0.0 and proj > 0.0
    m.release_pretrained()
    lm, enc, proj = grads()
    assert lm > 0.0 and enc > 0.0 and proj > 0.0

    # the default: a pretrained encoder stays as it was pretrained after the warm-up; without one it trains
    m = LWSModel.build(cfg.with_overrides({"model.backbone_path": b.out_dir, "model.encoder_path": e.out_dir}))
    m.hold_pretrained()
    m.release_pretrained()
    lm, enc, proj = grads()
    assert lm > 0.0 and enc == 0.0 and proj > 0.0
    assert not any(p.requires_grad for p in m.audio.encoder.parameters())
    scratch = LWSModel.build(cfg.with_overrides({"model.backbone_path": b.out_dir}))
    assert all(p.requires_grad for p in scratch.audio.encoder.parameters())


def test_engine_hears_text_in_place_of_audio(tiny_model) -> None:
    from lws_core.engine.engine import Engine
    from lws_core.engine.types import EngineConfig

    eng = Engine.from_dir(tiny_model, config=EngineConfig(tts="none"))
    audio = np.zeros(3 * eng.unit_samples, dtype=np.float32)
    tok, k = eng.model.tokenizer, eng.model.spec.audio_tokens_per_unit
    words = tok.encode_text(" what is forty two")
    slots = [*words, *[tok.special.audio] * (k - len(words))]
    res = eng.simulate(audio, heard=[slots, [tok.special.audio] * k, [tok.special.audio] * k])
    assert len(res.units) == 3
    with eng.session() as s:
        before = s.context_tokens
        s.step(np.zeros(eng.unit_samples, dtype=np.float32), heard=slots)
        assert s.context_tokens - before >= 1 + k
        with pytest.raises(InputError, match="slots"):
            s.step(np.zeros(eng.unit_samples, dtype=np.float32), heard=words)


def test_lws_stage_from_the_stand_ins_reports_the_ceiling_and_cascade(pretrained, tiny_dataset, tmp_path) -> None:
    """Train (projector warm-up, then joint) from both checkpoints, save, load, and evaluate: the report
    scores the backbone it started from on text and on the encoder's transcript beside LWS."""
    from lws_core.eval.internal import evaluate
    from lws_core.model import LWSModel
    from lws_core.train import train

    cfg, b, e, _ = pretrained
    lws_cfg = cfg.with_overrides({
        "model.backbone_path": b.out_dir, "model.encoder_path": e.out_dir, "train.backend": "torch", "train.max_steps": 4,
        "pretrain.warmup.projector_steps": 2, "pretrain.warmup.rewarm_steps": 1, "eval.limit": 3, "eval.fdb_probe": False,
    })
    s = train(lws_cfg, tiny_dataset, tmp_path / "m", progress=False)
    assert s.steps == 4
    m = LWSModel.load(tmp_path / "m")
    assert m.spec.bridge_vocab > 0 and m.spec.audio_context_s == lws_cfg.model.audio_context_s
    assert m.tokenizer.lead_digit_segments  # the saved model keeps its backbone's segment rule
    assert m.spec.backbone_source == b.out_dir and m.spec.encoder_source == e.out_dir
    ev = evaluate(lws_cfg, tmp_path / "m", tiny_dataset, tmp_path / "ev", progress=False)
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "Capability liberation" in report and "text ceiling" in report
    assert any(k.startswith("text_ceiling_accuracy") for k in ev.metrics), sorted(ev.metrics)
    assert any(k.startswith("cascade_accuracy") for k in ev.metrics)
    # per session too, so LWS and each mode pair on the same sessions (benchmarks/paired_modes.py)
    from lws_core.eval.sessions import SessionScores

    scores = SessionScores.read(tmp_path / "ev")
    for mode in ("text_ceiling", "cascade"):
        assert scores.value(f"{mode}_accuracy") == pytest.approx(ev.metrics[f"{mode}_accuracy"])
        assert set(scores.metrics[f"{mode}_accuracy"]) >= set(scores.metrics.get("task_accuracy", {}))


def test_packed_rows_train_on_exactly_what_separate_sessions_would() -> None:
    """Packing several sessions into one row changes nothing the model sees: per-session logits equal
    each session run alone (block-diagonal mask, positions from 0), and each session is packed once."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lws_core.train.pretrain_backbone import pack, packed_batch

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rows = []
    for n in (37, 5, 64, 20, 51, 9):
        ids = rng.integers(10, 60, n).tolist()
        rows.append((ids, [t if k % 2 else -100 for k, t in enumerate(ids)]))
    groups = pack(rows, rng.permutation(len(rows)), 96)
    assert sorted(i for g in groups for i in g) == list(range(len(rows)))
    assert all(sum(len(rows[i][0]) for i in g) <= 96 for g in groups)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, pad_token_id=0)).eval()
    batch = packed_batch(rows, groups, 0, 96)
    with torch.no_grad():
        packed = lm(**{k: v for k, v in batch.items() if k != "labels"}).logits
        for r, g in enumerate(groups):
            at = 0
            for i in g:
                n = len(rows[i][0])
                alone = lm(input_ids=torch.tensor([rows[i][0]])).logits[0]
                assert torch.allclose(packed[r, at : at + n], alone, atol=1e-5), (r, i)
                assert batch["labels"][r, at : at + n].tolist() == rows[i][1]
                at += n
            assert (batch["labels"][r, at:] == -100).all()


def test_drill_rows_hold_only_true_facts_in_the_notes_syntax_and_fit_their_row() -> None:
    """Every drill line is a true statement (a wrong "fact" would teach the backbone a wrong answer), every
    kind of fact occurs, and a row is filled close to ``row_len`` without passing it."""
    import re

    from lws_core.data.budget import budget_tokenizer
    from lws_core.train.drills import drill_row, fact

    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(2000):
        line = fact(rng)
        assert line.endswith("\n")
        if m := re.fullmatch(r"(\d+) ([*+-]) (\d+) = (\d+)\n", line):
            a, op, b, r = int(m[1]), m[2], int(m[3]), int(m[4])
            assert r == {"*": a * b, "+": a + b, "-": a - b}[op], line
            kinds.add(op)
        else:
            m = re.fullmatch(r"(\d+) vs (\d+): (\d+) is (larger|bigger|smaller)\n", line)
            assert m, line
            a, b, r = int(m[1]), int(m[2]), int(m[3])
            assert r == (min(a, b) if m[4] == "smaller" else max(a, b)), line
            kinds.add("vs")
    assert kinds == {"*", "+", "-", "vs"}
    tok = budget_tokenizer()
    ids, labels = drill_row(rng, tok.encode_text, 256)
    assert 230 <= len(ids) <= 256 and labels == ids
    assert tok.decode_text(ids).count("\n") >= 15


def test_copy_rows_label_only_the_written_copy_of_what_was_heard() -> None:
    """Each episode: heard words between <|audio|> slots (unlabelled), then the same words as a note line
    (labelled), so copying is the only way to lower the loss on it; a row fits ``row_len``."""
    from lws_core.data.budget import budget_tokenizer
    from lws_core.schema import IGNORE_INDEX
    from lws_core.train.drills import copy_row

    tok = budget_tokenizer()
    ids, labels = copy_row(np.random.default_rng(0), tok.encode_text, tok.special.audio, 256)
    assert len(ids) == len(labels) and 200 <= len(ids) <= 256
    assert tok.special.audio in ids
    written = tok.decode_text([i for i in labels if i != IGNORE_INDEX]).splitlines()
    heard = tok.decode_text([i for i, y in zip(ids, labels, strict=True) if y == IGNORE_INDEX and i != tok.special.audio])
    assert len(written) >= 5 and all(line.startswith("- ") for line in written)
    # the heard words, in order, are exactly the notes' words
    assert heard.split() == [w for line in written for w in line[2:].split()]
    assert all(labels[i] == ids[i] for i in range(len(ids)) if labels[i] != IGNORE_INDEX)


def test_recogniser_windows_are_built_per_session_for_the_kept_units_only() -> None:
    """The kept units' windows equal those cut from all sessions' units at once (left context never
    crosses a session start), without ever holding every unit's window."""
    from lws_core.train.pretrain_encoder import _kept_windows, _Session

    rng = np.random.default_rng(0)
    sessions = [_Session(rng.standard_normal((n, 8)).astype(np.float32), [""] * n, [[]] * n) for n in (3, 1, 4)]
    units = np.concatenate([s.units for s in sessions])
    first = np.zeros(len(units), dtype=bool)
    first[[0, 3, 4]] = True
    keep = np.array([0, 2, 3, 5, 7])
    want = context_windows(torch.from_numpy(units), first, 12)[keep]
    assert torch.equal(_kept_windows(sessions, keep, 12), want)


def test_recogniser_on_precomputed_features_matches_it_on_audio() -> None:
    """Pretraining computes each window's log-mel once and trains on those features: the same outputs as on
    the audio, in training mode too (no augmentation on by default)."""
    from lws_core.train.pretrain_encoder import _features, build_recognizer

    torch.manual_seed(0)
    rec = build_recognizer("tiny", None, 1600, 800, 16000)
    windows = torch.randn(5, 2400) * 0.1
    feats = _features(rec.speech.featurizer, windows, chunk=2)
    for mode in (rec.eval, rec.train):
        mode()
        torch.testing.assert_close(rec.from_features(feats), rec(windows))


def test_aligned_path_emits_each_word_as_it_ends_and_decodes_to_the_transcript() -> None:
    """The dense target: symbols end at the word's end position; equal neighbours get a blank between them,
    so collapsing the path (greedy CTC decoding) gives back exactly the heard symbols."""
    from lws_core.model.asr import BLANK, aligned_path

    items = [([5, 5], 0.50), ([5], 0.52), ([3, 4], 0.99), ([], 0.3)]
    path = aligned_path(items, 20)
    assert len(path) == 20
    assert path[10] == 5 and path[19] == 4 and path[18] == 3
    collapsed, prev = [], BLANK
    for s in path:
        if s != prev and s != BLANK:
            collapsed.append(s)
        prev = s
    assert collapsed == [5, 5, 5, 3, 4]
    assert aligned_path([], 7) == [BLANK] * 7


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(
        st.tuples(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.floats(0.0, 1.0), st.floats(0.0, 0.6)),
        max_size=5,
    ),
    spread=st.booleans(),
)
def test_aligned_path_always_collapses_to_the_heard_symbols(words, spread) -> None:  # noqa: ANN001
    """Whatever the timings (words that began in the previous unit, crowded ends, equal neighbours), greedy CTC
    decoding of the dense target gives back exactly the unit's symbols in order, with either placement."""
    from lws_core.model.asr import BLANK, aligned_path

    items, t = [], 0.0
    for ids, gap, dur in words:  # words in time order, each ending after the last one
        t = min(1.0 - 1e-6, t + gap / 5)
        items.append((ids, t, t - dur))
    fit = sum(len(ids) * 2 for ids, *_ in items) <= 20  # room for every symbol and a blank after each
    path = aligned_path(items, 20, spread)
    assert len(path) == 20
    collapsed, prev = [], BLANK
    for s in path:
        if s != prev and s != BLANK:
            collapsed.append(s)
        prev = s
    heard = [i for ids, *_ in items for i in ids]
    if fit:
        assert collapsed == heard
    else:  # a crowded unit drops symbols past its end, never reorders or invents one
        assert all(a in heard for a in collapsed) and len(collapsed) <= len(heard)


def test_spread_alignment_emits_a_numbers_tens_digit_where_its_tens_word_ends() -> None:
    """'35' said over positions 6..18 ("thirty-five"): ``Ġ3`` mid-span, ``5`` at the end; the end-aligned
    default puts both at the end. A word that began in the previous unit is spread over the unit's part."""
    from lws_core.model.asr import BLANK, aligned_path

    tens, five = 30, 5
    end = aligned_path([([tens, five], 0.9, 0.3)], 20)
    assert end.index(tens) == 17 and end.index(five) == 18
    spread = aligned_path([([tens, five], 0.9, 0.3)], 20, spread=True)
    assert spread.index(tens) == 12 and spread.index(five) == 18
    assert aligned_path([([7, 8], 0.2, -0.5)], 20, spread=True)[:5] == [BLANK, BLANK, 7, BLANK, 8]
    assert aligned_path([([7, 8], 0.9)], 20, spread=True) == aligned_path([([7, 8], 0.9)], 20)  # no start: at the end


def test_cascade_slots_keep_a_words_tokens_together_where_it_ends() -> None:
    """The cascade lays out what the recogniser emitted as the text view lays out heard words: "35" emitted
    as ``Ġ3`` at position 5 and ``5`` at position 15 sits in two adjacent slots ending at position 15's slot."""
    from lws_core.model.asr import CTCVocab, slots_from_path

    vocab = CTCVocab("tokens", ["\u01203", "5", "\u0120by"])
    vocab.token_ids = [103, 105, 200]
    filler = 1
    slots = slots_from_path([(1, 5), (2, 15), (3, 19)], vocab, 20, 10, filler)
    assert slots == [filler] * 6 + [103, 105, filler, 200]
    assert slots_from_path([], vocab, 20, 10, filler) == [filler] * 10


def test_freq_warp_moves_formants_within_its_range_and_only_while_training() -> None:
    """The voice perturbation stretches the mel axis: a peak at bin 20 lands within 20 / (1 ± w), at
    different bins for different examples; w = 0 is the identity, and an encoder in eval mode never warps."""
    from lws_core.model.asr import freq_warp
    from lws_core.train.pretrain_encoder import build_recognizer

    torch.manual_seed(0)
    feats = torch.zeros(64, 40, 8)
    feats[:, 20] = 1.0
    assert torch.equal(freq_warp(feats, 0.0), feats)
    peaks = freq_warp(feats, 0.1).argmax(dim=1)[:, 0]
    assert peaks.min() >= 18 and peaks.max() <= 23 and len(set(peaks.tolist())) >= 3
    rec = build_recognizer("tiny", None, 1600, 0, 16000)
    rec.speech.freq_warp = 0.3
    audio = torch.randn(2, 1600)
    rec.eval()
    with torch.no_grad():
        assert torch.equal(rec.speech(audio), rec.speech(audio))
    rec.train()
    with torch.no_grad():
        assert not torch.equal(rec.speech(audio), rec.speech(audio))
        rec.speech.freq_warp = 0.0  # and the difference was the warp's (no dropout in training mode)
        assert torch.equal(rec.speech(audio), rec.speech(audio))


def test_encoder_dropout_acts_only_while_pretraining_and_is_not_saved(tmp_path: Path) -> None:
    """``pretrain.encoder.dropout`` perturbs the training forward; switched off, the same weights give
    the same outputs in training and evaluation mode, and a saved recogniser's config carries none."""
    from lws_core.train.pretrain_encoder import build_recognizer, set_dropout

    torch.manual_seed(0)
    rec = build_recognizer("tiny", None, 1600, 800, 16000)
    windows = torch.randn(3, 2400) * 0.1
    rec.eval()
    ref = rec(windows)
    set_dropout(rec.speech.encoder, 0.3)
    rec.train()
    assert not torch.allclose(rec(windows), ref)
    rec.eval()
    torch.testing.assert_close(rec(windows), ref)  # evaluation never drops
    set_dropout(rec.speech.encoder, 0.0)
    rec.train()
    torch.testing.assert_close(rec(windows), ref)
    rec.speech.encoder.save_pretrained(str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["dropout"] == saved["activation_dropout"] == saved["attention_dropout"] == 0.0


def test_recogniser_features_in_session_groups_match_all_windows_at_once() -> None:
    """The stage computes the kept windows' features a few sessions at a time (memory); the features are
    those of every kept window cut at once, in the same order, whatever the group size."""
    from lws_core.train.pretrain_encoder import (
        _features,
        _kept_features,
        _kept_windows,
        _Session,
        build_recognizer,
    )

    rng = np.random.default_rng(1)
    sessions = [_Session((0.1 * rng.standard_normal((n, 1600))).astype(np.float32), [""] * n, [[]] * n) for n in (3, 1, 4, 2, 5)]
    keep = np.array([0, 2, 3, 5, 6, 7, 9, 12, 14])
    rec = build_recognizer("tiny", None, 1600, 800, 16000)
    want = _features(rec.speech.featurizer, _kept_windows(sessions, keep, 800))
    for chunk in (1, 2, 4, 100):
        torch.testing.assert_close(_kept_features(rec.speech.featurizer, sessions, keep, 800, chunk=chunk), want)


def test_simulated_mishearing_spares_numbers_and_what_the_answer_repeats_and_keeps_the_slots() -> None:
    """``pretrain.backbone.heard_noise``: a word the answer does not repeat is dropped or swapped for a training
    word; numbers, slot values and words said back stay; the labels and the text view's layout do not change."""
    from lws_core.data.budget import budget_tokenizer
    from lws_core.data.tasks import phrasing_words
    from lws_core.model.asr import heard_slots
    from lws_core.train.pretrain_backbone import mishearing, text_view

    said = ["Tell", "me", "which", "is", "larger:", "38", "or", "98."]
    words = [Word(text=w, start=0.2 * i, end=0.2 * i + 0.15) for i, w in enumerate(said)]
    s = Session(units=[Unit(), Unit(write="- 38 or 98\n**Answer:** 98\n"),
                       Unit(state="speak", say="98 is larger", eot=True)], user_words=words)
    pool = phrasing_words()
    assert "expressed" not in pool and "larger" not in pool and "kilograms" not in pool  # held-out and slot words
    tok = budget_tokenizer()
    heard = [heard_form([w]) for w in said]
    seen: set[str] = set()
    for seed in range(20):
        m = mishearing(s, 1.0, np.random.default_rng(seed), pool)
        out = [m(h) for h in heard]
        assert out[4:] == ["larger", "38", "or", "98"]  # a slot word, the numbers, and "or", which the notes repeat
        assert all(o == "" or o in pool for o in out[:4])
        seen.update(out[:4])
        clean, noisy = text_view(s, tok, 10, 1024), text_view(s, tok, 10, 1024, mishearing(s, 1.0, np.random.default_rng(seed), pool))
        assert len(noisy[0]) == len(clean[0]) and noisy[1] == clean[1]  # same layout, same targets
    assert "" in seen and len(seen - {""}) > 3  # both kinds of error, from the pool
    for seed in range(5):  # ``pretrain.backbone.heard_swap``: drops only at 0, swaps only at 1 ("is" is said back)
        drop, swap = mishearing(s, 1.0, np.random.default_rng(seed), pool, 0.0), mishearing(s, 1.0, np.random.default_rng(seed), pool, 1.0)
        assert [drop(h) for h in heard[:4]] == ["", "", "", "is"]
        assert all(w in pool for w in (swap(h) for h in heard[:3])) and [swap(h) for h in heard[3:]] == ["is", "larger", "38", "or", "98"]
    m0 = mishearing(s, 0.0, np.random.default_rng(0), pool)
    assert heard_slots(s, tok, 10, m0) == heard_slots(s, tok, 10)  # rate 0: the clean view


def test_a_filler_word_is_never_a_recognisers_target() -> None:
    """A session's filler words (``meta["fillers"]``) are left out of every unit's transcript, tokens and timed
    items: the recogniser learns to write nothing for a word it is not taught; the other words stay where they were."""
    from lws_core.data.budget import budget_tokenizer
    from lws_core.train.pretrain_encoder import recogniser_targets

    said = ["Tell", "me", "4", "system", "kilograms", "in", "grams", "deep."]
    words = [Word(text=w, start=0.3 * i, end=0.3 * i + 0.25) for i, w in enumerate(said)]
    units = [Unit(), Unit(), Unit(write="- 4 kilograms to grams\n"), Unit(state="speak", say="4000 grams", eot=True)]
    tok = budget_tokenizer()
    plain = recogniser_targets(Session(units=units, user_words=words), tok)
    filled = recogniser_targets(Session(units=units, user_words=words, meta={"fillers": ["deep", "system"]}), tok)
    assert " ".join(t for t in plain[0] if t) == "tell me 4 system kilograms in grams deep"
    assert " ".join(t for t in filled[0] if t) == "tell me 4 kilograms in grams"
    assert [tok.encode_text(" " + t) if t else [] for t in filled[0]] == filled[1]
    assert sum(len(u) for u in filled[2]) == sum(len(u) for u in plain[2]) - 2  # two items fewer, the rest as they were
    kept = [it for u in plain[2] for it in u if it[0] not in (tok.encode_text(" system"), tok.encode_text(" deep"))]
    assert kept == [it for u in filled[2] for it in u]

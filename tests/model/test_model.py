"""The LWS model on its own: forward with per-channel losses, save/load, schema check, freezing, LoRA merged on save."""

from __future__ import annotations

import json

import pytest
import torch

from lws_core.config import LWSConfig
from lws_core.errors import InputError, SchemaMismatchError
from lws_core.model import LWSModel
from lws_core.train.collator import LWSCollator
from tests.model import synthetic


@pytest.fixture(scope="module")
def tok():
    return synthetic.tokenizer()


@pytest.fixture(scope="module")
def cfg():
    return LWSConfig()


@pytest.fixture(scope="module")
def batch(tok):
    return LWSCollator(tok, 10, synthetic.UNIT_SAMPLES)(synthetic.rows(2))


def _build(cfg, tok, **over):  # noqa: ANN001, ANN202
    torch.manual_seed(0)
    return LWSModel.build(cfg.with_overrides(over) if over else cfg, tokenizer=tok)


def test_forward_reports_every_channel_and_ignores_unlabelled_positions(cfg, tok, batch):
    m = _build(cfg, tok)
    out = m(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert set(out.channel_losses) == {"state", "write_listen", "write_respond", "say"}
    assert torch.isfinite(out.loss)
    # loss depends only on labelled positions: changing the ids of unlabelled padding changes nothing
    b2 = dict(batch)
    b2["labels"] = batch["labels"].clone()
    b2["labels"][b2["channels"] == 0] = -100
    assert torch.allclose(m(**b2).loss, out.loss)
    # the audio really enters the model: other audio, other state logits
    b3 = dict(batch, unit_audio=torch.zeros_like(batch["unit_audio"]))
    assert not torch.allclose(m(**b3).logits, out.logits)


def test_save_load_round_trip_same_outputs(cfg, tok, batch, tmp_path):
    m = _build(cfg, tok).eval()
    m.save(tmp_path / "m")
    back = LWSModel.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(m(**batch).logits, back(**batch).logits, atol=1e-5)
    assert back.spec == m.spec
    assert back.tokenizer.special.as_mapping() == tok.special.as_mapping()


def test_load_refuses_other_schema_and_missing_or_broken_dirs(cfg, tok, tmp_path):
    with pytest.raises(InputError, match="not found"):
        LWSModel.load(tmp_path / "nope")
    d = _build(cfg, tok).save(tmp_path / "m")
    spec = json.loads((d / "lws_model.json").read_text())
    (d / "lws_model.json").write_text(json.dumps(dict(spec, schema_version="lws-v0")))
    with pytest.raises(SchemaMismatchError, match="lws-v0"):
        LWSModel.load(d)
    (d / "lws_model.json").write_text(json.dumps(dict(spec, special_tokens={**spec["special_tokens"], "listen": 3})))
    with pytest.raises(SchemaMismatchError, match="special ids"):
        LWSModel.load(d)
    # a spec with a setting this build does not know (one an experiment added and later removed): one line, no trace
    (d / "lws_model.json").write_text(json.dumps(dict(spec, bridge_layout="sum")))
    with pytest.raises(InputError, match=r"not a model this code can load \(bridge_layout: Extra inputs") as e:
        LWSModel.load(d)
    assert "\n" not in str(e.value)
    (d / "lws_model.json").write_text(json.dumps(spec))
    (d / "audio.safetensors").unlink()
    with pytest.raises(InputError, match="incomplete or corrupt"):
        LWSModel.load(d)


def test_build_refuses_missing_paths(cfg, tok, tmp_path):
    with pytest.raises(InputError, match="backbone_path"):
        LWSModel.build(cfg.with_overrides({"model.backbone_path": str(tmp_path / "x")}), tokenizer=tok)
    with pytest.raises(InputError, match="encoder_path"):
        LWSModel.build(cfg.with_overrides({"model.encoder_path": str(tmp_path / "x")}), tokenizer=tok)


def test_freezing(cfg, tok):
    m = _build(cfg, tok, **{"model.freeze_encoder": True})
    assert not any(p.requires_grad for p in m.audio.encoder.parameters())
    assert all(p.requires_grad for p in m.audio.projector.parameters())
    assert all(p.requires_grad for p in m.lm.parameters())
    fb = _build(cfg, tok, **{"model.freeze_backbone": True})
    frozen = [n for n, p in fb.lm.named_parameters() if not p.requires_grad]
    assert any("layers.0.self_attn" in n for n in frozen)
    assert fb.lm.get_input_embeddings().weight.requires_grad  # new schema tokens must still learn
    assert all(p.requires_grad for p in fb.audio.parameters())


def test_lora_trains_adapters_and_schema_token_rows_and_saves_merged(cfg, tok, batch, tmp_path):
    m = _build(cfg, tok, **{"model.lora.enabled": True, "model.lora.r": 4})
    trainable = [n for n, p in m.lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n or "trainable_tokens_delta" in n for n in trainable)
    assert any("embed_tokens" in n and "trainable_tokens" in n for n in trainable)  # the schema tokens' rows learn
    ids = sorted(set(tok.special.as_mapping().values()))
    before = {n: p.detach().clone() for n, p in m.lm.named_parameters()}
    emb0 = m.lm.get_input_embeddings()(torch.arange(tok.vocab_size)).detach().clone()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # a few real optimizer steps on the LWS loss
        opt.zero_grad()
        m(**batch).loss.backward()
        opt.step()
    emb1 = m.lm.get_input_embeddings()(torch.arange(tok.vocab_size)).detach()
    other = torch.tensor([i for i in range(tok.vocab_size) if i not in ids])
    # pad and the audio placeholder never reach the LM (masked / replaced by audio embeddings): no gradient
    seen = [i for i in ids if i not in (tok.special.pad, tok.special.audio) and bool((batch["input_ids"] == i).any())]
    assert len(seen) >= 4  # listen, speak, end, audio ... appear in every session
    assert (emb1[seen] - emb0[seen]).abs().amax(dim=1).min() > 1e-3, "schema-token embedding rows must train"
    assert torch.equal(emb1[other], emb0[other]), "rows of ordinary tokens stay frozen"
    for n, p in m.lm.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), f"{n} is excluded from the adapter but changed"
    m.eval()
    with torch.no_grad():
        want = m(**batch).logits
    m.save(tmp_path / "lora")
    files = json.loads((tmp_path / "lora" / "lm" / "config.json").read_text())
    assert files["architectures"] == ["LlamaForCausalLM"]
    assert not (tmp_path / "lora" / "lm" / "adapter_config.json").exists()  # merged, not an adapter
    assert any("lora" in n for n, _ in m.named_parameters())  # saving did not strip the live model's adapters
    back = LWSModel.load(tmp_path / "lora")
    assert not any("lora" in n or "trainable_tokens" in n for n, _ in back.named_parameters())
    assert torch.allclose(back.lm.get_input_embeddings().weight[ids], emb1[ids], atol=1e-6)  # token rows merged
    with torch.no_grad():
        assert torch.allclose(back(**batch).logits, want, atol=1e-4)


def test_mel_filters_equal_transformers_mel_filter_bank():
    """The hand-written Slaney filters (written to keep transformers out of the engine's start-up) are Whisper's."""
    import warnings

    from transformers.audio_utils import mel_filter_bank

    from lws_core.model.features import N_FFT, _mel_filters

    for sr in (8000, 16000, 24000):
        for n in (24, 40, 80, 128):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # transformers warns of empty filters at 128 bins
                ref = mel_filter_bank(num_frequency_bins=1 + N_FFT // 2, num_mel_filters=n, min_frequency=0.0,
                                      max_frequency=sr / 2, sampling_rate=sr, norm="slaney", mel_scale="slaney")
            torch.testing.assert_close(_mel_filters(sr, n), torch.tensor(ref, dtype=torch.float32).T, atol=0, rtol=0)

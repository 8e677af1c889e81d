"""A real local backbone and Whisper directory (tiny, random-init, saved here) become an LWS model offline."""

from __future__ import annotations

import shutil

import pytest
import torch

from lws_core.config import LWSConfig
from lws_core.errors import InputError
from lws_core.model import LWSModel
from lws_core.train.collator import LWSCollator
from tests.model import synthetic


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A Qwen3 causal LM with its own BPE tokenizer (no schema tokens) and a Whisper model, as HF saves them
    (with the feature extractor's preprocessor_config.json, whose sampling rate the build checks)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen3Config,
        Qwen3ForCausalLM,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperModel,
    )

    root = tmp_path_factory.mktemp("hf")
    lm_dir, wh_dir = root / "qwen3", root / "whisper"
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # as Qwen's tokenizer
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(synthetic.CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"],
                                                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", eos_token="<eos>")
    tok.save_pretrained(str(lm_dir))
    torch.manual_seed(0)
    Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, head_dim=16, intermediate_size=128,
                                 tie_word_embeddings=True)).save_pretrained(str(lm_dir))
    WhisperModel(WhisperConfig(d_model=64, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
                               decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80, vocab_size=64,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)).save_pretrained(str(wh_dir))
    WhisperFeatureExtractor(feature_size=80, sampling_rate=16000).save_pretrained(str(wh_dir))
    return lm_dir, wh_dir, len(tok)


def test_build_from_local_backbone_and_whisper_and_round_trip(dirs, tmp_path):
    from safetensors.torch import load_file

    lm_dir, wh_dir, base_vocab = dirs
    cfg = LWSConfig().with_overrides({"model.preset": "qwen-0.5b", "model.backbone_path": str(lm_dir),
                                      "model.encoder_path": str(wh_dir)})
    m = LWSModel.build(cfg).eval()
    assert m.tokenizer.vocab_size > base_vocab  # the schema tokens were added to the backbone's own tokenizer
    assert m.lm.get_input_embeddings().weight.shape[0] == m.tokenizer.vocab_size  # and the embeddings resized
    assert m.spec.backbone_source == str(lm_dir) and m.spec.n_mels == 80
    saved_lm = load_file(str(lm_dir / "model.safetensors"))
    k = "model.layers.1.mlp.down_proj.weight"
    assert torch.equal(m.lm.state_dict()[k], saved_lm[k])  # pretrained weights, not a fresh init
    saved_wh = load_file(str(wh_dir / "model.safetensors"))
    assert torch.equal(m.audio.encoder.conv1.weight, saved_wh["encoder.conv1.weight"])
    # the memory pre-check sizes exactly this model on the meta device, without loading it
    from lws_core.model.sizing import model_shape

    assert model_shape(cfg, m.tokenizer.vocab_size).parameters == m.num_parameters()
    lora = cfg.with_overrides({"model.lora.enabled": True, "model.lora.r": 2})
    ml = LWSModel.build(lora, tokenizer=m.tokenizer)
    shape = model_shape(lora, m.tokenizer.vocab_size, token_ids=sorted(set(m.tokenizer.special.as_mapping().values())))
    assert (shape.parameters, shape.trainable) == (ml.num_parameters(), sum(p.numel() for p in ml.parameters() if p.requires_grad))
    batch = LWSCollator(m.tokenizer, 10, synthetic.UNIT_SAMPLES)(synthetic.rows(2))
    with torch.no_grad():
        out = m(**batch)
    assert torch.isfinite(out.loss) and torch.isfinite(out.logits).all()
    back = LWSModel.load(m.save(tmp_path / "lws"))
    with torch.no_grad():
        assert torch.allclose(back(**batch).logits, out.logits, atol=1e-5)


def test_bad_encoder_dir_is_one_line_before_the_backbone_loads(dirs, tmp_path):
    lm_dir, wh_dir, _ = dirs
    broken_lm = tmp_path / "broken_lm"
    shutil.copytree(lm_dir, broken_lm)
    (broken_lm / "model.safetensors").write_bytes(b"not safetensors")  # loading this backbone would fail differently
    not_whisper = tmp_path / "not_whisper"
    shutil.copytree(lm_dir, not_whisper, ignore=shutil.ignore_patterns("*.safetensors"))
    for enc, needle in ((not_whisper, "describes a 'qwen3' model, not Whisper"), (tmp_path, "not a Whisper directory")):
        cfg = LWSConfig().with_overrides({"model.preset": "qwen-0.5b", "model.backbone_path": str(broken_lm),
                                          "model.encoder_path": str(enc)})
        with pytest.raises(InputError, match=needle) as e:
            LWSModel.build(cfg)
        assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="cannot load a causal LM"):  # the good encoder passes; then the backbone fails
        LWSModel.build(LWSConfig().with_overrides({"model.preset": "qwen-0.5b", "model.backbone_path": str(broken_lm),
                                                   "model.encoder_path": str(wh_dir)}))

"""The decode-only (lean) load: the same function as the transformers classes, without importing their modeling code.

``lws simulate`` / ``lws serve`` load models this way for start-up time; these checks
compare it with the HF classes on the same saved weights (random init: any weights must agree).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


def _hf_backbones():
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    small = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512)
    return {
        "llama": lambda: LlamaForCausalLM(LlamaConfig(**small, num_key_value_heads=4, rope_theta=5000.0)),
        "llama-bias-gqa": lambda: LlamaForCausalLM(LlamaConfig(**small, num_key_value_heads=2, attention_bias=True, mlp_bias=True)),
        "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**small, num_key_value_heads=2)),  # q/k/v biases
        "qwen3-tied": lambda: Qwen3ForCausalLM(Qwen3Config(**small, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True)),
    }


@pytest.mark.parametrize("kind", list(_hf_backbones()))
def test_lean_backbone_decodes_as_the_hf_model(kind, tmp_path):
    """Prefill then token-by-token decode through FastPath: lean logits equal the HF model's own full forward."""
    from lws_core.engine.fastpath import FastPath, Feed
    from lws_core.model.lean import LeanCausalLM, lean_supported

    torch.manual_seed(0)
    hf = _hf_backbones()[kind]().eval()
    with torch.no_grad():  # random biases and norms, so a dropped bias or norm shows
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(0.0, 0.5)
    hf.save_pretrained(tmp_path)
    assert lean_supported(tmp_path)
    lean = LeanCausalLM.load(tmp_path)
    if kind == "qwen3-tied":
        assert lean.lm_head.weight is lean.model.embed_tokens.weight
    fast = FastPath(lean)
    assert FastPath.supports(lean)
    ids = torch.randint(0, 97, (1, 12))
    with torch.no_grad():
        ref = hf(input_ids=ids, use_cache=False).logits[0]
        emb = lean.get_input_embeddings()(ids[0])
        kv = fast.new_kv(64, torch.device("cpu"), torch.float32)
        got = [fast.forward([Feed(emb[:8], kv, 0)])[0]]
        got += [fast.forward([Feed(emb[i : i + 1], kv, i)])[0] for i in range(8, 12)]
    torch.testing.assert_close(torch.stack(got), ref[7:], atol=2e-5, rtol=1e-4)
    with pytest.raises(RuntimeError, match="fused path"):
        lean(input_ids=ids)


def test_lean_whisper_encoder_equals_hf(tmp_path):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from lws_core.model.lean import LeanWhisperEncoder, whisper_encoder_config

    torch.manual_seed(1)
    cfg = WhisperConfig(d_model=48, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=80, num_mel_bins=24, max_source_positions=30)
    hf = WhisperEncoder(cfg).eval()
    (tmp_path / "enc.json").write_text(cfg.to_json_string())
    lean = LeanWhisperEncoder(whisper_encoder_config(tmp_path / "enc.json"))
    lean.load_state_dict(hf.state_dict())
    x = torch.randn(3, 24, 60)
    with torch.no_grad():
        torch.testing.assert_close(lean(input_features=x).last_hidden_state, hf(input_features=x).last_hidden_state, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="60 feature frames"):
        lean(input_features=x[..., :50])


def test_engine_lean_load_runs_the_same_session(random_model_dir, speech):
    """The whole engine, loaded both ways from one saved model: identical units on real speech."""
    from lws_core.engine import Engine
    from lws_core.engine.types import EngineConfig
    from lws_core.model.lean import LeanCausalLM, LeanWhisperEncoder

    cfg = EngineConfig(tts="none", temperature=1.0, seed=3)  # sampled: the same draws need the same logits
    hf = Engine.from_dir(random_model_dir, config=cfg)
    lean = Engine.from_dir(random_model_dir, config=cfg, lean=True)
    assert isinstance(lean.model.lm, LeanCausalLM) and isinstance(lean.model.audio.encoder, LeanWhisperEncoder)
    assert lean.model.tokenizer.vocab_size == hf.model.tokenizer.vocab_size
    a, b = hf.simulate(speech).units, lean.simulate(speech).units
    assert [(u.state, u.write, u.say) for u in a] == [(u.state, u.write, u.say) for u in b]
    assert any(u.write or u.say for u in a)  # the comparison covered decoded text, not only states
    x = torch.from_numpy(np.stack([speech[: lean.model.audio.window_samples]] * 2))
    with torch.no_grad():
        torch.testing.assert_close(lean.model.audio(x), hf.model.audio(x), atol=1e-5, rtol=1e-4)


def test_compiled_decode_runs_the_lean_engine_on_the_same_logits(random_model_dir, speech):
    """engine.compile_decode in the engine `lws simulate` / `lws serve` load (lean, int8 copies on CPU):
    compiled at start-up, it runs a session, and its decode steps give the eager steps' logits."""
    from torch._dynamo.utils import counters

    from lws_core.engine import Engine
    from lws_core.engine.fastpath import FastPath, Feed
    from lws_core.engine.types import EngineConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a process whose torch threads differ from engine.threads (1), as the CLI's is
    try:
        eng = Engine.from_dir(random_model_dir, config=EngineConfig(tts="none", compile_decode=True), lean=True)
        fast = eng.fast_path
        assert eng.compile_s > 0 and fast._compiled is not None
        graphs = counters["stats"]["unique_graphs"]
        eng.use_threads()  # what `lws simulate` / `lws serve` do next: no compile inside the first session
        assert len(eng.simulate(speech[: 3 * eng.unit_samples]).units) == 3
        assert counters["stats"]["unique_graphs"] == graphs
    finally:
        torch.set_num_threads(threads)
    eager = FastPath(eng.model.lm, fast.weight_dtype)
    with torch.inference_mode():
        h = torch.randn(40, eng.model.lm.get_input_embeddings().weight.shape[1], generator=torch.Generator().manual_seed(5))
        kv_c, kv_e = (f.new_kv(64, h.device, torch.float32) for f in (fast, eager))
        fast.forward([Feed(h[:30], kv_c, 0, False)])
        eager.forward([Feed(h[:30], kv_e, 0, False)])
        for p in range(30, 40):
            c, e = fast.forward([Feed(h[p : p + 1], kv_c, p)])[0], eager.forward([Feed(h[p : p + 1], kv_e, p)])[0]
            torch.testing.assert_close(c, e, atol=1e-3, rtol=1e-3)


def test_unsupported_backbone_falls_back_to_transformers(random_model_dir, tmp_path):
    """A config the lean classes do not cover (here: scaled rotary) loads through transformers, unchanged."""
    import shutil

    from lws_core.engine import Engine
    from lws_core.model.lean import lean_supported

    m = tmp_path / "m"
    shutil.copytree(random_model_dir, m)
    cfg_file = m / "lm" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    cfg_file.write_text(json.dumps(cfg))
    assert lean_supported(random_model_dir / "lm") and not lean_supported(m / "lm")
    assert type(Engine.from_dir(m, lean=True).model.lm).__name__ == "LlamaForCausalLM"


def test_lean_load_of_a_corrupt_model_is_one_line(random_model_dir, tmp_path):
    import shutil

    from lws_core.errors import InputError
    from lws_core.model import LWSModel

    m = tmp_path / "m"
    shutil.copytree(random_model_dir, m)
    (m / "lm" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="incomplete or corrupt model"):
        LWSModel.load(m, lean=True)

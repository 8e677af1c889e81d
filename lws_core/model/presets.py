"""Model presets: sizes for CPU work, and real-backbone shapes for GPU users.

Real-backbone presets name local paths (nothing is downloaded). Without a path,
`qwen-0.5b` / `qwen-8b` build a random-init model of the same architecture,
which is what throughput benchmarks need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    lm_arch: str  # "llama" | "qwen2"
    lm: dict[str, Any]
    encoder: dict[str, Any] = field(default_factory=dict)
    trains_tokenizer: bool = True  # tiny/small train a BPE; real backbones extend their own


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny",
        "llama",
        dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, intermediate_size=768),
        dict(d_model=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=256, num_mel_bins=40),
    ),
    "small": Preset(
        "small",
        "llama",
        dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8, intermediate_size=1536),
        dict(d_model=256, encoder_layers=4, encoder_attention_heads=4, encoder_ffn_dim=1024, num_mel_bins=80),
    ),
    "qwen-0.5b": Preset(
        "qwen-0.5b",
        "qwen2",
        dict(
            hidden_size=896,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            intermediate_size=4864,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
        ),
        # whisper-base-shaped encoder
        dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048, num_mel_bins=80),
        trains_tokenizer=False,
    ),
    "qwen-8b": Preset(
        "qwen-8b",
        "qwen2",
        dict(
            hidden_size=4096,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            intermediate_size=12288,
            rope_theta=1000000.0,
        ),
        # whisper-medium-shaped encoder
        dict(d_model=1024, encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096, num_mel_bins=80),
        trains_tokenizer=False,
    ),
}


def lm_config(preset: Preset, vocab_size: int, pad_id: int, max_positions: int = 8192):  # noqa: ANN201
    from transformers import LlamaConfig, Qwen2Config

    cls = LlamaConfig if preset.lm_arch == "llama" else Qwen2Config
    return cls(vocab_size=vocab_size, pad_token_id=pad_id, max_position_embeddings=max_positions, **preset.lm)

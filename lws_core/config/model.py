"""Config section `model`: backbone, audio encoder, projector, freezing, LoRA."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lws_core.config.base import Section

PRESETS = ("tiny", "small", "qwen-0.5b", "qwen-8b")


class LoraConfig(Section):
    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)


class ModelConfig(Section):
    """Which model to build. Real-backbone presets only name local paths: nothing is downloaded."""

    preset: Literal["tiny", "small", "qwen-0.5b", "qwen-8b"] = "tiny"
    backbone_path: str | None = Field(None, description="Local HF causal-LM directory (overrides the preset's backbone).")
    encoder_path: str | None = Field(None, description="Local Whisper directory for a pretrained audio encoder.")
    audio_context_s: float = Field(
        0.5, ge=0.0, le=2.0, description="Seconds of the previous unit the audio encoder hears before each unit (left context)."
    )
    freeze_encoder: bool = False
    freeze_backbone: bool = False
    lora: LoraConfig = LoraConfig()

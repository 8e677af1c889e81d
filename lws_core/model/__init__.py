"""LWS model: any HF causal LM + Whisper-style per-unit audio encoder + projector; presets; save/load."""

from lws_core.model.lws_model import LWSModel, LWSOutput, ModelSpec, channel_losses
from lws_core.model.presets import PRESETS, Preset

__all__ = ["LWSModel", "LWSOutput", "ModelSpec", "PRESETS", "Preset", "channel_losses"]

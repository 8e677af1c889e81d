"""Model size from the config alone, without allocating a single weight.

The training memory pre-check must refuse a hopeless config (an 8B backbone on a
16 GB laptop) in a second, not after minutes spent reading weights into RAM. The
same LWS model is therefore built on PyTorch's ``meta`` device (shapes only, no
storage), with the real freezing and LoRA code applied, and its parameters counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lws_core.errors import InputError
from lws_core.model.audio_encoder import encoder_positions, whisper_config
from lws_core.model.presets import PRESETS, lm_config


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs to know about a model that has not been built."""

    parameters: int
    trainable: int
    lm_hidden: int
    lm_layers: int
    vocab: int
    encoder_width: int
    encoder_layers: int
    encoder_positions: int


def backbone_config(cfg, vocab_size: int, pad_id: int):  # noqa: ANN001, ANN201 - LWSConfig -> PretrainedConfig
    """The backbone's HF config (the preset's, or read from ``model.backbone_path``), with the final vocabulary."""
    from transformers import AutoConfig

    mc = cfg.model
    if mc.backbone_path is None:
        return lm_config(PRESETS[mc.preset], vocab_size, pad_id)
    path = Path(mc.backbone_path)
    if not path.is_dir():
        raise InputError(f"model.backbone_path not found: {path}")
    try:
        json.loads((path / "config.json").read_text())
        hf = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"model.backbone_path {path}: no usable config.json ({str(e).splitlines()[0][:160]})") from None
    hf.vocab_size = max(int(vocab_size), int(getattr(hf, "vocab_size", 0) or 0))
    return hf


def model_shape(cfg, vocab_size: int, pad_id: int = 0, token_ids: list[int] | None = None) -> ModelShape:  # noqa: ANN001
    """Parameter counts (all, trainable) of the model ``LWSModel.build(cfg)`` would build, computed on ``meta``.

    ``vocab_size`` is the final vocabulary (the schema tokenizer's); for a real
    backbone whose tokenizer is not loaded yet, its config's vocabulary plus the
    schema tokens is close enough for a memory estimate.
    """
    from transformers import AutoModelForCausalLM
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from lws_core.model.audio_encoder import UnitAudioEncoder
    from lws_core.model.lws_model import LWSModel, encoder_frozen

    mc, sc = cfg.model, cfg.schema_
    preset = PRESETS[mc.preset]
    unit_samples = int(round(sc.unit_s * sc.sample_rate))
    context_samples = int(round(mc.audio_context_s * sc.sample_rate))
    wcfg = whisper_config(preset.encoder, unit_samples + context_samples, mc.encoder_path)
    lcfg = backbone_config(cfg, vocab_size, pad_id)
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(lcfg)
        enc = WhisperEncoder(wcfg)
        audio = UnitAudioEncoder(enc, wcfg.num_mel_bins, unit_samples, sc.audio_tokens_per_unit, lcfg.hidden_size, sc.sample_rate,
                                 context_samples=context_samples, normalize=True)
        model = LWSModel(lm, audio, tokenizer=None, spec=None)  # type: ignore[arg-type]
        model.apply_freezing(encoder_frozen(cfg), mc.freeze_backbone)
        if mc.lora.enabled:
            model.enable_lora(mc.lora.r, mc.lora.alpha, mc.lora.dropout, token_ids=token_ids or list(range(16)))
    params = list({id(p): p for p in model.parameters()}.values())
    return ModelShape(
        parameters=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad),
        lm_hidden=int(lcfg.hidden_size),
        lm_layers=int(lcfg.num_hidden_layers),
        vocab=int(lcfg.vocab_size),
        encoder_width=int(wcfg.d_model),
        encoder_layers=int(wcfg.encoder_layers),
        encoder_positions=encoder_positions(unit_samples),
    )

"""Checks on user-given checkpoints that must fail in one line before any work starts.

A scheduled run should not synthesize data and pretrain for minutes, then
discover that ``model.backbone_path`` is not a causal LM, that its tokenizer
mangles digits, or that the encoder was made for 8 kHz audio. These checks read
configs and tokenizers only (no weights), so they take a second.
"""

from __future__ import annotations

import json
from pathlib import Path

from lws_core.errors import InputError


def check_model_paths(cfg) -> None:  # noqa: ANN001 - LWSConfig
    """Raise InputError for a backbone or encoder directory that cannot serve this config."""
    mc, sc = cfg.model, cfg.schema_
    if mc.backbone_path is not None:
        _check_backbone(Path(mc.backbone_path))
    if mc.encoder_path is not None:
        from lws_core.model.audio_encoder import check_encoder_dir, whisper_config
        from lws_core.model.lws_model import _check_encoder_meta
        from lws_core.model.presets import PRESETS

        check_encoder_dir(mc.encoder_path, sc.sample_rate)
        _check_encoder_meta(mc.encoder_path, sc.unit_s, mc.audio_context_s)
        unit = int(round(sc.unit_s * sc.sample_rate))
        whisper_config(PRESETS[mc.preset].encoder, unit + int(round(mc.audio_context_s * sc.sample_rate)), mc.encoder_path)
        weights = list(Path(mc.encoder_path).glob("*.safetensors")) + list(Path(mc.encoder_path).glob("*.bin"))
        if not weights:
            raise InputError(f"model.encoder_path {mc.encoder_path}: no weights (*.safetensors / *.bin)")


def _check_backbone(path: Path) -> None:
    from lws_core.schema import check_digits, extend_tokenizer

    if not path.is_dir():
        raise InputError(f"model.backbone_path not found: {path}")
    try:
        raw = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"model.backbone_path {path}: no readable config.json ({type(e).__name__}); not a Hugging Face checkpoint") from None
    try:
        from transformers import AutoConfig, AutoModelForCausalLM

        conf = AutoConfig.from_pretrained(str(path), local_files_only=True)
        if type(conf) not in AutoModelForCausalLM._model_mapping:
            raise InputError(f"model.backbone_path {path}: a {raw.get('model_type')!r} model is not a causal LM")
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"model.backbone_path {path}: cannot read its config ({str(e).splitlines()[0][:160]})") from None
    if not (list(path.glob("*.safetensors")) + list(path.glob("*.bin"))):
        raise InputError(f"model.backbone_path {path}: no weights (*.safetensors / *.bin)")
    check_digits(extend_tokenizer(path), where=f"tokenizer of {path}")

"""The LWS model: any Hugging Face causal LM + a per-unit audio encoder + projector.

The audio embeddings replace the ``<|audio|>`` placeholders in ``inputs_embeds``;
the LM itself is unchanged (the paper's point: behaviour comes from the token
schema, not from architecture).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors import SafetensorError
from torch import nn

from lws_core.errors import InputError, SchemaMismatchError
from lws_core.model.audio_encoder import (
    UnitAudioEncoder,
    build_whisper_encoder,
    check_encoder_dir,
    whisper_config,
)
from lws_core.model.presets import PRESETS, lm_config
from lws_core.schema import (
    CHANNEL_NAMES,
    IGNORE_INDEX,
    SCHEMA_VERSION,
    Channel,
    SchemaTokenizer,
    check_digits,
)

SPEC_FILE = "lws_model.json"
DEFAULT_BPE_VOCAB = 1024  # upper bound of the data pipeline's budget tokenizer (lws_core.data.budget.BPE_VOCAB)


def _ctc_bridge(path: str, tokenizer: SchemaTokenizer, lm: nn.Module) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
    """The CTC head of an encoder made by ``lws pretrain encoder`` over LM tokens, and the LM embedding rows
    of its symbols (row 0: ``<|audio|>`` for the blank). None for any other encoder (a real Whisper).

    Symbols are matched by token string, so a backbone whose tokenizer lacks one of
    them is refused in one line rather than wired to the wrong rows.
    """
    from safetensors.torch import load_file

    from lws_core.model.asr import CTCVocab

    vocab_file, head_file = Path(path) / "ctc_vocab.json", Path(path) / "ctc_head.safetensors"
    if not (vocab_file.is_file() and head_file.is_file()):
        return None
    vocab = CTCVocab.from_json(json.loads(vocab_file.read_text()))
    if vocab.kind != "tokens":
        return None
    ids = tokenizer.hf.convert_tokens_to_ids(vocab.symbols)
    unk = getattr(tokenizer.hf, "unk_token_id", None)
    missing = [s for s, i in zip(vocab.symbols, ids, strict=True) if i is None or i == unk]
    if missing:
        raise InputError(f"model.encoder_path {path}: its recogniser emits tokens the backbone's tokenizer lacks ({missing[:3]})")
    emb = lm.get_input_embeddings().weight.detach()
    rows = emb[[tokenizer.special.audio, *ids]].clone().float()
    try:
        head = load_file(str(head_file))
    except (OSError, SafetensorError) as e:
        raise InputError(f"model.encoder_path {path}: unreadable CTC head ({str(e).splitlines()[0]})") from None
    return head, rows


def _check_encoder_meta(path: str, unit_s: float, context_s: float) -> None:
    """An encoder from ``lws pretrain encoder`` was trained for one unit length and left context: refuse others."""
    from lws_core.model.asr import EncoderMeta

    meta = EncoderMeta.load(Path(path))
    if meta is None:
        return
    if abs(meta.unit_s - unit_s) > 1e-9 or abs(meta.context_s - context_s) > 1e-9:
        raise InputError(
            f"model.encoder_path {path}: pretrained for {meta.unit_s} s units with {meta.context_s} s of left context, "
            f"but the config asks for {unit_s} s units and model.audio_context_s={context_s}"
        )


def _load_hf(directory: Path, dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
    """The backbone and a (weightless) Whisper encoder through transformers' classes."""
    from transformers import AutoModelForCausalLM, WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one model load is not "long work"; keep CLI output clean
    lm = AutoModelForCausalLM.from_pretrained(str(directory / "lm"), local_files_only=True, dtype=dtype)
    return lm, WhisperEncoder(WhisperConfig.from_json_file(str(directory / "encoder_config.json")))


def _load_lean(directory: Path, dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
    """The same two, decode-only, without importing transformers' modeling code (see :mod:`lws_core.model.lean`)."""
    from lws_core.model.lean import LeanCausalLM, LeanWhisperEncoder, whisper_encoder_config

    return LeanCausalLM.load(directory / "lm", dtype), LeanWhisperEncoder(whisper_encoder_config(directory / "encoder_config.json"))


class ModelSpec(BaseModel):
    """What a saved model was trained with. Loading checks the schema version and token ids."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = SCHEMA_VERSION
    preset: str
    unit_s: float
    audio_tokens_per_unit: int
    max_write_tokens: int
    max_say_tokens: int
    sample_rate: int = 16000
    n_mels: int
    special_tokens: dict[str, int]
    backbone_source: str | None = None
    encoder_source: str | None = None
    audio_context_s: float = 0.0  # seconds of the previous unit the encoder hears (0: models saved before it existed)
    projector_norm: bool = False  # projector output normalised to the token-embedding scale
    bridge_vocab: int = 0  # CTC-bridge symbols (0: no bridge; see UnitAudioEncoder.bridge)

    @property
    def context_samples(self) -> int:
        return int(round(self.audio_context_s * self.sample_rate))

    @property
    def unit_samples(self) -> int:
        return int(round(self.unit_s * self.sample_rate))


@dataclass
class LWSOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor
    channel_losses: dict[str, torch.Tensor]
    channel_counts: dict[str, int]


def encoder_frozen(cfg: Any) -> bool:
    """Whether the audio encoder is frozen: with ``model.freeze_encoder``, or when it is a pretrained one
    (``model.encoder_path``) and ``pretrain.warmup.freeze_encoder`` keeps it as it was pretrained."""
    return bool(cfg.model.freeze_encoder or (cfg.model.encoder_path and cfg.pretrain.warmup.freeze_encoder))


class LWSModel(nn.Module):
    """Backbone LM + UnitAudioEncoder. ``forward`` returns the total loss and one loss per channel."""

    def __init__(self, lm: nn.Module, audio: UnitAudioEncoder, tokenizer: SchemaTokenizer, spec: ModelSpec) -> None:
        super().__init__()
        self.lm = lm
        self.audio = audio
        self.tokenizer = tokenizer
        self.spec = spec

    # -- construction --------------------------------------------------------------------
    @classmethod
    def build(cls, cfg, tokenizer: SchemaTokenizer | None = None, corpus: list[str] | None = None) -> LWSModel:  # noqa: ANN001
        """Build from an ``LWSConfig``: preset shapes, optional local backbone/encoder paths."""
        from transformers import AutoModelForCausalLM

        from lws_core.schema import extend_tokenizer, train_bpe_tokenizer

        mc, sc = cfg.model, cfg.schema_
        preset = PRESETS[mc.preset]
        if mc.backbone_path is not None and not Path(mc.backbone_path).is_dir():
            raise InputError(f"model.backbone_path not found: {mc.backbone_path}")
        unit_samples = int(round(sc.unit_s * sc.sample_rate))
        context_samples = int(round(mc.audio_context_s * sc.sample_rate))
        # a wrong encoder path fails here, before a backbone of several GB is read from disk
        if mc.encoder_path is not None:
            check_encoder_dir(mc.encoder_path, sc.sample_rate)
            _check_encoder_meta(mc.encoder_path, sc.unit_s, mc.audio_context_s)
        whisper_config(preset.encoder, unit_samples + context_samples, mc.encoder_path)
        if tokenizer is None:
            if mc.backbone_path is not None:
                tokenizer = extend_tokenizer(mc.backbone_path)
            elif preset.trains_tokenizer:
                tokenizer = train_bpe_tokenizer(corpus or _default_corpus(), vocab_size=DEFAULT_BPE_VOCAB)
            else:
                raise InputError(
                    f"preset {mc.preset!r} needs model.backbone_path (a local checkpoint with its tokenizer) "
                    "or a tokenizer passed in"
                )
        check_digits(tokenizer, where=f"tokenizer of {mc.backbone_path}" if mc.backbone_path else "tokenizer")
        vocab = tokenizer.vocab_size
        if mc.backbone_path is not None:
            try:
                lm = AutoModelForCausalLM.from_pretrained(mc.backbone_path, local_files_only=True, dtype=torch.float32)
            except (OSError, ValueError, SafetensorError) as e:  # missing, another architecture, corrupt weights
                raise InputError(f"{mc.backbone_path}: cannot load a causal LM ({str(e).splitlines()[0]})") from None
            lm.resize_token_embeddings(vocab)
        else:
            lm = AutoModelForCausalLM.from_config(lm_config(preset, vocab, tokenizer.special.pad))
        enc = build_whisper_encoder(preset.encoder, unit_samples + context_samples, mc.encoder_path)
        n_mels = enc.config.num_mel_bins
        emb = lm.get_input_embeddings().weight.detach()
        embed_rms = float(emb.float().pow(2).mean().sqrt())
        bridge = _ctc_bridge(mc.encoder_path, tokenizer, lm) if mc.encoder_path else None
        audio = UnitAudioEncoder(
            enc, n_mels, unit_samples, sc.audio_tokens_per_unit, lm.config.hidden_size, sc.sample_rate,
            context_samples=context_samples, normalize=True, embed_rms=embed_rms,
            bridge_vocab=0 if bridge is None else bridge[1].shape[0] - 1,
        )
        if bridge is not None:
            audio.init_bridge(*bridge)
        spec = ModelSpec(
            preset=mc.preset,
            unit_s=sc.unit_s,
            audio_tokens_per_unit=sc.audio_tokens_per_unit,
            max_write_tokens=sc.max_write_tokens,
            max_say_tokens=sc.max_say_tokens,
            sample_rate=sc.sample_rate,
            n_mels=n_mels,
            special_tokens=tokenizer.special.as_mapping(),
            backbone_source=mc.backbone_path,
            encoder_source=mc.encoder_path,
            audio_context_s=mc.audio_context_s,
            projector_norm=bridge is None,
            bridge_vocab=0 if bridge is None else bridge[1].shape[0] - 1,
        )
        model = cls(lm, audio, tokenizer, spec)
        model.apply_freezing(encoder_frozen(cfg), mc.freeze_backbone)
        if mc.lora.enabled:
            model.enable_lora(mc.lora.r, mc.lora.alpha, mc.lora.dropout)
        return model

    def apply_freezing(self, freeze_encoder: bool, freeze_backbone: bool) -> None:
        """Frozen parts keep their weights; the projector always trains (it is new)."""
        self.audio.encoder.requires_grad_(not freeze_encoder)
        self.lm.requires_grad_(not freeze_backbone)
        if freeze_backbone:  # new schema tokens still need trainable embeddings
            self.lm.get_input_embeddings().requires_grad_(True)
            self.lm.get_output_embeddings().requires_grad_(True)

    def hold_pretrained(self) -> None:
        """Projector warm-up: the backbone and the encoder get zero gradients until ``release_pretrained``.

        Why gradients and not ``requires_grad``: the optimizer (DeepSpeed's or the
        Trainer's) is built once over every trainable parameter; zeroed gradients
        leave Adam's moments at zero, so held weights do not move at all, and
        releasing them later needs no new optimizer. Only the projector learns to
        map pretrained speech features into the pretrained LM's embedding space,
        instead of the LM being bent towards a random projector.
        """
        self.release_pretrained()
        held = [p for p in [*self.lm.parameters(), *self.audio.encoder.parameters()] if p.requires_grad]
        self._holds = [p.register_hook(torch.zeros_like) for p in held]

    def release_pretrained(self) -> None:
        for h in getattr(self, "_holds", []):
            h.remove()
        self._holds = []

    @property
    def holding_pretrained(self) -> bool:
        return bool(getattr(self, "_holds", []))

    def enable_lora(self, r: int, alpha: int, dropout: float, token_ids: list[int] | None = None) -> None:
        """LoRA on the attention projections, plus trainable rows for the schema tokens.

        A real backbone has never seen ``<|listen|>``, ``<|speak|>``, ``<|end|>`` ...:
        their embedding (and output) rows are new and random. With the embedding
        matrix frozen by LoRA they would never learn, so peft's
        ``trainable_token_indices`` trains exactly those rows (input embedding and,
        when untied, the LM head) and leaves every other vocabulary row as it was.
        ``save`` merges both the adapters and the token rows into a plain LM.
        """
        from peft import LoraConfig, get_peft_model

        if token_ids is None:
            token_ids = sorted(set(self.tokenizer.special.as_mapping().values()))
        names = {id(m): n.rsplit(".", 1)[-1] for n, m in self.lm.named_modules()}
        emb_name = names[id(self.lm.get_input_embeddings())]
        out_emb = self.lm.get_output_embeddings()
        tied = out_emb is None or out_emb.weight is self.lm.get_input_embeddings().weight
        tokens: dict[str, list[int]] = {emb_name: list(token_ids)}
        if not tied:
            tokens[names[id(out_emb)]] = list(token_ids)
        lc = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        trainable_token_indices=tokens)
        self.lm = get_peft_model(self.lm, lc)

    # -- forward -------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.lm.config.hidden_size

    def embed(
        self,
        input_ids: torch.Tensor,
        audio_mask: torch.Tensor | None,
        unit_audio: torch.Tensor | None,
        audio_first: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the audio placeholders replaced, in order, by unit audio embeddings.

        ``unit_audio`` is [N, unit_samples] in session order; ``audio_first`` marks
        each session's first unit, so every unit's window gets the tail of the
        previous unit of the same session as left context.
        """
        emb = self.lm.get_input_embeddings()(input_ids)
        if unit_audio is not None and unit_audio.numel() > 0:
            if unit_audio.shape[-1] != self.audio.window_samples:
                unit_audio = self.audio.windows(unit_audio, audio_first)
            aud = self.audio(unit_audio).to(emb.dtype).reshape(-1, emb.shape[-1])
            if audio_mask is None or int(audio_mask.sum()) != aud.shape[0]:
                got = None if audio_mask is None else int(audio_mask.sum())
                raise ValueError(f"{got} audio placeholders but {aud.shape[0]} audio embeddings")
            emb = emb.masked_scatter(audio_mask.unsqueeze(-1), aud)
        return emb

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        unit_audio: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        channels: torch.Tensor | None = None,
        audio_first: torch.Tensor | None = None,
    ) -> LWSOutput:
        emb = self.embed(input_ids, audio_mask, unit_audio, audio_first)
        logits = self.lm(inputs_embeds=emb, attention_mask=attention_mask, use_cache=False).logits
        loss, per, counts = None, {}, {}
        if labels is not None:
            loss, per, counts = channel_losses(logits, labels, channels)
        return LWSOutput(loss, logits, per, counts)

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """One directory: lm/, tokenizer/, audio.safetensors, encoder_config.json, lws_model.json."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # LoRA is saved merged (a plain LM that loads anywhere); merge a copy so the live model keeps its adapters
        lm = copy.deepcopy(self.lm).merge_and_unload() if hasattr(self.lm, "merge_and_unload") else self.lm
        lm.save_pretrained(str(directory / "lm"), safe_serialization=True)
        self.tokenizer.save(directory / "tokenizer")
        state = {k: v.detach().contiguous().cpu() for k, v in self.audio.state_dict().items()}
        save_file(state, str(directory / "audio.safetensors"))
        (directory / "encoder_config.json").write_text(self.audio.encoder.config.to_json_string())
        (directory / SPEC_FILE).write_text(self.spec.model_dump_json(indent=2))
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, lean: bool = False
    ) -> LWSModel:
        """Load offline; fails with one line for a missing dir or another schema version.

        ``lean=True`` loads a decode-only model without transformers' modeling code
        (:mod:`lws_core.model.lean`: seconds less start-up) when the backbone allows it; its
        backbone runs only through the engine's fused path, not ``forward`` or training.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        spec_path = directory / SPEC_FILE
        if not directory.is_dir():
            raise InputError(f"model directory not found: {directory}")
        if not spec_path.is_file():
            raise InputError(f"{directory}: not an LWS model directory (no {SPEC_FILE})")
        try:
            raw = json.loads(spec_path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{spec_path}: unreadable ({e})") from None
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaMismatchError(
                f"{directory}: model was trained with schema {version!r}; this code speaks {SCHEMA_VERSION!r} "
                "(retrain, or use the LWS release that matches the model)"
            )
        try:
            spec = ModelSpec.model_validate(raw)
        except ValidationError as e:
            # a spec from another build of this schema version (a setting added or removed since): one line, not a trace
            bad = "; ".join(f"{'.'.join(map(str, x['loc'])) or '(root)'}: {x['msg']}" for x in e.errors()[:3])
            raise InputError(f"{spec_path}: not a model this code can load ({bad})") from None
        if lean:
            from lws_core.model.lean import lean_supported

            lean = lean_supported(directory / "lm")
        tok = SchemaTokenizer.load(directory / "tokenizer", lean=lean)
        if tok.special.as_mapping() != spec.special_tokens:
            raise SchemaMismatchError(f"{directory}: tokenizer special ids differ from the ids the model was trained with")
        try:
            lm, enc = _load_lean(directory, dtype) if lean else _load_hf(directory, dtype)
            state = load_file(str(directory / "audio.safetensors"))
        except (OSError, ValueError, KeyError, SafetensorError) as e:
            raise InputError(f"{directory}: incomplete or corrupt model ({str(e).splitlines()[0]})") from None
        audio = UnitAudioEncoder(
            enc, spec.n_mels, spec.unit_samples, spec.audio_tokens_per_unit, lm.config.hidden_size, spec.sample_rate,
            context_samples=spec.context_samples, normalize=spec.projector_norm, bridge_vocab=spec.bridge_vocab,
        )
        audio.load_state_dict(state)
        model = cls(lm, audio, tok, spec).to(device=device, dtype=dtype)
        model.eval()
        return model

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameter count (the HF Trainer asks for it without embeddings to estimate FLOPs).

        Counts ZeRO-3-partitioned parameters at their full size (``ds_numel``), and finds
        the embeddings as ``nn.Embedding`` modules rather than through
        ``get_input_embeddings().weight``, which peft's trainable-token wrapper would
        compute by merging partitioned (empty) tensors.
        """
        def numel(p: torch.Tensor) -> int:
            return int(getattr(p, "ds_numel", p.numel()))

        n = sum(numel(p) for p in self.parameters())
        if exclude_embeddings:
            n -= sum(numel(m.weight) for m in self.lm.modules() if isinstance(m, nn.Embedding))
        return n


def channel_losses(
    logits: torch.Tensor, labels: torch.Tensor, channels: torch.Tensor | None
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, int]]:
    """Mean next-token loss over labelled positions, and the same per channel (invariant 5).

    Position i's logits predict token i+1, so labels and channels are shifted
    left by one, as Hugging Face does inside its own loss.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    tok_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).reshape(shift_labels.shape)
    valid = shift_labels != IGNORE_INDEX
    n = int(valid.sum())
    total = tok_loss.sum() / max(n, 1)
    per: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    if channels is not None:
        ch = channels[:, 1:]
        for c, name in CHANNEL_NAMES.items():
            m = (ch == int(c)) & valid
            k = int(m.sum())
            counts[name] = k
            if k:
                per[name] = tok_loss[m].sum() / k
    return total, per, counts


def _default_corpus() -> list[str]:
    """Text for a tokenizer when none is given: the template teacher's vocabulary if available."""
    try:
        from lws_core.data.corpus import tokenizer_corpus  # built by the data stage

        return tokenizer_corpus()
    except ImportError:
        words = ["what", "is", "plus", "minus", "times", "divided", "by", "the", "answer", "equals", "table", "list", "python", "def", "return", "compare"]
        return [" ".join(words)] * 10 + [str(i) for i in range(1000)]


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))


__all__ = ["LWSModel", "ModelSpec", "LWSOutput", "channel_losses", "Channel"]

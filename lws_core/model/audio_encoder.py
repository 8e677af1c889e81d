"""Audio side of the model: a Whisper-style encoder and the projector into the LM's embedding space.

Each unit's audio is encoded on its own (streaming-friendly: unit u never sees
unit u+1), then frames are stacked and projected to exactly K embeddings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from lws_core.errors import InputError
from lws_core.model.features import LogMel


def encoder_positions(unit_samples: int) -> int:
    """Encoder output length for one unit (Whisper: conv1 stride 1, conv2 stride 2, padding 1)."""
    frames = LogMel.frames_for(unit_samples)
    return (frames - 1) // 2 + 1


class UnitAudioEncoder(nn.Module):
    """audio windows [N, context + unit] -> embeddings [N, K, lm_hidden].

    ``context_samples`` of the previous unit come first (left context across the
    unit boundary: a word the boundary splits is still heard whole); only the
    unit's own encoder positions are projected, so unit u's embeddings still
    depend on no audio after the end of unit u.

    ``normalize=True`` puts a LayerNorm after the projector and scales it to the
    RMS of the LM's token embeddings (a learnt scalar, initialised there). Without
    it the projected audio came out ~90x the norm of the token embeddings, and
    training mostly tuned the projector into a voice-activity detector.
    """

    def __init__(
        self,
        whisper_encoder: nn.Module,
        n_mels: int,
        unit_samples: int,
        k: int,
        lm_hidden: int,
        sample_rate: int = 16000,
        context_samples: int = 0,
        normalize: bool = False,
        embed_rms: float = 1.0,
        bridge_vocab: int = 0,
    ) -> None:
        super().__init__()
        self.featurizer = LogMel(n_mels, sample_rate)
        self.encoder = whisper_encoder
        self.unit_samples = unit_samples
        self.context_samples = context_samples
        self.k = k
        positions = encoder_positions(unit_samples)
        self.positions = positions
        self.window_positions = encoder_positions(unit_samples + context_samples)
        self.stack = math.ceil(positions / k)
        self.padded = self.stack * k
        d = whisper_encoder.config.d_model
        self.projector = nn.Sequential(nn.Linear(d * self.stack, lm_hidden), nn.GELU(), nn.Linear(lm_hidden, lm_hidden))
        self.normalize = normalize and not bridge_vocab
        if self.normalize:
            self.out_norm = nn.LayerNorm(lm_hidden, elementwise_affine=False)
            self.out_scale = nn.Parameter(torch.tensor([float(embed_rms)]))  # 1-d: DeepSpeed cannot broadcast 0-d tensors
        self.bridge_vocab = bridge_vocab
        if bridge_vocab:
            # the CTC bridge: posteriors over the LM's own tokens (+ blank) -> those tokens' embeddings
            self.bridge_head = nn.Linear(d, bridge_vocab + 1)
            self.bridge_emb = nn.Parameter(torch.zeros(bridge_vocab + 1, lm_hidden))
            nn.init.zeros_(self.projector[2].weight)  # the free projector starts as a zero residual on the bridge
            nn.init.zeros_(self.projector[2].bias)

    def init_bridge(self, head: dict[str, torch.Tensor], rows: torch.Tensor) -> None:
        """Load the pretrained CTC head and the LM embedding rows of its symbols (row 0: ``<|audio|>``, the blank)."""
        self.bridge_head.load_state_dict(head)
        with torch.no_grad():
            self.bridge_emb.copy_(rows)

    def bridge(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, P, d] unit positions -> [N, K, H]: each slot is the embedding of the token the recogniser
        hears in it, weighted by its posterior (max over the slot's positions), and ``<|audio|>`` for the rest.

        Why: a speech encoder pretrained as a CTC recogniser over the LM's tokens
        already says *which token* each position holds; turning its posteriors into
        those tokens' embeddings hands the backbone the very slots it was pretrained
        on in the text view, from the first step (a projector learnt from scratch had
        to discover that mapping through the LM, slowly). The free projector adds a
        learnt residual on top, and everything stays trainable end to end.
        """
        n, p, _ = hidden.shape
        probs = self.bridge_head(hidden).float().softmax(-1)
        if p < self.padded:
            probs = torch.cat([probs, probs.new_zeros(n, self.padded - p, probs.shape[-1])], dim=1)
        grouped = probs[:, : self.padded].reshape(n, self.k, self.stack, -1)
        tokens = grouped[..., 1:].amax(dim=2)  # [N, K, V]
        mass = tokens.sum(-1, keepdim=True).clamp(max=1.0)
        emb = self.bridge_emb.float()
        return (tokens @ emb[1:] + (1.0 - mass) * emb[0]).to(hidden.dtype)

    @property
    def window_samples(self) -> int:
        return self.unit_samples + self.context_samples

    def windows(self, units: torch.Tensor, first: torch.Tensor | None) -> torch.Tensor:
        """Unit audio [N, unit] in session order (``first`` marks each session's first unit) -> windows."""
        from lws_core.model.asr import context_windows

        if first is None:
            first = torch.zeros(units.shape[0], dtype=torch.bool)
            first[:1] = True
        return context_windows(units, first, self.context_samples)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.shape[-1] != self.window_samples:
            raise ValueError(f"unit audio has {audio.shape[-1]} samples, expected {self.window_samples}")
        from lws_core.model.asr import unit_hidden

        hidden = unit_hidden(self.featurizer, self.encoder, audio, self.window_positions - self.positions, self.window_positions)
        n, p, d = hidden.shape
        if p < self.padded:
            hidden = torch.cat([hidden, hidden.new_zeros(n, self.padded - p, d)], dim=1)
        stacked = hidden[:, : self.padded].reshape(n, self.k, self.stack * d)
        out = self.projector(stacked)
        if self.normalize:
            out = self.out_norm(out) * self.out_scale
        if self.bridge_vocab:
            out = out + self.bridge(hidden[:, : self.positions])
        return out


def whisper_config(encoder_kwargs: dict, window_samples: int, path: str | None = None):  # noqa: ANN201 - WhisperConfig
    """The encoder's config without any weights: from the preset, or read from a local Whisper directory.

    ``window_samples`` is what the encoder hears per unit (left context + the unit).
    Read on its own so a wrong ``model.encoder_path`` (no directory, or a directory
    without a Whisper config) fails in one line before a multi-GB backbone is loaded,
    and so the memory pre-check can size the encoder without building it.
    """
    from transformers import WhisperConfig

    positions = encoder_positions(window_samples)
    if path is None:
        return WhisperConfig(max_source_positions=positions, **encoder_kwargs)
    if not Path(path).is_dir():
        raise InputError(f"model.encoder_path not found: {path}")
    cfg_file = Path(path) / "config.json"
    try:
        model_type = json.loads(cfg_file.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise InputError(f"model.encoder_path {path}: not a Whisper directory (no readable config.json: {type(e).__name__})") from None
    if model_type != "whisper":
        raise InputError(f"model.encoder_path {path}: config.json describes a {model_type!r} model, not Whisper")
    cfg = WhisperConfig.from_pretrained(path, local_files_only=True)
    cfg.max_source_positions = positions
    return cfg


def encoder_sample_rate(path: str | Path) -> int | None:
    """The sample rate an encoder checkpoint was made for, when it says (LWS meta or HF preprocessor config)."""
    for name, key in (("lws_encoder.json", "sample_rate"), ("preprocessor_config.json", "sampling_rate")):
        f = Path(path) / name
        if f.is_file():
            try:
                v = json.loads(f.read_text()).get(key)
            except (OSError, ValueError):
                raise InputError(f"model.encoder_path {path}: unreadable {name}") from None
            if v is not None:
                return int(v)
    return None


def check_encoder_dir(path: str | Path, sample_rate: int) -> None:
    """One-line refusals for an encoder directory that cannot serve this config (before any weight loads)."""
    sr = encoder_sample_rate(path)
    if sr is not None and sr != sample_rate:
        raise InputError(
            f"model.encoder_path {path}: made for {sr} Hz audio, but schema.sample_rate is {sample_rate} Hz "
            "(use an encoder trained at this rate, or change schema.sample_rate)"
        )


def build_whisper_encoder(encoder_kwargs: dict, window_samples: int, path: str | None = None) -> nn.Module:
    """Random-init encoder from a config, or a pretrained one from a local directory.

    A directory is either a Hugging Face Whisper checkpoint (``WhisperModel``; its
    encoder is taken) or an encoder saved by ``lws pretrain encoder`` (a bare
    ``WhisperEncoder``, marked by ``lws_encoder.json``). Whisper expects 30 s
    windows (1500 positions); we feed one unit with its context, so the position
    table is cut to that length (the first rows of a pretrained table are exactly
    the positions a short input uses). Missing weights are an error, never a
    silent random init.
    """
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    positions = encoder_positions(window_samples)
    if path is None:
        return WhisperEncoder(whisper_config(encoder_kwargs, window_samples))
    whisper_config(encoder_kwargs, window_samples, path)  # one-line InputError for a non-Whisper directory
    try:
        if (Path(path) / "lws_encoder.json").is_file():
            enc, info = WhisperEncoder.from_pretrained(path, local_files_only=True, output_loading_info=True)
        else:
            from transformers import WhisperModel

            full, info = WhisperModel.from_pretrained(path, local_files_only=True, output_loading_info=True)
            enc = full.encoder
            info = {"missing_keys": [k for k in info.get("missing_keys", []) if k.startswith("encoder.")]}
    except (OSError, ValueError, SafetensorError) as e:
        raise InputError(f"model.encoder_path {path}: cannot load Whisper weights ({str(e).splitlines()[0][:160]})") from None
    missing = [k for k in info.get("missing_keys", []) if "embed_positions" not in k]
    if missing:
        raise InputError(f"model.encoder_path {path}: weights missing for {len(missing)} tensors (first: {missing[0]})")
    if enc.embed_positions.weight.shape[0] < positions:
        raise InputError(f"model.encoder_path {path}: positions for {enc.embed_positions.weight.shape[0]} frames, need {positions}")
    weight = enc.embed_positions.weight.data[:positions].clone()
    enc.embed_positions = nn.Embedding(positions, weight.shape[1])
    enc.embed_positions.weight.data.copy_(weight)
    enc.embed_positions.requires_grad_(False)
    enc.config.max_source_positions = positions
    return enc

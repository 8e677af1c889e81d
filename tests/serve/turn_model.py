"""A tiny LWS model whose behaviour is set by hand, so browser and protocol tests can assert on it.

Random weights give arbitrary (but parseable) output; to assert that written text
appears, speech plays and barge-in silences it, the tests need a model that
*reliably* takes turns. This builds one from a random-init tiny model by
editing weights, not code: every real path (audio encoder, KV cache,
grammar-constrained decoding, TTS) still runs in the engine.

- Layers' output projections are zeroed, so each position's final hidden state
  is its input embedding: the LM becomes a lookup from the current token (or
  audio embedding) to the next token, through the real forward pass.
- Two residual dimensions carry a direction per token type; lm_head rows of the
  schema tokens and of two words point at the token that should follow.
- The projector turns the audio encoder's last position into "user silent" or
  "user speaking" (a linear probe fitted here on real TTS speech vs silence).

Behaviour: user speaking -> ``listen``; user silent -> ``speak``. Every unit
writes one word (WRITE_WORD); a speaking unit says SAY_WORD until the say budget
(several seconds of speech, so speech queues up and a user who talks again
triggers a barge-in).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

WRITE_WORD = " python"
SAY_WORD = " answer"
M = 60.0  # residual magnitude of the two steering dimensions


def _vec(deg: float) -> tuple[float, float]:
    return math.cos(math.radians(deg)), math.sin(math.radians(deg))


def build_turn_model(out: Path, speech: np.ndarray, say_tokens: int = 8) -> Path:
    from lws_core.config import LWSConfig
    from lws_core.model import LWSModel

    cfg = LWSConfig().with_overrides({"schema.max_write_tokens": 4, "schema.max_say_tokens": say_tokens})
    torch.manual_seed(0)
    m = LWSModel.build(cfg).eval()
    tok, ids = m.tokenizer, m.tokenizer.special
    (w_id,) = tok.encode_text(WRITE_WORD)
    (a_id,) = tok.encode_text(SAY_WORD)
    with torch.no_grad():
        for layer in m.lm.model.layers:  # each position's hidden state = its own embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = m.lm.get_input_embeddings().weight
        head = m.lm.get_output_embeddings().weight
        emb[:, :2] = 0.0
        head[:, :2] = 0.0
        # position code (angle of the token's embedding) -> the token whose head row is closest wins
        codes = {ids.write: 90, w_id: 270, ids.say: 45, a_id: 45, ids.speak: 135, ids.listen: 135, ids.end: 135, ids.unit: 135}
        for t, deg in codes.items():
            emb[t, :2] = torch.tensor(_vec(deg)) * M
        heads = {ids.speak: 0, ids.listen: 180, w_id: 90, ids.say: 270, a_id: 45, ids.eot: 225, ids.end: 200}
        for t, deg in heads.items():
            head[t] = 0.0
            head[t, :2] = torch.tensor(_vec(deg)) * 5.0
        _fit_silence_probe(m, speech)
    m.save(out)
    return out


def _last_position_features(m, units: np.ndarray) -> torch.Tensor:  # noqa: ANN001
    got = {}

    def hook(_mod, inp, _out) -> None:  # noqa: ANN001 - returning None keeps the layer's output
        got["x"] = inp[0]

    h = m.audio.projector[0].register_forward_hook(hook)
    try:
        x = torch.from_numpy(units.astype(np.float32))
        m.audio(m.audio.windows(x, torch.ones(x.shape[0], dtype=torch.bool)))  # each unit on its own (silent context)
    finally:
        h.remove()
    return got["x"][:, -1]  # [N, D]


def _fit_silence_probe(m, speech: np.ndarray) -> None:  # noqa: ANN001
    """Projector: audio -> (+M, 0) when the unit ends in silence, (-M, 0) when it ends in speech."""
    n = m.spec.unit_samples
    rng = np.random.default_rng(0)
    quiet = np.stack([np.zeros(n), *(rng.normal(0, 10 ** -rng.uniform(3.5, 5), n) for _ in range(7))])
    loud = [speech[s : s + n] for s in range(0, len(speech) - n, n // 8)]
    loud = np.stack([u for u in loud if np.abs(u[-n // 10 :]).max() > 0.05])
    xq, xl = _last_position_features(m, quiet), _last_position_features(m, loud)
    d = xq.mean(0) - xl.mean(0)
    d = d / d.norm()
    sq, sl = xq @ d, xl @ d
    mid = (sq.min() + sl.max()) / 2
    margin = float(sq.min() - sl.max())
    if margin <= 0:
        raise RuntimeError(f"silence probe does not separate (margin {margin:.3f})")
    gain = 8.0 / margin  # the nearest example sits 4 units from the threshold
    p0, p2 = m.audio.projector[0], m.audio.projector[2]
    p0.weight[0] = d * gain
    p0.bias[0] = -mid * gain
    p2.weight.zero_()
    p2.bias.zero_()
    # GELU(z) ~ z for silence (z >= 4), ~ 0 for speech (z <= -4): map to +M / -M on dimension 0
    p2.weight[0, 0] = 2 * M / 4.0
    p2.bias[0] = -M

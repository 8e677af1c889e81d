"""The encoder pretraining's byte dropout: its rate, its expectation, and Whisper's own dropout positions."""

from __future__ import annotations

import pytest
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

import lws_core.train.fast_dropout as fd
from lws_core.train.fast_dropout import byte_dropout, fast_dropout


def _encoder(p: float) -> WhisperEncoder:
    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=48, num_mel_bins=8,
                        max_source_positions=20, dropout=p, activation_dropout=p, attention_dropout=0.0)
    return WhisperEncoder(cfg)


def test_byte_dropout_drops_the_quantised_rate_and_keeps_the_expectation() -> None:
    torch.manual_seed(1)
    y = byte_dropout(torch.ones(2_000_000), 0.1)
    assert abs(float((y == 0).float().mean()) - 26 / 256) < 2e-3  # 0.1 quantised to 26/256
    assert abs(float(y.mean()) - 1.0) < 3e-3
    torch.manual_seed(1)
    assert torch.equal(byte_dropout(torch.ones(2_000_000), 0.1), y)  # the global generator: reproducible
    assert torch.equal(byte_dropout(torch.ones(5), 0.0), torch.ones(5))


def test_gradients_flow_through_the_kept_elements_only() -> None:
    x = torch.ones(10_000, requires_grad=True)
    y = byte_dropout(x, 0.25)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask * scale)/dx = mask * scale


def test_the_hooks_drop_where_whisper_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both dropouts replaced by the same deterministic stand-in (x * 0.5): the outputs must match exactly."""
    feats = torch.randn(3, 8, 40)

    def halve(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
        return x * 0.5 if training and p > 0 else x

    torch_enc = _encoder(0.3).train()
    monkeypatch.setattr(torch.nn.functional, "dropout", halve)
    want = torch_enc(feats).last_hidden_state
    monkeypatch.undo()

    ours = _encoder(0.3).train()
    monkeypatch.setattr(fd, "byte_dropout", lambda x, p: x * 0.5)
    with fast_dropout(ours, 0.3):
        got = ours(feats).last_hidden_state
    assert torch.allclose(got, want, atol=1e-6)
    # restored afterwards, and in eval mode nothing is dropped
    assert ours.dropout == 0.3 and all(m.dropout == 0.3 and m.activation_dropout == 0.3 for m in ours.layers)
    with fast_dropout(ours.eval(), 0.3):
        assert torch.allclose(ours(feats).last_hidden_state, _encoder(0.0).eval()(feats).last_hidden_state, atol=1e-6)

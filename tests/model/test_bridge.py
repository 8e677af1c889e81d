"""The CTC bridge's slot layouts: what the backbone is handed from speech, against what it read as text.

Real Whisper encoder class (tiny random config); the bridge head is set by hand so that its posteriors
are a known CTC path, which is the only input the layout depends on.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lws_core.model.asr import BLANK, aligned_path, place_in_slots

K, P, V = 10, 50, 12  # slots, encoder positions per unit, CTC symbols (1..V; 0 is the blank)
STARTS = set(range(1, 7))  # symbols 1..6 open a word (a leading space); 7..12 continue one


def _encoder(layout: str):  # noqa: ANN202 - UnitAudioEncoder
    from lws_core.model.audio_encoder import UnitAudioEncoder, build_whisper_encoder
    from lws_core.model.presets import PRESETS

    enc = build_whisper_encoder(PRESETS["tiny"].encoder, 16000)
    audio = UnitAudioEncoder(enc, 40, 16000, K, V + 1, bridge_vocab=V, bridge_layout=layout)
    d = enc.config.d_model
    head = {"weight": torch.zeros(V + 1, d), "bias": torch.zeros(V + 1)}
    head["weight"][:, : V + 1] = 60.0 * torch.eye(V + 1)  # hidden one-hot on symbol s -> posterior ~1 on s
    starts = torch.tensor([True] + [s in STARTS for s in range(1, V + 1)])
    audio.init_bridge(head, torch.eye(V + 1), starts)  # embedding row s = one-hot s: a slot reads back as its symbol
    return audio


def _slots(audio, path: list[int]) -> list[int]:  # noqa: ANN001
    hidden = torch.zeros(1, P, audio.encoder.config.d_model)
    hidden[0, torch.arange(P), torch.tensor(path)] = 1.0
    with torch.no_grad():
        out = audio.bridge(hidden)[0]
    return out.argmax(-1).tolist()


def test_a_numbers_two_digits_keep_two_slots_in_order_as_in_the_text_view() -> None:
    """"24" recognised as ``Ġ2`` at position 41 and ``4`` at 42: the pooled layout sums both into slot 8
    (the backbone never read such a slot); the placed one puts them in slots 7 and 8, as the text view does."""
    path = [BLANK] * P
    path[41], path[42] = 2, 8
    want = place_in_slots([([2, 8], 42.5 / P)], K, BLANK)
    assert want[7:9] == [2, 8]
    assert _slots(_encoder("placed"), path) == want
    pooled = _encoder("pool")
    hidden = torch.zeros(1, P, pooled.encoder.config.d_model)
    hidden[0, torch.arange(P), torch.tensor(path)] = 1.0
    with torch.no_grad():
        slot8 = pooled.bridge(hidden)[0, 8]
    assert slot8[2] > 0.4 and slot8[8] > 0.4  # both digits in one slot


@settings(max_examples=100, deadline=None)
@given(
    words=st.lists(
        st.tuples(st.integers(1, 6), st.lists(st.integers(7, 12), max_size=2), st.integers(4, 9)),
        min_size=1, max_size=4,
    )
)
def test_placed_slots_equal_the_text_view_of_the_recognisers_target(words) -> None:  # noqa: ANN001
    """For any unit's words (a word-opening symbol, then continuations, ends apart), the placed bridge fed
    the recogniser's own training target (:func:`aligned_path`) gives exactly the text view's slots."""
    items, end = [], 0
    for first, rest, gap in words:
        end += gap
        if end >= P:
            break
        items.append(([first, *rest], (end + 0.5) / P))
    path = aligned_path(items, P)
    assert _slots(_encoder("placed"), path) == place_in_slots(items, K, BLANK)


def test_models_saved_before_the_layout_existed_load_with_the_pooled_one() -> None:
    from lws_core.model.lws_model import ModelSpec

    spec = ModelSpec(preset="tiny", unit_s=1.0, audio_tokens_per_unit=K, max_write_tokens=8, max_say_tokens=8,
                     n_mels=40, special_tokens={}, bridge_vocab=V)
    assert spec.bridge_layout == "pool"
    with pytest.raises(ValueError, match="bridge_layout"):
        _encoder("sideways")

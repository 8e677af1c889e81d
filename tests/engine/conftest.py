"""Engine fixtures: a random-init tiny model saved to disk (checks here must hold for any weights) and real TTS speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def random_model_dir(tiny_cfg, tmp_path_factory):
    """Random weights: the engine's guarantees (parseable units, budgets, cache == recompute) cannot rely on training."""
    from lws_core.model import LWSModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("random-model") / "m"
    LWSModel.build(tiny_cfg).save(out)
    return out


@pytest.fixture(scope="session")
def engine(random_model_dir):
    from lws_core.engine import Engine
    from lws_core.engine.types import EngineConfig

    # the exact weights: tests on this engine compare the fused path with the HF forward to 1e-4
    # (engine.weight_dtype's half-precision copies have their own tests, in test_batched.py)
    return Engine.from_dir(random_model_dir, config=EngineConfig(weight_dtype="model", batch_dtype="model"))


@pytest.fixture(scope="session")
def speaking_engine(tiny_cfg, speech, tmp_path_factory):
    """A random-init model that speaks from its first unit on ``speech``, for checks of what speaking produces.

    Whether random weights choose ``<|speak|>`` depends on the init and the vocabulary (a tokenizer change
    turned seed 0 into a listener), so the first of a few seeds that speaks is taken, by a fixed rule.
    """
    from lws_core.engine import Engine
    from lws_core.engine.types import EngineConfig
    from lws_core.model import LWSModel

    for seed in range(16):
        torch.manual_seed(seed)
        model = LWSModel.build(tiny_cfg)
        units = Engine(model, EngineConfig(tts="none")).simulate(speech[: 16000 * 2]).units
        if all(u.state == "speak" and u.say.strip() for u in units):
            out = tmp_path_factory.mktemp("speaking-model") / "m"
            model.save(out)
            return Engine.from_dir(out)
    raise AssertionError("no random init among 16 seeds speaks from the first unit")


@pytest.fixture(scope="session")
def speech():
    """About 4 s of real synthesized speech (espeak-ng), then 2 s of silence."""
    from lws_core.audio import get_tts

    s = (
        get_tts()
        .synthesize("hello there, what is twelve plus thirty? please write the answer down for me.")
        .audio
    )
    return np.concatenate([s, np.zeros(32000, dtype=np.float32)]).astype(np.float32)

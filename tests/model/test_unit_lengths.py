"""Every unit length the schema allows (0.25-2.0 s) builds, encodes audio, and streams."""

from __future__ import annotations

import numpy as np
import pytest

from lws_core.config import LWSConfig
from lws_core.engine import Engine
from lws_core.model import LWSModel


@pytest.mark.parametrize("unit_s", [0.25, 0.5, 2.0])
def test_unit_length_streams(unit_s):
    m = LWSModel.build(LWSConfig().with_overrides({"schema.unit_s": unit_s}))
    n = int(16000 * 2.3)
    res = Engine(m).simulate((np.random.default_rng(0).standard_normal(n) * 0.05).astype("float32"))
    assert len(res.units) == -(-n // int(16000 * unit_s)) and len(res.output_audio) == n

"""Streaming full-duplex engine: listen, write and speak unit by unit on a kept KV cache."""

from lws_core.engine.engine import Engine
from lws_core.engine.session import StreamingSession
from lws_core.engine.types import EngineConfig, SimulationResult, UnitOutput

__all__ = ["Engine", "EngineConfig", "SimulationResult", "StreamingSession", "UnitOutput"]

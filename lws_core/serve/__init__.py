"""Realtime serving: a WebSocket server (protocol ``lws.v1``, see docs/serving.md) and the web page."""

from lws_core.serve.protocol import PROTOCOL_VERSION, ProtocolError, pack_audio, unpack_audio
from lws_core.serve.server import LWSServer, create_app, run_server
from lws_core.serve.settings import ServeSettings

__all__ = ["PROTOCOL_VERSION", "LWSServer", "ProtocolError", "ServeSettings", "create_app", "pack_audio", "run_server", "unpack_audio"]

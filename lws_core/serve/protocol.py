"""The `lws.v1` realtime protocol: message shapes, error codes and close codes.

Kept free of any web framework so that the server, the tests, the load benchmark
and the docs (docs/serving.md) share one definition. Every client message is
validated here; anything malformed becomes a :class:`ProtocolError` that the
server reports as an ``error`` event while the session goes on.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = "lws.v1"
OUTPUT_SAMPLE_RATE = 16000
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 96000
MAX_SYSTEM_CHARS = 2000
MAX_JSON_BYTES = 8192  # control messages are tiny; anything bigger is a mistake or an attack

# Close codes (RFC 6455 where one fits; the error event sent just before names the reason).
CLOSE_NORMAL = 1000  # client sent `end`, or the server shuts down
CLOSE_PROTOCOL = 1002  # no valid `hello` in time
CLOSE_POLICY = 1008  # bad/missing token, origin not allowed, session length limit
CLOSE_TOO_BIG = 1009  # a frame over the transport limit (uvicorn ws_max_size)
CLOSE_INTERNAL = 1011  # the engine failed on this session (a bug)
CLOSE_TRY_AGAIN = 1013  # server full (max sessions/connections, measured capacity) or the session fell too far behind

# Error codes carried by `error` events. Fatal ones are followed by a close.
ERRORS: dict[str, str] = {
    "bad_json": "a text frame that is not a JSON object",
    "too_large": "a frame over max_frame_bytes (dropped; the session goes on)",
    "unknown_type": "a JSON message with an unknown `type`",
    "bad_message": "a known message with missing or invalid fields",
    "bad_version": "hello.version is not a supported protocol version",
    "bad_sample_rate": "hello.sample_rate is not an integer in [8000, 96000]",
    "not_ready": "audio or a control before a valid hello (dropped)",
    "already_ready": "a second hello on a ready session (ignored)",
    "unauthorized": "missing or wrong token (fatal, close 1008)",
    "origin": "the page's Origin is not allowed (fatal, close 1008)",
    "busy": "server at capacity (fatal, close 1013)",
    "hello_timeout": "no valid hello in time (fatal, close 1002)",
    "session_limit": "max session length reached (fatal, close 1008)",
    "behind": "the session's audio backlog grew past the limit (fatal, close 1013)",
    "engine": "the engine failed on this session (fatal, close 1011)",
}


class ProtocolError(Exception):
    """A client mistake: reported as an ``error`` event, fatal only when ``close_code`` is set."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code

    def event(self) -> dict[str, Any]:
        return error_event(self.code, self.message, fatal=self.close_code is not None)


def error_event(code: str, message: str, fatal: bool = False) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "fatal": fatal}


@dataclass(frozen=True)
class Hello:
    version: str
    sample_rate: int
    token: str | None
    system: str | None


def parse_text(data: str) -> dict[str, Any]:
    """A text frame -> a JSON object with a string ``type``."""
    if len(data.encode("utf-8", "replace")) > MAX_JSON_BYTES:
        raise ProtocolError("too_large", f"JSON message over {MAX_JSON_BYTES} bytes")
    try:
        msg = json.loads(data)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("bad_json", "text frame is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_json", "JSON message must be an object")
    t = msg.get("type")
    if not isinstance(t, str):
        raise ProtocolError("bad_message", "JSON message needs a string `type`")
    return msg


def parse_hello(msg: dict[str, Any]) -> Hello:
    """Validate a ``hello``. Sample rates are integers in [8000, 96000]; the server resamples to 16 kHz."""
    version = msg.get("version", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError("bad_version", f"unsupported protocol version {str(version)[:40]!r}; this server speaks {PROTOCOL_VERSION}")
    sr = msg.get("sample_rate", OUTPUT_SAMPLE_RATE)
    if isinstance(sr, bool) or not isinstance(sr, int) or not (MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE):
        raise ProtocolError("bad_sample_rate", f"sample_rate must be an integer in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}], got {str(sr)[:40]!r}")
    token = msg.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError("bad_message", "hello.token must be a string")
    system = msg.get("system")
    if system is not None and (not isinstance(system, str) or len(system) > MAX_SYSTEM_CHARS):
        raise ProtocolError("bad_message", f"hello.system must be a string of at most {MAX_SYSTEM_CHARS} characters")
    return Hello(version, sr, token, system or None)


# Binary server -> client speech frames: a 16-byte header, then PCM16 little-endian mono.
AUDIO_MAGIC = b"LWSA"
AUDIO_HEADER = struct.Struct("<4sIII")  # magic, unit index, sample rate, sample count


def pack_audio(index: int, pcm16: bytes, sample_rate: int = OUTPUT_SAMPLE_RATE) -> bytes:
    return AUDIO_HEADER.pack(AUDIO_MAGIC, index, sample_rate, len(pcm16) // 2) + pcm16


def unpack_audio(frame: bytes) -> tuple[int, int, bytes]:
    """-> (unit index, sample rate, PCM16 bytes). Used by clients (tests, the load benchmark)."""
    magic, index, sr, n = AUDIO_HEADER.unpack_from(frame)
    if magic != AUDIO_MAGIC or len(frame) != AUDIO_HEADER.size + 2 * n:
        raise ValueError("not an lws.v1 audio frame")
    return index, sr, frame[AUDIO_HEADER.size :]

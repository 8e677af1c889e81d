"""Serving fixtures: real engines on random-init tiny models, a real uvicorn server on loopback, real clients."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def serve_model_dir(tmp_path_factory) -> Path:
    """A random-init tiny model (default config) saved to disk: the weights any user could start from."""
    from lws_core.config import LWSConfig
    from lws_core.model import LWSModel

    out = tmp_path_factory.mktemp("serve-model") / "m"
    LWSModel.build(LWSConfig()).save(out)
    return out


@pytest.fixture(scope="session")
def engine(serve_model_dir):
    from lws_core.engine import Engine
    from lws_core.engine.types import EngineConfig

    # exact weights in every round size: tests compare a session batched with the same session alone
    return Engine.from_dir(serve_model_dir, config=EngineConfig(weight_dtype="model", batch_dtype="model"))


@pytest.fixture(scope="session")
def speech16k() -> np.ndarray:
    """Real TTS speech (espeak-ng), 16 kHz float32."""
    from lws_core.audio import get_tts

    s = get_tts().synthesize("Hello there. Could you write a short python function that adds two numbers, please?")
    return np.asarray(s.audio, dtype=np.float32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(engine, configure=None, **settings) -> Iterator[str]:  # noqa: ANN001
    """A real uvicorn server in a thread on a free loopback port; yields its base URL ``127.0.0.1:PORT``.
    ``configure(server)``, when given, is called on the app's LWS server object before it starts."""
    import uvicorn

    from lws_core.serve import ServeSettings, create_app
    from lws_core.serve.server import uvicorn_options

    st = ServeSettings(host="127.0.0.1", port=free_port(), **settings).check()
    app = create_app(engine, st)
    if configure is not None:
        configure(app.state.lws)
    server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options(st), log_level="warning", lifespan="on"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not t.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{st.port}"
    finally:
        server.should_exit = True
        t.join(timeout=10)


def pcm16(audio: np.ndarray) -> bytes:
    from lws_core.audio import pcm16_bytes

    return pcm16_bytes(audio)


def recv_until(ws, pred, timeout: float = 20.0) -> list:  # noqa: ANN001
    """Read messages (JSON dicts, or bytes) until ``pred(msg)`` is true; returns everything read."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"condition not met; got {[m if isinstance(m, dict) else len(m) for m in got][-10:]}")
        raw = ws.recv(timeout=left)
        msg = json.loads(raw) if isinstance(raw, str) else raw
        got.append(msg)
        if pred(msg):
            return got

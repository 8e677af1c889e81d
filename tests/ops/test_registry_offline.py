"""`models:/lws@champion` after the registry goes away: `lws simulate` loads the champion this machine
last resolved from its local cache (a real `mlflow server` process, stopped mid-test)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.ops.conftest import start_mlflow_server, stop_server
from tests.ops.planted import planted


def test_champion_loads_offline_through_the_cli(tiny_cfg, tiny_model, tmp_path, monkeypatch):
    import numpy as np

    from lws_core.audio import write_wav
    from lws_core.errors import ServiceError
    from lws_core.ops import retry
    from lws_core.ops.registry import register_model, resolve_model_uri

    proc, url = start_mlflow_server(tmp_path / "server")
    try:
        cfg = tiny_cfg.with_overrides({"registry.tracking_uri": url, "pipeline.workspace": str(tmp_path / "ws")})
        reg = register_model(cfg, tiny_model, planted(0), {})
        online = resolve_model_uri("models:/lws@champion", cfg)  # resolved once while the registry is up
    finally:
        stop_server(proc)
    assert online.is_dir()

    (tmp_path / "params.yaml").write_text(cfg.to_yaml())
    wav = write_wav(tmp_path / "in.wav", np.zeros(32000, dtype=np.float32))
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    p = subprocess.run(
        [sys.executable, "-m", "lws_core.cli.main", "simulate", "--model", "models:/lws@champion", str(wav),
         "--out", str(tmp_path / "out"), "--config", "params.yaml", "--quiet"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"using the cached lws@champion (version {reg.version})" in p.stderr and url in p.stderr
    assert "2 units" in p.stdout
    assert any((tmp_path / "out").iterdir())

    # an alias this machine never resolved cannot be guessed offline: the registry's error stands
    monkeypatch.setattr(retry.time, "sleep", lambda s: None)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(ServiceError, match=url):
        resolve_model_uri("models:/lws@challenger", cfg)

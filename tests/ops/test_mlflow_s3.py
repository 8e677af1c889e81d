"""MLflow artifacts on a real S3-protocol server (moto server on loopback): the registered pyfunc lands in
the bucket, and `models:/NAME@champion` comes back from it into a local directory the engine loads."""

from __future__ import annotations

import boto3

from tests.ops.planted import planted


def test_registered_model_artifacts_live_in_s3(tiny_cfg, tiny_model, s3_server, aws_env, tmp_path, monkeypatch):
    import numpy as np

    from lws_core.engine import Engine
    from lws_core.ops.registry import register_model, resolve_model_uri

    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)  # the config's endpoint must be what is used
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="lws-mlflow")
    cfg = tiny_cfg.with_overrides({
        "pipeline.workspace": str(tmp_path / "ws"),
        "registry.artifact_location": "s3://lws-mlflow/experiments",
        "registry.s3_endpoint_url": s3_server,
    })
    reg = register_model(cfg, tiny_model, planted(0), {"dataset_dvc_hash": "x.dir"})
    assert reg.aliases == ["challenger", "champion"]
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="lws-mlflow")["Contents"]]
    assert any(k.endswith("lws_model.json") for k in keys), keys[:10]
    assert not (tmp_path / "ws" / "mlartifacts").exists()  # nothing went to the local artifact folder
    local = resolve_model_uri(f"models:/{cfg.registry.model_name}@champion", cfg)
    assert local.is_dir() and str(local).startswith(str(tmp_path / "ws" / "cache"))
    res = Engine.from_dir(local).simulate(np.zeros(16000, dtype=np.float32))
    assert len(res.units) == 1
    # a second resolution is served from the local copy (offline)
    assert resolve_model_uri(f"models:/{cfg.registry.model_name}/{reg.version}", cfg) == local


class _DeadEndpoint:
    """A loopback port that accepts a TCP connection and closes it at once, counting connections: an S3
    endpoint that is down (a real socket, so the real boto3 client fails the real way)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_unreachable_s3_artifact_endpoint_is_retried_then_named(tiny_cfg, tiny_model, aws_env, tmp_path, monkeypatch):
    """Artifacts configured for an S3 endpoint that drops every connection: the model upload is retried
    with backoff (the waits skipped), then fails with a ServiceError naming that endpoint, and nothing
    is registered."""
    import pytest
    from mlflow.tracking import MlflowClient

    from lws_core.errors import ServiceError
    from lws_core.ops import retry
    from lws_core.ops.registry import register_model

    waits: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", waits.append)  # keep the backoff schedule, skip the waiting
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # boto3's own retries off: ours are the ones under test
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://unused")  # restored after the test
    dead = _DeadEndpoint()
    try:
        cfg = tiny_cfg.with_overrides({
            "pipeline.workspace": str(tmp_path / "ws"),
            "registry.artifact_location": "s3://lws-mlflow/experiments",
            "registry.s3_endpoint_url": dead.url,
        })
        with pytest.raises(ServiceError, match=r"MLflow model logging failed after 4 attempts: " + dead.url):
            register_model(cfg, tiny_model, planted(0), {})
    finally:
        dead.close()
    assert waits == [0.5, 1.0, 2.0]
    assert dead.connections >= 4  # every attempt reached the endpoint
    uri = f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}"
    assert MlflowClient(uri, uri).search_model_versions("name='lws'") == []

"""MLflow artifacts on a real S3-protocol server (moto server on loopback): the registered pyfunc lands in
the bucket, and `models:/NAME@champion` comes back from it into a local directory the engine loads."""

from __future__ import annotations

import boto3


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
    reg = register_model(cfg, tiny_model, {"schema_valid_rate": 1.0, "state_accuracy": 0.9, "task_accuracy": 0.5},
                         {"dataset_dvc_hash": "x.dir"})
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

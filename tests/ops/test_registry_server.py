"""Registry + promotion gate against a real `mlflow server` process; models:/ URIs load into the engine."""

from __future__ import annotations

import pytest

from lws_core.errors import InputError, ServiceError


def _cfg(tiny_cfg, url, tmp_path):
    return tiny_cfg.with_overrides({"registry.tracking_uri": url, "pipeline.workspace": str(tmp_path / "ws"),
                                    "registry.model_name": f"lws-{tmp_path.name[-8:]}"})


def test_gate_promotes_better_and_keeps_worse_as_challenger(tiny_cfg, tiny_model, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from lws_core.ops.registry import register_model

    cfg = _cfg(tiny_cfg, mlflow_server, tmp_path)
    good = {"schema_valid_rate": 1.0, "state_accuracy": 0.9, "task_accuracy": 0.2}
    r1 = register_model(cfg, tiny_model, good, {"dataset_dvc_hash": "abc.dir"})
    assert r1.decision.promote and set(r1.aliases) == {"challenger", "champion"}
    worse = {"schema_valid_rate": 1.0, "state_accuracy": 0.7, "task_accuracy": 0.2}
    r2 = register_model(cfg, tiny_model, worse, {"dataset_dvc_hash": "def.dir"})
    assert not r2.decision.promote and r2.aliases == ["challenger"]
    client = MlflowClient(mlflow_server, mlflow_server)
    name = cfg.registry.model_name
    assert client.get_model_version_by_alias(name, "champion").version == r1.version
    assert client.get_model_version_by_alias(name, "challenger").version == r2.version
    mv = client.get_model_version(name, r2.version)
    assert mv.tags["gate.decision"] == "reject" and "state_accuracy" in mv.tags["gate.reasons"]
    assert mv.tags["lineage.dataset_dvc_hash"] == "def.dir" and mv.tags["gate.compared_with"] == r1.version
    missing = register_model(cfg, tiny_model, {"schema_valid_rate": 1.0}, {})
    assert not missing.decision.promote  # a gated metric is missing: never promoted


def test_champion_uri_loads_into_engine(tiny_cfg, tiny_model, mlflow_server, tmp_path):
    import numpy as np

    from lws_core.engine import Engine
    from lws_core.ops.registry import register_model, resolve_model_uri

    cfg = _cfg(tiny_cfg, mlflow_server, tmp_path)
    register_model(cfg, tiny_model, {"schema_valid_rate": 1, "state_accuracy": 1, "task_accuracy": 1}, {})
    local = resolve_model_uri(f"models:/{cfg.registry.model_name}@champion", cfg)
    res = Engine.from_dir(local).simulate(np.zeros(32000, dtype=np.float32))
    assert len(res.units) == 2
    # the registered pyfunc itself: audio file paths in, written/spoken/states out
    import mlflow.pyfunc

    from lws_core.audio import write_wav

    wav = write_wav(tmp_path / "in.wav", np.zeros(48000, dtype=np.float32))
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_registry_uri(mlflow_server)
    pred = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}@champion").predict([str(wav)])
    assert len(pred) == 1 and set(pred[0]) == {"written", "spoken", "states"} and len(pred[0]["states"]) == 3
    with pytest.raises(InputError):
        resolve_model_uri(f"models:/{cfg.registry.model_name}@nosuchalias", cfg)


def test_unreachable_tracking_server_is_a_clear_error(tiny_cfg, tmp_path, monkeypatch):
    from lws_core.ops import retry
    from lws_core.ops.tracking import Tracker

    monkeypatch.setattr(retry.time, "sleep", lambda s: None)  # keep the backoff schedule, skip the waiting
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cfg = tiny_cfg.with_overrides({"registry.tracking_uri": "http://127.0.0.1:9", "pipeline.workspace": str(tmp_path)})
    with pytest.raises(ServiceError, match="127.0.0.1:9"):
        Tracker(cfg).experiment_id()


def test_failed_registration_leaves_no_version_and_moves_no_alias(tiny_cfg, tiny_model, mlflow_server, tmp_path):
    """A registration that fails midway (here: the server rejects an over-long lineage tag after the version
    exists) is rolled back: the version is deleted and both aliases stay where they were."""
    from mlflow.tracking import MlflowClient
    from mlflow.utils.validation import MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH

    from lws_core.ops.registry import register_model

    cfg = _cfg(tiny_cfg, mlflow_server, tmp_path)
    name = cfg.registry.model_name
    best = {"schema_valid_rate": 1.0, "state_accuracy": 1.0, "task_accuracy": 1.0}
    r1 = register_model(cfg, tiny_model, best, {"dataset_dvc_hash": "a.dir"})
    with pytest.raises(Exception, match="(?i)length|exceed"):
        register_model(cfg, tiny_model, best, {"dataset_dvc_hash": "b.dir", "note": "x" * (MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH + 1)})
    client = MlflowClient(mlflow_server, mlflow_server)
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == [r1.version]
    assert client.get_model_version_by_alias(name, "champion").version == r1.version
    assert client.get_model_version_by_alias(name, "challenger").version == r1.version


def test_crash_after_version_exists_is_rolled_back(tiny_cfg, tiny_model, mlflow_server, tmp_path, monkeypatch):
    """An unexpected crash (LWS_FAULT_INJECT=register: right after the version was created, before any tag
    or alias): the version is deleted and the aliases stay where they were."""
    from mlflow.tracking import MlflowClient

    from lws_core.ops.faults import InjectedFault
    from lws_core.ops.registry import register_model

    cfg = _cfg(tiny_cfg, mlflow_server, tmp_path)
    name = cfg.registry.model_name
    best = {"schema_valid_rate": 1.0, "state_accuracy": 1.0, "task_accuracy": 1.0}
    r1 = register_model(cfg, tiny_model, best, {"dataset_dvc_hash": "a.dir"})
    monkeypatch.setenv("LWS_FAULT_INJECT", "register")
    with pytest.raises(InjectedFault, match="register"):
        register_model(cfg, tiny_model, best, {"dataset_dvc_hash": "b.dir"})
    client = MlflowClient(mlflow_server, mlflow_server)
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == [r1.version]
    assert client.get_model_version_by_alias(name, "champion").version == r1.version
    assert client.get_model_version_by_alias(name, "challenger").version == r1.version

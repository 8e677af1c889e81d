"""Registry + promotion gate against a real `mlflow server` process; models:/ URIs load into the engine.

The per-session scores are planted (``tests/ops/planted.py``): the model registered is the tiny test
model, and what the gate reads are the drawn scores, recorded on the version's run like real ones.
"""

from __future__ import annotations

import pytest

from lws_core.errors import InputError, ServiceError
from tests.ops.conftest import start_mlflow_server, stop_server
from tests.ops.planted import planted


def _cfg(tiny_cfg, url, tmp_path):
    return tiny_cfg.with_overrides({"registry.tracking_uri": url, "pipeline.workspace": str(tmp_path / "ws"),
                                    "registry.model_name": f"lws-{tmp_path.name[-8:]}"})


@pytest.fixture()
def fast_retries(monkeypatch):
    """Registry retries keep their count, not their waits; MLflow's own HTTP retries off."""
    from lws_core.ops import registry

    monkeypatch.setattr(registry, "RETRY_WAIT_S", 0.01)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


def test_gate_promotes_better_and_keeps_worse_with_the_table_as_description(tiny_cfg, tiny_model, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from lws_core.ops.registry import register_model

    cfg = _cfg(tiny_cfg, mlflow_server, tmp_path)
    lineage = {"dataset_dvc_hash": "abc.dir", "model_dvc_hash": "m1.dir", "code_revision": "deadbeef", "params_digest": "p1"}
    r1 = register_model(cfg, tiny_model, planted(0), lineage, tags={"lws.backbone": "path:/ckpt"})
    assert r1.decision.promote and set(r1.aliases) == {"challenger", "champion"}
    r2 = register_model(cfg, tiny_model, planted(1, state=0.84, task=0.2), {**lineage, "dataset_dvc_hash": "def.dir"})
    assert not r2.decision.promote and r2.aliases == ["challenger"]
    r3 = register_model(cfg, tiny_model, planted(2, state=0.92, task=0.4), lineage)
    assert r3.decision.promote and r3.decision.compared_with == r1.version
    client = MlflowClient(mlflow_server, mlflow_server)
    name = cfg.registry.model_name
    assert client.get_model_version_by_alias(name, "champion").version == r3.version
    assert client.get_model_version_by_alias(name, "challenger").version == r3.version
    mv2 = client.get_model_version(name, r2.version)
    assert "Not promoted" in mv2.description and "| state_accuracy | higher |" in mv2.description
    assert "worse" in mv2.description and f"champion version {r1.version}" in mv2.description
    # version tags: lineage only (no copied metrics, no gate bookkeeping left behind)
    assert mv2.tags == {f"lineage.{k}": v for k, v in {**lineage, "dataset_dvc_hash": "def.dir"}.items()}
    assert client.get_model_version(name, r1.version).tags["lws.backbone"] == "path:/ckpt"
    assert client.get_model_version(name, r3.version).tags["champion.previous"] == r1.version
    # the evaluation's figures are linked to the MLflow 3 logged model (its page in the UI lists them)
    source = client.get_model_version(name, r3.version).source
    assert source.startswith("models:/m-"), source  # MLflow 3: the version points at a logged model
    logged = client.get_logged_model(source.removeprefix("models:/"))
    linked = {m.key: m.value for m in logged.metrics or []}
    assert abs(linked["state_accuracy"] - planted(2, state=0.92, task=0.4).value("state_accuracy")) < 1e-9
    # a gated metric missing from the scores: never promoted
    empty = planted(3)
    empty.metrics.pop("task_accuracy")
    assert not register_model(cfg, tiny_model, empty, {}).decision.promote


def test_champion_without_scores_on_the_set_is_re_evaluated_once(tiny_cfg, tiny_model, mlflow_server, tmp_path):
    """The champion was scored on another eval set: the gate re-evaluates it on the challenger's (the callback
    stands for `lws eval run` on the set pulled from DVC), records those scores on the champion's run, and
    the next challenger on that set reuses them."""
    from lws_core.ops.registry import register_model

    cfg = _cfg(tiny_cfg, mlflow_server, tmp_path)
    calls: list[str] = []

    def evaluate_champion(uri: str):
        calls.append(uri)
        return planted(0, eval_set="sha256:B")

    r1 = register_model(cfg, tiny_model, planted(0, eval_set="sha256:A"), {})
    r2 = register_model(cfg, tiny_model, planted(5, state=0.92, task=0.4, eval_set="sha256:B"), {},
                        evaluate_champion=evaluate_champion)
    assert calls == [f"models:/{cfg.registry.model_name}/{r1.version}"] and r2.decision.promote
    r3 = register_model(cfg, tiny_model, planted(6, state=0.84, eval_set="sha256:B"), {}, evaluate_champion=evaluate_champion)
    assert len(calls) == 1 and not r3.decision.promote  # r2's own scores on B were recorded at its registration
    # without a way to re-evaluate, a champion with no scores on the set is never replaced
    r4 = register_model(cfg, tiny_model, planted(7, state=0.99, task=0.9, eval_set="sha256:C"), {})
    assert not r4.decision.promote and "cannot be re-evaluated" in r4.decision.reasons[-1]


def test_registry_errors_are_not_no_champion(tiny_cfg, mlflow_server, tmp_path, fast_retries):
    from mlflow.tracking import MlflowClient

    from lws_core.ops.registry import read_alias

    client = MlflowClient(mlflow_server, mlflow_server)
    assert read_alias(client, "no-such-model", "champion", mlflow_server) is None
    client.create_registered_model(f"bare-{tmp_path.name[-8:]}")
    assert read_alias(client, f"bare-{tmp_path.name[-8:]}", "champion", mlflow_server) is None  # no such alias
    dead = MlflowClient("http://127.0.0.1:9", "http://127.0.0.1:9")
    with pytest.raises(ServiceError, match=r"reading lws@champion failed after 4 attempts: http://127.0.0.1:9"):
        read_alias(dead, "lws", "champion", "http://127.0.0.1:9")


def test_registry_outage_mid_gate_promotes_nothing(tiny_cfg, tiny_model, tmp_path, fast_retries):
    """The real server stops in the middle of a gate (while the champion is being re-evaluated): the gate
    retries, fails in one line, and the champion has not moved in the server's store (read directly)."""
    from mlflow.tracking import MlflowClient

    from lws_core.ops.registry import register_model

    root = tmp_path / "server"
    root.mkdir()
    proc, url = start_mlflow_server(root)
    try:
        cfg = _cfg(tiny_cfg, url, tmp_path)
        r1 = register_model(cfg, tiny_model, planted(0, eval_set="sha256:A"), {})

        def evaluate_champion(uri: str):
            stop_server(proc)  # the outage
            return planted(0, eval_set="sha256:B")

        with pytest.raises(ServiceError, match="failed after 4 attempts"):
            register_model(cfg, tiny_model, planted(5, state=0.99, task=0.9, eval_set="sha256:B"), {},
                           evaluate_champion=evaluate_champion)
    finally:
        stop_server(proc)
    store = f"sqlite:///{root / 'mlflow.db'}"  # the server's own backend store: what it would serve once back up
    client = MlflowClient(store, store)
    name = cfg.registry.model_name
    # (the SQL store answers versions as int, the REST API as str)
    assert str(client.get_model_version_by_alias(name, "champion").version) == r1.version
    assert str(client.get_model_version_by_alias(name, "challenger").version) == r1.version


def test_human_promote_and_rollback_are_recorded(tiny_cfg, tiny_model, mlflow_server, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from lws_core.cli.main import run
    from lws_core.ops.registry import register_model

    cfg = _cfg(tiny_cfg, mlflow_server, tmp_path)
    r1 = register_model(cfg, tiny_model, planted(0), {})
    r2 = register_model(cfg, tiny_model, planted(1, state=0.84), {})
    assert not r2.decision.promote
    params = tmp_path / "params.yaml"
    params.write_text(cfg.to_yaml())
    run(["pipeline", "promote", "--version", r2.version, "--reason", "listening test preferred it", "--config", str(params)])
    client = MlflowClient(mlflow_server, mlflow_server)
    name = cfg.registry.model_name
    assert client.get_model_version_by_alias(name, "champion").version == r2.version
    tags = client.get_model_version(name, r2.version).tags
    assert tags["promotion.reason"] == "listening test preferred it" and tags["champion.previous"] == r1.version
    assert tags["promotion.by"] and tags["promotion.at"]
    run(["pipeline", "rollback", "--reason", "complaints", "--config", str(params)])
    assert client.get_model_version_by_alias(name, "champion").version == r1.version
    tags = client.get_model_version(name, r2.version).tags
    assert tags["rollback.reason"] == "complaints" and tags["rollback.to"] == r1.version
    assert "rollback" in client.get_registered_model(name).tags["lws.last_action"]
    capsys.readouterr()
    # nothing earlier than the first champion; an unknown version: one-line errors, exit 2
    for argv, msg in ((["rollback", "--reason", "again"], "nothing to roll back to"),
                      (["promote", "--version", "999", "--reason", "x"], "no version 999")):
        with pytest.raises(SystemExit) as e:
            run(["pipeline", *argv, "--config", str(params)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_champion_uri_loads_into_engine(tiny_cfg, tiny_model, mlflow_server, tmp_path):
    import numpy as np

    from lws_core.engine import Engine
    from lws_core.ops.registry import register_model, resolve_model_uri

    cfg = _cfg(tiny_cfg, mlflow_server, tmp_path)
    register_model(cfg, tiny_model, planted(0), {})
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
    """A registration that fails midway (here: the server rejects an over-long lineage tag) leaves no
    version behind and both aliases where they were."""
    from mlflow.tracking import MlflowClient
    from mlflow.utils.validation import MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH

    from lws_core.ops.registry import register_model

    cfg = _cfg(tiny_cfg, mlflow_server, tmp_path)
    name = cfg.registry.model_name
    r1 = register_model(cfg, tiny_model, planted(0), {"dataset_dvc_hash": "a.dir"})
    with pytest.raises(Exception, match="(?i)length|exceed"):
        register_model(cfg, tiny_model, planted(1, state=0.95, task=0.5),
                       {"dataset_dvc_hash": "b.dir", "note": "x" * (MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH + 1)})
    client = MlflowClient(mlflow_server, mlflow_server)
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == [r1.version]
    assert client.get_model_version_by_alias(name, "champion").version == r1.version
    assert client.get_model_version_by_alias(name, "challenger").version == r1.version


def test_crash_after_version_exists_is_rolled_back(tiny_cfg, tiny_model, mlflow_server, tmp_path, monkeypatch):
    """An unexpected crash (LWS_FAULT_INJECT=gate: mid-gate, after the champion was read): the version is
    deleted and the aliases stay where they were."""
    from mlflow.tracking import MlflowClient

    from lws_core.ops.faults import InjectedFault
    from lws_core.ops.registry import register_model

    cfg = _cfg(tiny_cfg, mlflow_server, tmp_path)
    name = cfg.registry.model_name
    r1 = register_model(cfg, tiny_model, planted(0), {"dataset_dvc_hash": "a.dir"})
    for point in ("register", "gate"):
        monkeypatch.setenv("LWS_FAULT_INJECT", point)
        with pytest.raises(InjectedFault, match=point):
            register_model(cfg, tiny_model, planted(1, state=0.95, task=0.5), {"dataset_dvc_hash": "b.dir"})
    client = MlflowClient(mlflow_server, mlflow_server)
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == [r1.version]
    assert client.get_model_version_by_alias(name, "champion").version == r1.version
    assert client.get_model_version_by_alias(name, "challenger").version == r1.version

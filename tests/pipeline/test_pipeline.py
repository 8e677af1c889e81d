"""The retraining workflow: golden compiled YAML, submit/schedule, whole runs through KFP's local runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lws_core.config import LWSConfig
from workflows.pipeline import compile_pipeline

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "workflows" / "compiled" / "lws_pipeline.yaml"

TINY = [
    "data.sessions=40", "data.workers=1", "train.max_steps=6", "train.batch_size=4", "train.logging_steps=2",
    "train.save_steps=100", "eval.limit=3", "eval.consistency_embedding=false",
]


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_compiled_pipeline_matches_golden(tmp_path):
    out = compile_pipeline(LWSConfig(), str(tmp_path / "p.yaml"))
    assert _docs(Path(out)) == _docs(GOLDEN), "pipeline changed: run `lws pipeline compile` and review the YAML diff"


def test_cluster_settings_compile_into_platform_spec(tmp_path):
    cfg = LWSConfig().with_overrides({"pipeline.accelerator_count": 4, "pipeline.gpu_node_selector": {"gpu": "h100"}})
    spec, platform = _docs(Path(compile_pipeline(cfg, str(tmp_path / "p.yaml"))))
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceCount"] == "4"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-train"]["nodeSelector"]["labels"] == {"gpu": "h100"}
    assert k8s["exec-train"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    for ex in k8s.values():  # credentials only from Secrets, never literal values
        assert {s["secretName"] for s in ex["secretAsEnv"]} == {"lws-s3", "lws-mlflow"}
        assert ex["pvcMount"][0]["mountPath"] == "/mnt/lws"
    text = (tmp_path / "p.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY: " not in text and "password:" not in text.lower()
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert all(":" in i and not i.endswith(":latest") for i in images)


def test_submit_and_schedule_against_kfp_api_standin():
    """No KFP server can run here (it needs Kubernetes): a loopback stand-in records what the real kfp.Client sends."""
    sys.path.insert(0, str(Path(__file__).parent))
    from kfp_standin import KFPStandIn

    from lws_core.errors import InputError
    from workflows.remote import schedule, submit

    with KFPStandIn() as api:
        r = submit(LWSConfig(), api.url)
        assert r["run_id"] == "run-1"
        s = schedule(LWSConfig(), api.url, "0 0 3 * * *")
        assert s["recurring_run_id"] == "rr-1"
        posts = {p.split("?")[0]: b for m, p, b in api.requests if m == "POST"}
    run = posts["/apis/v2beta1/runs"]
    spec = run["pipeline_spec"]
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "lws-retraining"
    assert "kubernetes" in spec["platform_spec"]["platforms"]  # cluster settings travel with the run
    assert run["runtime_config"]["parameters"]["run_tag"] == r["run_tag"]
    rec = posts["/apis/v2beta1/recurringruns"]
    assert rec["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *" and rec["max_concurrency"] in ("1", 1)
    with pytest.raises(InputError, match="6 fields"):
        schedule(LWSConfig(), "http://127.0.0.1:9", "0 3 * * *")


def _run_cli(ws: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "lws_core.cli.main", "pipeline", "run", "--set", f"pipeline.workspace={ws}"]
    for s in [*TINY, *extra]:
        args += ["--set", s]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ws.parent)


def test_two_pipeline_runs_at_once_end_to_end(tmp_path):
    """The main job through the CLI, twice concurrently on one workspace (SQLite store, DVC cache)."""
    from mlflow.tracking import MlflowClient

    ws = tmp_path / "ws"
    ws.mkdir()
    a, b = _run_cli(ws), _run_cli(ws, "data.seed=1")
    out_a, out_b = a.communicate(timeout=900)[0], b.communicate(timeout=900)[0]
    assert a.returncode == 0, out_a[-3000:]
    assert b.returncode == 0, out_b[-3000:]
    for out in (out_a, out_b):
        assert "FINISHED" in out and "registered version" in out and "mlflow ui --backend-store-uri" in out
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}", f"sqlite:///{ws / 'mlflow.db'}")
    versions = client.search_model_versions("name='lws'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    champ = client.get_model_version_by_alias("lws", "champion")
    tags = client.get_model_version(champ.name, champ.version).tags
    for k in ("lineage.dataset_dvc_hash", "lineage.model_dvc_hash", "lineage.params_digest", "lineage.code_revision",
              "lineage.teacher", "gate.decision", "metric.state_accuracy"):
        assert k in tags, k
    parents = client.search_runs(["1"], filter_string="tags.`lws.role` = 'pipeline'")
    assert len(parents) == 2 and all(r.info.status == "FINISHED" for r in parents)
    steps = client.search_runs(["1"], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert {r.data.tags.get("lws.step") for r in steps} >= {"synthesize", "train", "evaluate", "register"}
    train_run = next(r for r in steps if r.data.tags.get("lws.step") == "train")
    assert len(client.get_metric_history(train_run.info.run_id, "loss_state")) >= 2  # per-channel loss curves
    # the dataset comes back from the DVC remote by the hash lineage recorded
    dataset_hash = tags["lineage.dataset_dvc_hash"]
    p = subprocess.run([sys.executable, "-m", "lws_core.cli.main", "data", "pull", "--version", dataset_hash,
                        "--out", str(tmp_path / "pulled"), "--set", f"pipeline.workspace={ws}"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "pulled" / "card.json").read_text())["schema_version"] == "lws-v1"


def test_failing_step_leaves_no_registry_state(tmp_path):
    from mlflow.tracking import MlflowClient

    ws = tmp_path / "ws"
    ws.mkdir()
    p = _run_cli(ws, "data.source.kind=file", f"data.source.path={tmp_path / 'missing.jsonl'}")
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 1, out[-2000:]
    assert "FAILED" in out
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}", f"sqlite:///{ws / 'mlflow.db'}")
    assert client.search_registered_models() == [] or client.search_model_versions("name='lws'") == []
    parents = client.search_runs(["1"], filter_string="tags.`lws.role` = 'pipeline'")
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert "lws.failure" in parents[0].data.tags

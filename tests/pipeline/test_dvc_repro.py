"""`dvc repro` of the repo's dvc.yaml on tiny params: the stages run the real `lws` commands, record params,
outs and metrics in dvc.lock, and DVC re-runs only what a params change invalidates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from lws_core.config import LWSConfig

ROOT = Path(__file__).resolve().parents[2]

# the smallest run through every stage (evaluate dominates: eval.limit sessions per split, streamed three
# times; the FDB probe is off here, tests/pipeline/test_pipeline.py runs it); the full-size runs are the benchmarks' job
TINY = {
    "data.sessions": 40, "data.workers": 1, "train.max_steps": 2, "train.batch_size": 4, "train.logging_steps": 1,
    "train.save_steps": 100, "train.backend": "torch", "eval.limit": 1, "eval.fdb_probe": False,
    "eval.consistency_embedding": False,
    "pretrain.backbone.sessions": 16, "pretrain.backbone.max_steps": 2, "pretrain.backbone.batch_size": 4,
    "pretrain.encoder.max_steps": 2, "pretrain.encoder.batch_size": 8, "pretrain.encoder.sessions": 0, "pretrain.encoder.eval_sessions": 2,
}
STAGES = {"synthesize", "version", "pretrain_backbone", "pretrain_encoder", "train", "evaluate", "register"}


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_dvc_repro_runs_the_lws_stages(tmp_path):
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
    shutil.copy(ROOT / ".dvcignore", work / ".dvcignore")  # what is not the data, as in the workspace DVC repo
    # stage deps name code folders: a copy gives DVC something to hash (the `lws` commands run the installed code)
    shutil.copytree(ROOT / "lws_core", work / "lws_core", ignore=shutil.ignore_patterns("__pycache__"))
    cfg = LWSConfig().with_overrides(TINY)
    (work / "params.yaml").write_text(cfg.to_yaml())
    assert _dvc(work, "init", "--no-scm").returncode == 0

    dag = _dvc(work, "dag", "--md")
    assert dag.returncode == 0, dag.stderr
    assert all(stage in dag.stdout for stage in STAGES)

    r = _dvc(work, "repro")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    assert set(lock) == STAGES
    assert lock["train"]["params"]["params.yaml"]["train"]["max_steps"] == 2
    assert lock["pretrain_backbone"]["params"]["params.yaml"]["pretrain.backbone"]["max_steps"] == 2
    train_deps = {d["path"]: d["md5"] for d in lock["train"]["deps"]}
    for stage, out in (("pretrain_backbone", "models/backbone"), ("pretrain_encoder", "models/encoder")):
        assert train_deps[out] == lock[stage]["outs"][0]["md5"]  # train started from those checkpoints
    spec = json.loads((work / "models" / "lws" / "lws_model.json").read_text())
    assert spec["backbone_source"] == "models/backbone" and spec["encoder_source"] == "models/encoder"
    assert lock["train"]["outs"][0]["md5"].endswith(".dir")
    eval_deps = {d["path"]: d["md5"] for d in lock["evaluate"]["deps"]}
    assert eval_deps["models/lws"] == lock["train"]["outs"][0]["md5"]  # evaluate consumed that model

    # the version stage pushed the dataset to the workspace's DVC remote; register recorded that hash as lineage
    data_hash = (work / "reports" / "dataset_hash.txt").read_text().strip()
    assert data_hash == lock["synthesize"]["outs"][0]["md5"]
    reg = json.loads((work / "reports" / "registration.json").read_text())
    assert reg["version"] == "1" and "challenger" in reg["aliases"] and reg["dataset_dvc_hash"] == data_hash
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{work / '.lws' / 'mlflow.db'}"
    mv = MlflowClient(uri, uri).get_model_version("lws", "1")
    assert mv.tags["lineage.dataset_dvc_hash"] == data_hash and "| state_accuracy | higher |" in mv.description

    metrics = json.loads(_dvc(work, "metrics", "show", "--json").stdout)
    shown = json.dumps(metrics)
    assert "schema_valid_rate" in shown and "state_accuracy" in shown

    # nothing changed: nothing to do; a train param changes: train is stale (evaluate follows once its input
    # model changes), synthesize is not
    assert "up to date" in _dvc(work, "status").stdout.lower()
    (work / "params.yaml").write_text(cfg.with_overrides({"train.max_steps": 3}).to_yaml())
    status = _dvc(work, "status", "--json")
    stale = set(json.loads(status.stdout))
    assert stale == {"train"}, status.stdout
    # an encoder setting makes only the encoder stale (train follows once its input checkpoint changes)
    (work / "params.yaml").write_text(cfg.with_overrides({"pretrain.encoder.max_steps": 3}).to_yaml())
    status = _dvc(work, "status", "--json")
    assert set(json.loads(status.stdout)) == {"pretrain_encoder"}, status.stdout

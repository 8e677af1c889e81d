"""The retraining workflow: golden compiled YAML, submit/schedule, whole runs through KFP's local runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lws_core.config import LWSConfig
from workflows.pipeline import compile_pipeline

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "workflows" / "compiled" / "lws_pipeline.yaml"

# The smallest run that still crosses every step and records what the assertions read (two logged losses,
# every part of evaluate); the full-size runs are the benchmarks' job. Evaluate dominates the test: it
# streams eval.limit sessions per split three times (LWS, text ceiling, cascade) plus 4 x fdb_probe_per_task.
TINY = [
    "data.sessions=40", "data.workers=1", "train.max_steps=2", "train.batch_size=4", "train.logging_steps=1",
    "train.save_steps=100", "eval.limit=1", "eval.fdb_probe_per_task=1", "eval.consistency_embedding=false",
    # kfp.local honours the tasks' retry policy (30 s backoff): a deliberately failing step would only wait
    "pipeline.retries=0",
    # the pretrain stand-ins, tiny: the same code paths in seconds
    "pretrain.backbone.sessions=16", "pretrain.backbone.max_steps=2", "pretrain.backbone.batch_size=4",
    "pretrain.encoder.max_steps=2", "pretrain.encoder.batch_size=8", "pretrain.encoder.sessions=0", "pretrain.encoder.eval_sessions=2",
    # the default gate, its state_accuracy floor out of reach: a tiny model that met it by chance on one
    # session became champion, and every later register then re-evaluated that champion on its own eval
    # set (an evaluate's cost each); the gate's champion paths are tests/ops/test_registry_server.py's
    "registry.gate=" + json.dumps([{**r.model_dump(mode="json"), **({"floor": 1.01} if r.metric == "state_accuracy" else {})}
                                   for r in LWSConfig().registry.gate]),
]


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _normalised(path: Path) -> list[dict]:
    """Volatile fields out: the SDK version, and the embedded default config (it changes whenever any
    section gains a field; it is checked on its own below)."""
    docs = _docs(path)
    docs[0].pop("sdkVersion", None)
    docs[0]["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"] = "<config>"
    return docs


def test_compiled_pipeline_matches_golden(tmp_path):
    out = Path(compile_pipeline(LWSConfig(), str(tmp_path / "p.yaml")))
    assert _normalised(out) == _normalised(GOLDEN), "pipeline changed: run `lws pipeline compile` and review the YAML diff"
    default = _docs(out)[0]["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    # a cluster run without arguments uses the defaults, with the workspace on the PVC every task mounts
    assert json.loads(default) == LWSConfig().with_overrides({"pipeline.workspace": "/mnt/lws/lws"}).to_dict()


def test_cluster_settings_compile_into_platform_spec(tmp_path):
    cfg = LWSConfig().with_overrides({
        "pipeline.accelerator_count": 4, "pipeline.gpu_node_selector": {"gpu": "h100"},
        "pipeline.resources.train.memory_limit": "48Gi", "pipeline.resources.register.cpu_limit": "500m",
    })
    spec, platform = _docs(Path(compile_pipeline(cfg, str(tmp_path / "p.yaml"))))
    executors = spec["deploymentSpec"]["executors"]
    train = executors["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceCount"] == "4"
    # pipeline.resources: the defaults (the encoder stage's measured peak) and the overrides, each on its own step
    assert train["resources"]["resourceMemoryLimit"] == "48Gi" and train["resources"]["resourceMemoryRequest"] == "2Gi"
    assert executors["exec-pretrain-encoder"]["container"]["resources"]["resourceMemoryRequest"] == "7Gi"
    assert executors["exec-register"]["container"]["resources"] == {"cpuLimit": 0.5, "resourceCpuLimit": "500m"}
    assert "resources" not in executors["exec-finalize"]["container"]
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


def test_trainjob_launcher_moves_the_gpus_off_the_waiting_step(tmp_path):
    """With ``train_launcher: trainjob`` the train step pod only submits and waits: it must not hold GPUs."""
    cfg = LWSConfig().with_overrides({"pipeline.accelerator_count": 4, "pipeline.train_launcher": "trainjob"})
    spec, platform = _docs(Path(compile_pipeline(cfg, str(tmp_path / "p.yaml"))))
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert "accelerator" not in train.get("resources", {})
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "tolerations" not in k8s["exec-train"] and "nodeSelector" not in k8s["exec-train"]


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


def _run_cli(ws: Path, *extra: str, fault: str | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "lws_core.cli.main", "pipeline", "run", "--set", f"pipeline.workspace={ws}"]
    for s in [*TINY, *extra]:
        args += ["--set", s]
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("LWS_FAULT_INJECT", None)
    if fault:  # lws_core.ops.faults: a step that breaks on purpose, inherited by the task subprocesses
        env["LWS_FAULT_INJECT"] = fault
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ws.parent, env=env)


def _finish(p: subprocess.Popen, rc: int = 0) -> str:
    out = p.communicate(timeout=900)[0]
    assert p.returncode == rc, out[-3000:]
    return out


def test_main_job_end_to_end(tmp_path):
    """The main job through the CLI on one workspace: two runs at once (SQLite store, DVC cache), a run whose
    late step (evaluate) fails, its rerun with the fault gone served synthesize, the pretrain steps and train
    from the cache, a run whose first step fails, and the dataset pulled back by the hash lineage recorded.
    (Real checkpoints configured, the pretrain steps skipping: tests/ops/test_pretrain_steps.py.)"""
    from mlflow.tracking import MlflowClient

    ws = tmp_path / "ws"
    ws.mkdir()
    # b trains with the plain-torch backend: a keeps the default (DeepSpeed) path, b the second store/cache writer
    # (b skips the FDB probe: a runs it, and evaluate's cost is what the two runs at once pay most for)
    a, b = _run_cli(ws), _run_cli(ws, "data.seed=1", "train.backend=torch", "eval.fdb_probe=false")
    out_a, out_b = _finish(a), _finish(b)
    for out in (out_a, out_b):
        assert "FINISHED" in out and "gate decision" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    exp = client.get_experiment_by_name("lws-retraining").experiment_id
    assert sorted(int(v.version) for v in client.search_model_versions("name='lws'")) == [1, 2]
    champ = client.get_model_version_by_alias("lws", "challenger")  # the last gated (a champion needs the floors)
    mv = client.get_model_version(champ.name, champ.version)
    tags = mv.tags
    for k in ("lineage.dataset_dvc_hash", "lineage.model_dvc_hash", "lineage.params_digest", "lineage.code_revision",
              "lineage.teacher", "lineage.dvc_remote", "lineage.eval_set",
              "lws.backbone", "lws.encoder", "lineage.backbone_dvc_hash", "lineage.encoder_run"):
        assert k in tags, k
    assert not any(k.startswith(("metric.", "gate.")) for k in tags)  # lineage only; the gate's table is the description
    assert "| state_accuracy | higher |" in mv.description
    # where the version started from: the pretrain step runs and the checkpoints' DVC hashes
    assert tags["lws.backbone"] == f"run:{tags['lineage.backbone_run']} dvc:{tags['lineage.backbone_dvc_hash']}"
    assert tags["lws.encoder"] == f"run:{tags['lineage.encoder_run']} dvc:{tags['lineage.encoder_dvc_hash']}"
    parents = client.search_runs([exp], filter_string="tags.`lws.role` = 'pipeline'")
    assert len(parents) == 2 and all(r.info.status == "FINISHED" for r in parents)
    steps = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    by_step = {r.data.tags.get("lws.step"): r for r in steps}
    assert set(by_step) == {"synthesize", "pretrain_backbone", "pretrain_encoder", "train", "evaluate", "register"}
    backbone_run, encoder_run = by_step["pretrain_backbone"], by_step["pretrain_encoder"]
    assert client.get_metric_history(backbone_run.info.run_id, "text_loss") and "final_loss" in backbone_run.data.metrics
    assert client.get_metric_history(encoder_run.info.run_id, "ctc_loss") and "wer_sessions" in encoder_run.data.metrics
    assert "system/peak_rss_mb" in encoder_run.data.metrics and "pretrain_report.json" in {
        f.path for f in client.list_artifacts(backbone_run.info.run_id)}
    # the synthesize run keeps what the data is (card) and how this run made it (timings, the teacher's spend)
    assert {"card.json", "synthesis.json"} <= {f.path for f in client.list_artifacts(by_step["synthesize"].info.run_id)}
    assert backbone_run.data.params["pretrain.backbone.max_steps"] == "2" and "train.max_steps" not in backbone_run.data.params
    assert "step pretrain_encoder" in out_a and "step pretrain_backbone" in out_a
    # the steps write progress lines into the run's log, which the pipeline's bar reads (workflows.local.step_progress)
    from workflows.local import step_progress

    notes = [n for f in (ws / "logs").glob("*.log") for ln in f.read_text(errors="replace").splitlines() if (n := step_progress(ln))]
    for desc in ("synth", "pretrain backbone 100%", "pretrain encoder 100%", "train", "fdb 100%"):
        assert any(n.startswith(desc) for n in notes), (desc, sorted({n.split(" ")[0] for n in notes}))
    train_run = by_step["train"]
    # the LWS stage started from the two stand-ins this run pretrained (the KFP artifacts of those steps)
    backbone_dir, encoder_dir = train_run.data.tags["lws.backbone_path"], train_run.data.tags["lws.encoder_path"]
    assert (Path(backbone_dir) / "pretrain_report.json").is_file() and (Path(encoder_dir) / "lws_encoder.json").is_file()
    assert len(client.get_metric_history(train_run.info.run_id, "loss_state")) >= 2  # per-channel loss curves
    assert train_run.data.metrics["system/peak_rss_mb"] > 50
    assert "system/cpu_utilization_percentage" in train_run.data.metrics  # MLflow's own system-metrics monitor
    # each step run carries its own config sections as params (and only those)
    assert train_run.data.params["train.max_steps"] == "2" and "model.preset" in train_run.data.params
    assert not any(k.startswith(("eval.", "data.", "pretrain.backbone", "pretrain.encoder")) for k in train_run.data.params)
    assert "pretrain.warmup.projector_steps" in train_run.data.params
    assert by_step["synthesize"].data.params["data.sessions"] == "40"
    assert by_step["evaluate"].data.params["eval.limit"] == "1"
    assert "registry.gate" in by_step["register"].data.params
    eval_files = {f.path for f in client.list_artifacts(by_step["evaluate"].info.run_id, "eval_report")}
    assert "eval_report/report.md" in eval_files and "eval_report/metrics.json" in eval_files

    # a late step fails (evaluate, on a changed eval setting, after synthesize and train were served from
    # the cache): nothing is registered, no alias moves, the parent is FAILED with the failed step under it
    aliases = dict(client.get_registered_model("lws").aliases)  # alias -> version (a champion needs the floors)
    assert "challenger" in aliases
    out_f = _finish(_run_cli(ws, "eval.fdb_probe=false", fault="evaluate"), rc=1)
    assert "FAILED" in out_f
    assert any("fault injected at 'evaluate'" in f.read_text(errors="replace") for f in (ws / "logs").glob("*.log"))
    assert sorted(int(v.version) for v in client.search_model_versions("name='lws'")) == [1, 2]
    assert dict(client.get_registered_model("lws").aliases) == aliases
    failed = client.search_runs([exp], filter_string="tags.`lws.role` = 'pipeline'", order_by=["start_time DESC"])[0]
    assert failed.info.status == "FAILED" and "lws.failure" in failed.data.tags and "registry.version" not in failed.data.tags
    nested = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{failed.info.run_id}'")
    states = [(r.data.tags.get("lws.step"), r.info.status, r.info.run_id, r.data.tags.get("lws.pipeline_run")) for r in nested]
    assert [s[:2] for s in states] == [("evaluate", "FAILED")], (states, failed.data.tags.get("lws.pipeline_run"))
    assert nested[0].data.params["eval.fdb_probe"] == "False"

    # the same run with the fault gone: each step's cache key holds only the config sections it reads, so
    # KFP skips synthesize and train (finished before the failure) and evaluates again; a version is registered.
    # A new gate confidence and retry count (read only by the register step and the compiler) rerun nothing cached.
    out_c = _finish(_run_cli(ws, "eval.fdb_probe=false", "registry.gate_confidence=0.9", "pipeline.retries=2"))
    assert "cached (skipped)" in out_c
    trains = client.search_runs([exp], filter_string="tags.`lws.step` = 'train'")
    assert len(trains) == 2  # no third training
    for step in ("synthesize", "pretrain_backbone", "pretrain_encoder"):  # nor a third synthesis or pretraining
        assert len(client.search_runs([exp], filter_string=f"tags.`lws.step` = '{step}'")) == 2, step
    assert len(client.search_runs([exp], filter_string="tags.`lws.step` = 'evaluate'")) == 4  # a, b, failed, this
    newest = client.search_runs([exp], filter_string="tags.`lws.role` = 'pipeline'", order_by=["start_time DESC"])[0]
    assert {"lws.cached.synthesize", "lws.cached.pretrain_backbone", "lws.cached.pretrain_encoder",
            "lws.cached.train"} <= set(newest.data.tags)
    assert "lws.cached.evaluate" not in newest.data.tags
    assert newest.info.status == "FINISHED" and newest.data.tags["registry.version"] == "3"
    assert newest.data.tags["lws.backbone"].startswith("run:")  # lineage of the cached stand-ins

    # the first step fails: the exit handler marks the parent FAILED, nothing is registered, no alias moves
    aliases = dict(client.get_registered_model("lws").aliases)  # alias -> version (a champion needs the floors)
    assert "challenger" in aliases
    out_d = _finish(_run_cli(ws, "data.source.kind=file", f"data.source.path={tmp_path / 'missing.jsonl'}"), rc=1)
    assert "FAILED" in out_d
    assert sorted(int(v.version) for v in client.search_model_versions("name='lws'")) == [1, 2, 3]
    assert dict(client.get_registered_model("lws").aliases) == aliases
    failed = client.search_runs([exp], filter_string="tags.`lws.role` = 'pipeline'", order_by=["start_time DESC"])[0]
    assert failed.info.status == "FAILED" and "lws.failure" in failed.data.tags

    # the dataset comes back from the DVC remote by the hash lineage recorded
    p = subprocess.run([sys.executable, "-m", "lws_core.cli.main", "data", "pull", "--version", tags["lineage.dataset_dvc_hash"],
                        "--out", str(tmp_path / "pulled"), "--set", f"pipeline.workspace={ws}"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "pulled" / "card.json").read_text())["schema_version"] == "lws-v1"


def test_cli_errors_are_one_line(tmp_path):
    """User-facing failures of the pipeline/data commands: one `error:` line naming the endpoint or value, exit 2."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    base = [sys.executable, "-m", "lws_core.cli.main"]
    p = subprocess.run([*base, "pipeline", "submit", "--host", "http://127.0.0.1:9", "--skip-check"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "127.0.0.1:9" in p.stderr, p.stderr[-2000:]
    assert len(p.stderr.strip().splitlines()) == 1
    # without --skip-check the pre-flight check speaks first: one line per part, then one error line
    p = subprocess.run([*base, "pipeline", "submit", "--host", "http://127.0.0.1:9"], capture_output=True, text=True, env=env)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert p.returncode == 2 and len(errors) == 1 and "127.0.0.1:9" in p.stderr, p.stderr[-2000:]
    p = subprocess.run([*base, "pipeline", "schedule", "--host", "http://127.0.0.1:9", "--cron", "0 3 * * *"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "6 fields" in p.stderr
    p = subprocess.run([*base, "data", "pull", "--version", "abc", "--out", str(tmp_path / "x"),
                        "--set", f"pipeline.workspace={tmp_path / 'ws'}"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "not a DVC directory hash" in p.stderr
    p = subprocess.run([*base, "pipeline", "register", "--model", str(tmp_path), "--eval", str(tmp_path),
                        "--dataset-hash-file", str(tmp_path / "nope.txt"), "--set", f"pipeline.workspace={tmp_path / 'ws'}"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "nope.txt" in p.stderr, p.stderr[-2000:]

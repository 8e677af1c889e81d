"""TrainJob rendering from the config: valid against the real Kubeflow Trainer v2.3.0 CRD schema
(tests/infra/schemas/, unknown fields rejected), GPUs, secrets by reference, the checked-in example."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from lws_core.config import LWSConfig, config_from_dict, load_config
from lws_core.errors import ConfigError
from lws_core.ops.trainjob import MOUNT, kube_cron, pvc_path, render_trainjob
from tests.infra.conftest import ROOT
from tests.infra.crd import TRAINJOB_CRD, assert_valid_trainjob, crd_errors


def _pod_patch(job: dict) -> dict:
    rj = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    return rj["template"]["spec"]["template"]["spec"]


def test_default_trainjob_is_valid_and_requests_gpus() -> None:
    cfg = LWSConfig()
    job = render_trainjob(cfg, "datasets/d1", "models/m1", nodes=4)
    assert_valid_trainjob(job)
    tr = job["spec"]["trainer"]
    assert job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert tr["numNodes"] == 4 and tr["numProcPerNode"] == cfg.pipeline.accelerator_count
    assert tr["image"] == cfg.pipeline.train_image
    gpu = cfg.pipeline.accelerator_type
    assert tr["resourcesPerNode"]["limits"][gpu] == tr["resourcesPerNode"]["requests"][gpu] == "1"
    assert "torchrun --no-python lws train" in tr["command"][-1]
    env = {e["name"]: e for e in tr["env"]}
    assert env["LWS_DATA"]["value"] == f"{MOUNT}/datasets/d1" and env["LWS_OUT"]["value"] == f"{MOUNT}/models/m1"
    assert config_from_dict(yaml.safe_load(env["LWS_PARAMS_YAML"]["value"])) == cfg
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD"):
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] in (cfg.pipeline.s3_secret, cfg.pipeline.mlflow_secret)
        assert "value" not in env[var]
    pod = _pod_patch(job)
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == cfg.pipeline.pvc_name
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == MOUNT
    assert [t["key"] for t in pod["tolerations"]] == cfg.pipeline.gpu_tolerations


def test_config_drives_the_job() -> None:
    cfg = LWSConfig().with_overrides({
        "pipeline.accelerator_count": 8, "pipeline.accelerator_type": "amd.com/gpu",
        "pipeline.gpu_node_selector": {"pool": "h100"}, "pipeline.train_image": "registry.local/lws-cuda:1.2.3",
        "pipeline.pvc_name": "other-pvc", "registry.tracking_uri": "http://lws-mlflow.lws:5000",
    })
    job = render_trainjob(cfg, "pvc://other-pvc/data", "/mnt/lws/out", nodes=2)
    assert_valid_trainjob(job)
    tr = job["spec"]["trainer"]
    assert tr["numProcPerNode"] == 8 and tr["resourcesPerNode"]["limits"]["amd.com/gpu"] == "8"
    assert tr["image"] == "registry.local/lws-cuda:1.2.3"
    assert _pod_patch(job)["nodeSelector"] == {"pool": "h100"}
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://lws-mlflow.lws:5000"} in tr["env"]
    assert job["metadata"]["labels"]["lws.dev/config-digest"] == cfg.digest()
    # deterministic name, different for different inputs
    assert job["metadata"]["name"] == render_trainjob(cfg, "pvc://other-pvc/data", "/mnt/lws/out", nodes=2)["metadata"]["name"]
    assert job["metadata"]["name"] != render_trainjob(cfg, "pvc://other-pvc/data", "/mnt/lws/out", nodes=3)["metadata"]["name"]


def test_cpu_only_config_requests_no_gpu() -> None:
    job = render_trainjob(LWSConfig().with_overrides({"pipeline.accelerator_count": 0}), "d", "m")
    tr = job["spec"]["trainer"]
    assert tr["numProcPerNode"] == 1
    assert "nvidia.com/gpu" not in str(tr["resourcesPerNode"]) and "tolerations" not in _pod_patch(job)


@pytest.mark.parametrize(
    ("data", "out", "nodes", "match"),
    [
        ("s3://bucket/d", "m", 1, "only PVC paths"),
        ("pvc://someone-else/d", "m", 1, "names PVC"),
        ("../../etc", "m", 1, "not a directory under"),
        ("/data/d", "m", 1, "not a directory under"),
        ("d", "d/inner", 1, "must not be the dataset"),
        ("d", "m", 0, "nodes must be"),
        ("", "m", 1, "empty"),
    ],
)
def test_bad_locations_are_config_errors(data: str, out: str, nodes: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        render_trainjob(LWSConfig(), data, out, nodes=nodes)


def test_crd_schema_rejects_what_the_api_server_rejects() -> None:
    """The checker is not vacuous: typos, wrong types, over-long values, bad names and CEL rules all fail."""
    assert "kubeflow/trainer" in TRAINJOB_CRD.read_text()[:600] and "Apache License" in TRAINJOB_CRD.read_text()[:600]
    good = render_trainjob(LWSConfig(), "d", "m")
    assert crd_errors(good) == []

    def broken(edit) -> list[str]:  # noqa: ANN001
        job = copy.deepcopy(good)
        edit(job)
        return crd_errors(job)

    tr = lambda j: j["spec"]["trainer"]  # noqa: E731
    assert any("numNode" in e for e in broken(lambda j: tr(j).update(numNode=2)))  # unknown field (typo)
    assert any("numNodes" in e for e in broken(lambda j: tr(j).update(numNodes="2")))  # wrong type
    assert any("image" in e for e in broken(lambda j: tr(j).update(image="x" * 501)))  # maxLength 500
    assert any("runtimeRef" in e for e in broken(lambda j: j["spec"].pop("runtimeRef")))  # required
    assert any("DNS label" in e for e in broken(lambda j: j["metadata"].update(name="Bad_Name")))  # the CRD's CEL rule
    assert any("63 characters" in e for e in broken(lambda j: j["metadata"].update(name="a" * 64)))
    pod = lambda j: _pod_patch(j)["containers"][0]  # noqa: E731
    assert any("volumeMount" in e for e in broken(lambda j: pod(j).update(volumeMount=[])))  # deep inside the patch
    assert any("manager" in e for e in broken(lambda j: j["spec"]["runtimePatches"][0].pop("manager")))
    # CEL rules below the root, run by the CEL library with `self` bound to that node
    uri = "spec.initializer.dataset.storageUri: storageUri may be empty, or it must be a valid URI (scheme://...)"
    assert uri in broken(lambda j: j["spec"].update(initializer={"dataset": {"storageUri": "no-scheme/path"}}))
    assert broken(lambda j: j["spec"].update(initializer={"dataset": {"storageUri": "hf://org/data"}})) == []
    assert any("ManagedBy must be" in e for e in broken(lambda j: j["spec"].update(managedBy="someone/else")))
    assert any("lastUpdatedTime is required" in e for e in broken(lambda j: j.update(status={"trainerStatus": {}})))
    # transition rules (`self == oldSelf`, 13 of them) only apply to updates: the valid job above passed them


def test_pvc_path_and_kube_cron() -> None:
    assert pvc_path("a/b/../c", "lws-work") == f"{MOUNT}/a/c"
    assert kube_cron("0 0 3 * * *") == "0 3 * * *"
    assert kube_cron("0 */15 * * * 1-5") == "*/15 * * * 1-5"
    with pytest.raises(ConfigError, match="6 fields"):
        kube_cron("0 3 * * *")
    with pytest.raises(ConfigError, match="second 30"):
        kube_cron("30 0 3 * * *")


def test_checked_in_example_matches_renderer() -> None:
    """infra/k8s/trainjob/trainjob.yaml and the CronJob schedule are what sync.py renders from params.yaml."""
    r = subprocess.run([sys.executable, str(ROOT / "infra/k8s/sync.py"), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    example = yaml.safe_load((ROOT / "infra/k8s/trainjob/trainjob.yaml").read_text())
    cfg = load_config(ROOT / "params.yaml")
    assert example == render_trainjob(cfg, "datasets/current", "models/trainjob", nodes=2)
    assert_valid_trainjob(example)


def test_mount_matches_the_pipeline() -> None:
    from lws_core.ops import trainjob
    from workflows.pipeline import CHECKPOINT_MOUNT, MLFLOW_ENV, S3_ENV

    assert trainjob.MOUNT == CHECKPOINT_MOUNT
    assert sorted(trainjob.S3_ENV.items()) == sorted((v, k) for k, v in S3_ENV.items())
    assert sorted(trainjob.MLFLOW_ENV.items()) == sorted((v, k) for k, v in MLFLOW_ENV.items())

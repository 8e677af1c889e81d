"""Where an embedded (laptop) run keeps its state: one folder, everything inside it.

    <workspace>/mlflow.db        MLflow tracking + registry (SQLite)
    <workspace>/mlartifacts/     MLflow artifacts
    <workspace>/dvc/             DVC repository (no git needed)
    <workspace>/dvc-remote/      DVC remote (a local folder by default)
    <workspace>/kfp/             KFP local pipeline root (artifacts of each task)
    <workspace>/cache/           models downloaded from the registry
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def from_config(cls, cfg) -> Workspace:  # noqa: ANN001
        root = Path(cfg.pipeline.workspace).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def dvc_repo(self) -> Path:
        return self.root / "dvc"

    @property
    def dvc_remote(self) -> Path:
        return self.root / "dvc-remote"

    @property
    def kfp_root(self) -> Path:
        return self.root / "kfp"

    @property
    def cache(self) -> Path:
        return self.root / "cache"


def tracking_uri(cfg) -> str:  # noqa: ANN001
    """The MLflow URI: the configured server/DB, else the workspace's SQLite file."""
    return cfg.registry.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or Workspace.from_config(cfg).tracking_uri


def artifact_location(cfg) -> str | None:  # noqa: ANN001
    """Where a new experiment keeps its artifacts: the configured location (e.g. ``s3://bucket/mlflow``),
    else the workspace folder for a SQLite store; a tracking server decides for itself (None)."""
    if cfg.registry.artifact_location:
        return cfg.registry.artifact_location
    if tracking_uri(cfg).startswith("sqlite:"):
        return Workspace.from_config(cfg).artifacts.as_uri()
    return None


def configure_mlflow_env(cfg) -> None:  # noqa: ANN001
    """Point MLflow's S3 artifact client at the configured S3-compatible endpoint (MinIO, Ceph, moto...).
    The config, when it names one, wins over an inherited ``MLFLOW_S3_ENDPOINT_URL`` (an earlier config
    in the same process, a shell export): the endpoint a run uses is the one its config records.
    Credentials stay in the environment (AWS_* from a Secret on a cluster), never in the config."""
    if cfg.registry.s3_endpoint_url:
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = cfg.registry.s3_endpoint_url
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def artifact_endpoint(cfg) -> str:  # noqa: ANN001
    """The endpoint artifact uploads and downloads talk to, for error messages: the S3 endpoint when
    artifacts live in S3 (not the tracking server, which may be up while the bucket is not)."""
    loc = cfg.registry.artifact_location or ""
    if loc.startswith("s3://"):
        endpoint = cfg.registry.s3_endpoint_url or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or "AWS S3"
        return f"{endpoint} ({loc})"
    return tracking_uri(cfg)


_READY: set[str] = set()


def ensure_store(uri: str) -> None:
    """Create/migrate a SQLite tracking store under a file lock, once per process.

    MLflow migrates a new SQLite DB on first use; two processes doing that at once
    (two pipeline runs, or parallel KFP tasks) collide ("duplicate column name",
    "database is locked"). After the first migration, opening it is read-only.
    """
    if not uri.startswith("sqlite:///") or uri in _READY:
        return
    from mlflow.tracking import MlflowClient

    db = Path(uri[len("sqlite:///") :])
    with file_lock(db.parent / f"{db.name}.lock"):
        MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)
    _READY.add(uri)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Cross-process lock (two pipeline runs at once must not interleave DVC or registry updates).

    Blocks until the other holder releases it; the OS drops the lock if a holder dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield

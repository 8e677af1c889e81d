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
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


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


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Cross-process lock (two pipeline runs at once must not interleave DVC or registry updates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

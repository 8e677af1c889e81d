"""Fixtures: a copy of infra/k8s with the secret templates filled in, as a user would."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")


@pytest.fixture(scope="session")
def k8s_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tmp/infra/k8s; each `key=` in a *.env.example becomes `key=test-<key>` (kustomize reads only inside it)."""
    tmp = tmp_path_factory.mktemp("k8s")
    shutil.copytree(ROOT / "infra/k8s", tmp / "infra/k8s")
    for ex in (tmp / "infra/k8s").rglob("*.env.example"):
        lines = []
        for line in ex.read_text().splitlines():
            if line and not line.startswith("#") and line.endswith("="):
                line += "test-" + line[:-1]
            lines.append(line)
        ex.with_name(ex.name.removesuffix(".example")).write_text("\n".join(lines) + "\n")
    return tmp / "infra/k8s"

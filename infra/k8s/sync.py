"""Regenerate the config-derived manifests from params.yaml (run after changing it).

Writes infra/k8s/trainjob/trainjob.yaml (the example TrainJob from
``lws_core.ops.trainjob.render_trainjob``), the CronJob schedule in
infra/k8s/base/cronjob.yaml (``pipeline.cron`` without its seconds field) and
infra/k8s/base/params.yaml, a copy of params.yaml for the ``lws-params`` ConfigMap:
kustomize loads files only from inside the kustomization root, and with the copy
there ``kubectl apply -k infra/k8s/overlays/dev`` works without
``--load-restrictor LoadRestrictionsNone``. tests/infra checks that the checked-in
files match. ``--check`` only compares.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lws_core.config import load_config
from lws_core.ops.trainjob import kube_cron, render_trainjob, to_yaml

ROOT = Path(__file__).resolve().parents[2]
TRAINJOB = ROOT / "infra/k8s/trainjob/trainjob.yaml"
CRONJOB = ROOT / "infra/k8s/base/cronjob.yaml"
PARAMS_COPY = ROOT / "infra/k8s/base/params.yaml"
EXAMPLE_ARGS = {"data_uri": "datasets/current", "out_uri": "models/trainjob", "nodes": 2}
HEADER = (
    "# Example TrainJob rendered from params.yaml by infra/k8s/sync.py\n"
    "# (lws_core.ops.trainjob.render_trainjob(cfg, 'datasets/current', 'models/trainjob', nodes=2)).\n"
    "# Needs Kubeflow Trainer v2 with the torch-distributed ClusterTrainingRuntime, and the\n"
    "# dataset on the lws-work PVC: kubectl -n lws create -f infra/k8s/trainjob/trainjob.yaml\n"
)
PARAMS_HEADER = (
    "# Copy of the repository's params.yaml, written by infra/k8s/sync.py: edit ../../../params.yaml\n"
    "# and run the script. It is here because kustomize reads files only inside the kustomization root.\n"
)


def params_copy(params: Path = ROOT / "params.yaml") -> str:
    """What infra/k8s/base/params.yaml holds: the header, then params.yaml byte for byte."""
    return PARAMS_HEADER + params.read_text()


def expected(params: Path = ROOT / "params.yaml") -> dict[Path, str]:
    cfg = load_config(params if params.exists() else None)
    job = render_trainjob(cfg, **EXAMPLE_ARGS)
    cron_text = CRONJOB.read_text()
    schedule = kube_cron(cfg.pipeline.cron)
    new_cron, n = re.subn(r'(?m)^  schedule: ".*"$', f'  schedule: "{schedule}"', cron_text)
    if n != 1:
        raise SystemExit(f"{CRONJOB}: expected one '  schedule:' line, found {n}")
    out = {TRAINJOB: HEADER + to_yaml(job), CRONJOB: new_cron}
    if params.exists():
        out[PARAMS_COPY] = params_copy(params)
    return out


def main(argv: list[str]) -> int:
    stale = [p for p, text in expected().items() if not p.exists() or p.read_text() != text]
    if "--check" in argv:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (run: python infra/k8s/sync.py)")
        return 1 if stale else 0
    for p, text in expected().items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Shared fixtures. Tests run offline on CPU; heavy fixtures are session-scoped and built once."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two xdist workers on a 2-core machine: one torch thread each (and in every
    # subprocess a test starts), or four spinning OpenMP threads share two cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

# The slowest test files, started first so that the two workers end together (measured with
# `pytest --durations=0`: the pipeline e2e alone is about a quarter of the suite's CPU time).
FIRST = ("tests/pipeline/test_pipeline.py", "tests/pipeline/test_dvc_repro.py", "tests/train/test_training.py")


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """``build(dir)`` once per test session, also across xdist workers: the first worker builds under a file
    lock in the directory all workers share (this run's base), the others wait and reuse it. Returns dir."""
    from filelock import FileLock

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.mktemp(name) / "out"
        build(out)
        return out
    root = tmp_path_factory.getbasetemp().parent / f"shared-{name}"
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{root}.lock"):
        if (root / ".done").exists():
            return root / "out"
        shutil.rmtree(root, ignore_errors=True)  # a build that died half way
        root.mkdir()
        build(root / "out")
        (root / ".done").touch()
        return root / "out"


# Room the suite's temporary folders need: at most 0.58 GB at once, sampled every 10 s over a fresh-clone
# `CI=true make test` (stop 43, two workers; passing tests' folders are removed as they pass, pyproject's
# tmp_path_retention_policy), with margin for what falls between samples. CI's disk is shared: it once ran out mid-run.
PEAK_TMP_GB = 1.5


def _room_line() -> tuple[str, bool]:
    import tempfile

    free = shutil.disk_usage(tempfile.gettempdir()).free / 2**30
    line = f"temporary folders: {tempfile.gettempdir()}, {free:.1f} GB free (the suite needs up to {PEAK_TMP_GB} GB)"
    return line, free < PEAK_TMP_GB


def pytest_report_header(config):  # noqa: ANN001, ANN201
    """Say how much room the temporary folders have (a full disk otherwise shows up as dozens of unrelated
    'No space left on device' errors)."""
    return _room_line()[0]


def pytest_sessionstart(session):  # noqa: ANN001, ANN201
    """Warn on stderr, also under -q, when the temporary folders have less room than the suite needs."""
    line, low = _room_line()
    if low and not os.environ.get("PYTEST_XDIST_WORKER"):
        import sys

        sys.stderr.write(f"WARNING: {line}: expect 'No space left on device' failures; free some space first\n")


def pytest_collection_modifyitems(config, items):  # noqa: ANN001
    """The slowest files first (a stable sort: the order inside each file is kept); GPU tests skip cleanly
    on machines without CUDA."""
    rank = {f: i for i, f in enumerate(FIRST)}
    items.sort(key=lambda it: rank.get(it.nodeid.split("::")[0], len(FIRST)))
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch always installed
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not the keyword: tests/gpu/ holds CPU tests too
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_cfg():
    """The default config shrunk for tests: same architecture and code paths, fewer sessions and steps."""
    from lws_core.config import LWSConfig

    return LWSConfig().with_overrides(
        {
            "data.sessions": 48,
            "data.workers": 1,
            "train.max_steps": 8,
            "train.batch_size": 4,
            "train.logging_steps": 2,
            "train.save_steps": 4,
            "eval.limit": 4,
            "eval.consistency_embedding": False,
        }
    )


@pytest.fixture(scope="session")
def tiny_dataset(tiny_cfg, tmp_path_factory):
    """A real synthesized dataset (espeak-ng speech, template teacher), built once per test session."""
    from lws_core.data import synthesize

    return build_once(tmp_path_factory, "data", lambda out: synthesize(tiny_cfg, out, progress=False))


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg, tiny_dataset, tmp_path_factory):
    """A tiny model trained for a few steps with the plain-torch backend (fast, deterministic)."""
    from lws_core.train import train

    cfg = tiny_cfg.with_overrides({"train.backend": "torch"})
    return build_once(tmp_path_factory, "model", lambda out: train(cfg, tiny_dataset, out, progress=False))


# torch.distributed rank variables (in-process DeepSpeed) and MLflow URIs (mlflow.set_tracking_uri exports them)
_RANK_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _no_leaked_rank_env():
    """Variables set in-process by one test must never reach later tests' subprocesses."""
    before = {k: os.environ.get(k) for k in _RANK_VARS}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v

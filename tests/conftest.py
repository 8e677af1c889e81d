"""Shared fixtures. Tests run offline on CPU; heavy fixtures are session-scoped and built once."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pytest


def pytest_collection_modifyitems(config, items):  # noqa: ANN001
    """GPU tests skip cleanly on machines without CUDA."""
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

    out = tmp_path_factory.mktemp("data") / "ds"
    synthesize(tiny_cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg, tiny_dataset, tmp_path_factory):
    """A tiny model trained for a few steps with the plain-torch backend (fast, deterministic)."""
    from lws_core.train import train

    out = tmp_path_factory.mktemp("model") / "m"
    train(tiny_cfg.with_overrides({"train.backend": "torch"}), tiny_dataset, out, progress=False)
    return out


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

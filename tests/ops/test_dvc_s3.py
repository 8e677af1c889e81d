"""DVC versioning against a real S3-protocol server on loopback (moto server): push, then pull into a fresh workspace."""

from __future__ import annotations

import filecmp

import boto3
import pytest

from lws_core.errors import InputError, ServiceError


def test_dataset_round_trip_through_s3(tiny_cfg, tiny_dataset, s3_server, aws_env, tmp_path):
    from lws_core.ops.versioning import pull_version, version_dataset, version_path

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="lws-data")
    over = {"registry.dvc_remote": "s3://lws-data/dvc", "registry.s3_endpoint_url": s3_server}
    cfg_a = tiny_cfg.with_overrides({**over, "pipeline.workspace": str(tmp_path / "a")})
    md5 = version_dataset(cfg_a, tiny_dataset)
    assert md5.endswith(".dir")
    keys = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="lws-data").get("KeyCount", 0)
    assert keys > 3
    # a different machine (fresh workspace, empty cache) brings the exact dataset back by hash
    cfg_b = tiny_cfg.with_overrides({**over, "pipeline.workspace": str(tmp_path / "b")})
    out = pull_version(cfg_b, md5, tmp_path / "restored")
    cmp = filecmp.dircmp(tiny_dataset, out)
    # everything but synthesis.json, the run's own facts (wall time, the teacher's spend), which DVC leaves out
    assert not cmp.diff_files and cmp.left_only == ["synthesis.json"] and not cmp.right_only
    # same content -> same hash (idempotent versioning)
    assert version_path(cfg_a, out, "dataset") == md5
    # the same config synthesized again is the same version: before the card lost its timings and the splits
    # their path-derived fingerprints, every synthesis was a new version of equal data
    from lws_core.data import synthesize

    synthesize(tiny_cfg, tmp_path / "again", progress=False)
    assert version_path(cfg_a, tmp_path / "again", "dataset") == md5
    # (the shared tiny dataset may by now hold `datasets` cache files that other tests' readers wrote: not versioned)
    # the project's own .dvcignore leaves out the same files, so `dvc repro`'s dataset hash is the lineage's
    from pathlib import Path

    from lws_core.data.card import UNVERSIONED

    root_ignore = Path(__file__).resolve().parents[2] / ".dvcignore"
    assert [ln for ln in root_ignore.read_text().splitlines() if ln and not ln.startswith("#")] == list(UNVERSIONED)
    with pytest.raises(InputError, match="not a DVC directory hash"):
        pull_version(cfg_b, "nope", tmp_path / "x")
    with pytest.raises(InputError, match="--kind"):
        version_path(cfg_b, tiny_dataset, "../escape")


def test_unknown_version_and_unreachable_endpoint(tiny_cfg, tiny_dataset, s3_server, aws_env, tmp_path, monkeypatch):
    from lws_core.ops import retry
    from lws_core.ops.versioning import pull_version, version_path

    monkeypatch.setattr(retry.time, "sleep", lambda s: None)
    # botocore's own retries (5 attempts, backoff) would wait ~30 s at the dead endpoint below before
    # lws's retry loop, the part under test, sees the failure: one attempt each
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="lws-empty")
    cfg = tiny_cfg.with_overrides({"registry.dvc_remote": "s3://lws-empty/dvc", "registry.s3_endpoint_url": s3_server,
                                   "pipeline.workspace": str(tmp_path / "c")})
    with pytest.raises((InputError, ServiceError)):
        pull_version(cfg, "0" * 32 + ".dir", tmp_path / "y")
    dead = cfg.with_overrides({"registry.s3_endpoint_url": "http://127.0.0.1:9", "pipeline.workspace": str(tmp_path / "d")})
    with pytest.raises(ServiceError, match="127.0.0.1:9"):
        version_path(dead, tiny_dataset, "dataset")

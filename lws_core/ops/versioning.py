"""DVC versioning of datasets and checkpoints: a DVC repo in the workspace, pushed to a local or S3 remote.

The hash returned by :func:`version_path` is DVC's directory hash (``<md5>.dir``);
lineage tags record it, and :func:`pull_version` brings that exact content back
from the remote into any folder.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml

from lws_core.errors import InputError
from lws_core.ops.retry import with_retries
from lws_core.ops.workspace import Workspace, file_lock

REMOTE = "store"


def remote_url(cfg) -> str:  # noqa: ANN001
    return cfg.registry.dvc_remote or str(Workspace.from_config(cfg).dvc_remote)


def _repo(cfg):  # noqa: ANN001, ANN202
    """Open (creating on first use) the workspace DVC repo with the configured remote."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    from dvc.repo import Repo

    root = Workspace.from_config(cfg).dvc_repo
    if not (root / ".dvc").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        Repo.init(str(root), no_scm=True)
    # What a dataset folder holds that is not the data (its run's facts, `datasets` cache files): left out, the
    # same config synthesized twice is one version (lws_core.data.card.UNVERSIONED; the project's .dvcignore too).
    from lws_core.data.card import UNVERSIONED

    ignore = root / ".dvcignore"
    have = ignore.read_text().split() if ignore.is_file() else []
    if missing := [p for p in UNVERSIONED if p not in have]:
        ignore.write_text("".join(f"{p}\n" for p in [*have, *missing]))
    repo = Repo(str(root))
    url = remote_url(cfg)
    with repo.config.edit() as conf:
        remote = {"url": url}
        if url.startswith("s3://") and cfg.registry.s3_endpoint_url:
            remote["endpointurl"] = cfg.registry.s3_endpoint_url
        conf["remote"][REMOTE] = remote
        conf["core"]["remote"] = REMOTE
        conf["core"]["autostage"] = False
    if not url.startswith(("s3://", "http://", "https://")):
        Path(url).mkdir(parents=True, exist_ok=True)
    return repo


def version_path(cfg, path: str | Path, kind: str) -> str:  # noqa: ANN001
    """Add a directory (dataset or model) to DVC, push it to the remote, return its hash."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"cannot version {path}: not a directory")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,40}", kind):
        raise InputError(f"--kind {kind!r}: use a short name such as dataset or model (a-z, 0-9, _ and -)")
    root = Workspace.from_config(cfg).dvc_repo
    with file_lock(root.parent / "dvc.lock"):
        repo = _repo(cfg)
        target = root / kind
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(path, target)
        repo.add([str(target)])
        dvcfile = root / f"{kind}.dvc"
        md5 = yaml.safe_load(dvcfile.read_text())["outs"][0]["md5"]
        url = remote_url(cfg)
        with_retries(lambda: repo.push(targets=[str(dvcfile)]), f"DVC push of {kind}", cfg.registry.s3_endpoint_url or url, attempts=3)
        repo.close()
    return md5


def version_dataset(cfg, path: str | Path) -> str:  # noqa: ANN001
    """Version a dataset directory; the returned DVC hash is what lineage records."""
    return version_path(cfg, path, "dataset")


def version_model(cfg, path: str | Path) -> str:  # noqa: ANN001
    """Version a model (checkpoint) directory; returns its DVC hash."""
    return version_path(cfg, path, "model")


def pull_version(cfg, md5: str, out_dir: str | Path) -> Path:  # noqa: ANN001
    """Fetch the directory with DVC hash ``md5`` from the remote into ``out_dir``."""
    if not md5.endswith(".dir") or len(md5) != 36:
        raise InputError(f"not a DVC directory hash: {md5!r} (expected 32 hex digits + '.dir')")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"output directory is not empty: {out_dir}")
    root = Workspace.from_config(cfg).dvc_repo
    with file_lock(root.parent / "dvc.lock"):
        repo = _repo(cfg)
        stem = md5[:-4]
        restore = root / "restore"
        restore.mkdir(exist_ok=True)
        dvcfile = restore / f"{stem}.dvc"
        dvcfile.write_text(yaml.safe_dump({"outs": [{"md5": md5, "path": stem, "hash": "md5"}]}))
        url = remote_url(cfg)
        def absent(e: BaseException) -> bool:  # the remote answered: no such object (retrying cannot help)
            return "missing" in str(e).lower() or "not found" in str(e).lower()

        try:
            with_retries(
                lambda: repo.pull(targets=[str(dvcfile)]), "DVC pull", cfg.registry.s3_endpoint_url or url,
                attempts=3, permanent=absent,
            )
        except Exception as e:
            if absent(e):
                raise InputError(f"version {md5} is not in the remote {url}") from None
            raise
        finally:
            repo.close()
        src = restore / stem
        if not src.is_dir():
            raise InputError(f"version {md5} could not be checked out from {url}")
        tmp = out_dir.parent / f".{out_dir.name}.pull-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(src, ignore_errors=True)
        dvcfile.unlink(missing_ok=True)
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    return out_dir
